#include "io/hf_tensor_names.h"

#include <array>
#include <utility>

namespace bl {
namespace {

constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kLayerParts = {{
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"},
    {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
    {"input_layernorm", "attn_norm"},
    {"post_attention_layernorm", "ffn_norm"},
}};

bool starts_with(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }

}  // namespace

std::optional<std::string> gguf_tensor_name(std::string_view hf) {
  if (hf == "model.embed_tokens.weight") return std::string("token_embd.weight");
  if (hf == "model.norm.weight") return std::string("output_norm.weight");
  if (hf == "lm_head.weight") return std::string("output.weight");
  constexpr std::string_view kLayers = "model.layers.";
  if (!starts_with(hf, kLayers)) return std::string(hf);
  std::string_view rest = hf.substr(kLayers.size());
  size_t digits = 0;
  while (digits < rest.size() && digits < 9 && rest[digits] >= '0' && rest[digits] <= '9') ++digits;
  if (digits == 0 || digits >= rest.size() || rest[digits] != '.') return std::string(hf);
  std::string_view layer = rest.substr(0, digits);
  std::string_view part = rest.substr(digits + 1);  // "self_attn.q_proj.weight"
  if (part == "self_attn.rotary_emb.inv_freq") return std::nullopt;
  for (const auto& [from, to] : kLayerParts) {
    if (starts_with(part, from) && part.size() > from.size() && part[from.size()] == '.') {
      std::string_view suffix = part.substr(from.size());  // ".weight" / ".bias"
      return "blk." + std::string(layer) + "." + std::string(to) + std::string(suffix);
    }
  }
  return std::string(hf);
}

}  // namespace bl
