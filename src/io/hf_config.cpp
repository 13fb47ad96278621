#include "io/hf_config.h"

#include <cmath>

namespace bl {
namespace {

constexpr const char* kFile = "config.json";

// rope_scaling.rope_type == "llama3": per-frequency divisors, as llama.cpp's
// convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors) computes rope_freqs.weight.
std::vector<double> llama3_rope_factors(double theta, uint64_t head_dim, double factor, double low_freq_factor,
                                        double high_freq_factor, double old_context) {
  const double low_freq_wavelen = old_context / low_freq_factor;
  const double high_freq_wavelen = old_context / high_freq_factor;
  std::vector<double> out;
  for (uint64_t i = 0; i < head_dim; i += 2) {
    // Like the converter: frequencies in f32 (torch.arange(...)/dim then base ** x).
    float freq = 1.0f / std::pow(static_cast<float>(theta), static_cast<float>(i) / static_cast<float>(head_dim));
    double wavelen = 2 * M_PI / freq;
    if (wavelen < high_freq_wavelen) {
      out.push_back(1.0);
    } else if (wavelen > low_freq_wavelen) {
      out.push_back(factor);
    } else {
      double smooth = (old_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      out.push_back(1.0 / ((1 - smooth) / factor + smooth));
    }
  }
  return out;
}

Status rope_scaling(const Json& rs, const std::string& arch, double theta, uint64_t head_dim,
                    std::vector<GgufKeyValue>& md) {
  JsonFields f{rs, std::string(kFile) + " rope_scaling"};
  BL_ASSIGN_OR_RETURN(std::optional<std::string> type, f.opt_string("rope_type"));
  if (!type) {
    BL_ASSIGN_OR_RETURN(type, f.opt_string("type"));  // older configs
  }
  if (!type) return invalid_file("config.json: rope_scaling has no 'rope_type'");
  BL_ASSIGN_OR_RETURN(std::optional<double> factor, f.opt_number("factor"));
  BL_ASSIGN_OR_RETURN(std::optional<uint64_t> original, f.opt_uint("original_max_position_embeddings"));
  if (*type == "default") return Status::Ok();  // no scaling
  md.push_back({arch + ".rope.scaling.type", gguf_string(*type)});
  if (factor) md.push_back({arch + ".rope.scaling.factor", gguf_float(GgufType::f32, *factor)});
  if (original) md.push_back({arch + ".rope.scaling.original_context_length", gguf_int(GgufType::u32, static_cast<int64_t>(*original))});
  if (*type == "llama3") {
    BL_ASSIGN_OR_RETURN(std::optional<double> low, f.opt_number("low_freq_factor"));
    BL_ASSIGN_OR_RETURN(std::optional<double> high, f.opt_number("high_freq_factor"));
    double lo = low.value_or(1.0), hi = high.value_or(4.0);
    if (!(hi > lo) || !(lo > 0)) return invalid_file("config.json: rope_scaling needs 0 < low_freq_factor < high_freq_factor");
    auto factors = llama3_rope_factors(theta, head_dim, factor.value_or(8.0), lo, hi,
                                       static_cast<double>(original.value_or(8192)));
    md.push_back({"bitlight.rope_freqs", gguf_float_array(GgufType::f32, std::move(factors))});
  }
  return Status::Ok();
}

Expected<std::string> architecture(const Json& config) {
  std::string name;
  if (auto it = config.find("architectures"); it != config.end() && it->is_array() && !it->empty() &&
                                              (*it)[0].is_string()) {
    name = (*it)[0].get<std::string>();
  } else if (auto mt = config.find("model_type"); mt != config.end() && mt->is_string()) {
    name = mt->get<std::string>();
  }
  if (name == "LlamaForCausalLM" || name == "MistralForCausalLM" || name == "llama" || name == "mistral") return std::string("llama");
  if (name == "Qwen2ForCausalLM" || name == "qwen2") return std::string("qwen2");
  if (name.empty()) return invalid_file("config.json: no 'architectures' or 'model_type'");
  return unsupported("config.json: architecture '" + name +
                     "' is not supported (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM are)");
}

}  // namespace

Expected<HfConfig> translate_hf_config(const Json& config) {
  if (!config.is_object()) return invalid_file("config.json is not a JSON object");
  HfConfig out;
  BL_ASSIGN_OR_RETURN(out.arch, architecture(config));
  const std::string& a = out.arch;
  JsonFields f{config, kFile};
  BL_ASSIGN_OR_RETURN(uint64_t n_layer, f.uint("num_hidden_layers"));
  BL_ASSIGN_OR_RETURN(uint64_t n_embd, f.uint("hidden_size"));
  BL_ASSIGN_OR_RETURN(uint64_t n_ff, f.uint("intermediate_size"));
  BL_ASSIGN_OR_RETURN(uint64_t n_head, f.uint("num_attention_heads"));
  BL_ASSIGN_OR_RETURN(std::optional<uint64_t> n_head_kv, f.opt_uint("num_key_value_heads"));
  BL_ASSIGN_OR_RETURN(uint64_t n_ctx, f.uint("max_position_embeddings"));
  BL_ASSIGN_OR_RETURN(double eps, f.number("rms_norm_eps"));
  BL_ASSIGN_OR_RETURN(std::optional<double> theta, f.opt_number("rope_theta"));
  BL_ASSIGN_OR_RETURN(out.vocab_size, f.uint("vocab_size"));
  BL_ASSIGN_OR_RETURN(std::optional<uint64_t> head_dim_given, f.opt_uint("head_dim"));
  BL_ASSIGN_OR_RETURN(std::optional<bool> tie, f.opt_bool("tie_word_embeddings"));
  out.tie_word_embeddings = tie.value_or(false);

  // Bounds: every count must fit the u32 GGUF keys and be positive.
  for (auto [name, v] : {std::pair<const char*, uint64_t>{"num_hidden_layers", n_layer}, {"hidden_size", n_embd},
                         {"intermediate_size", n_ff}, {"num_attention_heads", n_head},
                         {"max_position_embeddings", n_ctx}, {"vocab_size", out.vocab_size}}) {
    if (v == 0 || v > UINT32_MAX) return invalid_file(std::string("config.json: '") + name + "' = " + std::to_string(v) + " is out of range");
  }
  uint64_t kv_heads = n_head_kv.value_or(n_head);
  if (kv_heads == 0 || n_head % kv_heads != 0)
    return invalid_file("config.json: num_attention_heads (" + std::to_string(n_head) +
                        ") is not a multiple of num_key_value_heads (" + std::to_string(kv_heads) + ")");
  if (!head_dim_given && n_embd % n_head != 0)
    return invalid_file("config.json: hidden_size " + std::to_string(n_embd) + " is not a multiple of num_attention_heads " +
                        std::to_string(n_head));
  uint64_t head_dim = head_dim_given.value_or(n_embd / n_head);
  if (head_dim == 0 || head_dim % 2 != 0 || head_dim > 65536)
    return invalid_file("config.json: head_dim " + std::to_string(head_dim) + " must be even and positive");
  if (!(eps > 0)) return invalid_file("config.json: rms_norm_eps must be positive");
  double rope_theta = theta.value_or(10000.0);

  auto u32 = [](uint64_t v) { return gguf_int(GgufType::u32, static_cast<int64_t>(v)); };
  auto& md = out.metadata;
  md.push_back({"general.architecture", gguf_string(a)});
  md.push_back({a + ".block_count", u32(n_layer)});
  md.push_back({a + ".context_length", u32(n_ctx)});
  md.push_back({a + ".embedding_length", u32(n_embd)});
  md.push_back({a + ".feed_forward_length", u32(n_ff)});
  md.push_back({a + ".attention.head_count", u32(n_head)});
  md.push_back({a + ".attention.head_count_kv", u32(kv_heads)});
  md.push_back({a + ".attention.layer_norm_rms_epsilon", gguf_float(GgufType::f32, eps)});
  md.push_back({a + ".rope.freq_base", gguf_float(GgufType::f32, rope_theta)});
  md.push_back({a + ".rope.dimension_count", u32(head_dim)});
  if (head_dim_given) {
    md.push_back({a + ".attention.key_length", u32(head_dim)});
    md.push_back({a + ".attention.value_length", u32(head_dim)});
  }
  md.push_back({a + ".vocab_size", u32(out.vocab_size)});
  if (const Json* rs = f.find("rope_scaling")) {
    if (!rs->is_object()) return invalid_file("config.json: rope_scaling should be an object");
    BL_RETURN_IF_ERROR(rope_scaling(*rs, a, rope_theta, head_dim, md));
  }
  md.push_back({"bitlight.rope.neox", gguf_bool(true)});
  md.push_back({"bitlight.tie_word_embeddings", gguf_bool(out.tie_word_embeddings)});
  return out;
}

}  // namespace bl
