#include "model/llama_config.h"

#include <cmath>
#include <numbers>

#include "io/model_file.h"

namespace bl {
namespace {

bool is_llama_family(const std::string& arch) { return arch == "llama" || arch == "qwen2" || arch == "mistral"; }

// Gemma 3's layer pattern and local rope base are not in its GGUF metadata: llama.cpp and HF
// transformers (Gemma3TextConfig: sliding_window_pattern 6, rope_local_base_freq 10000) fix them
// for every Gemma 3 size.
constexpr int kGemma3SlidingWindowPattern = 6;
constexpr float kGemma3RopeBaseLocal = 10000.0f;
// Gemma 3 27B scales q·k by 1 / sqrt(n_embd / n_head) (query_pre_attn_scalar 168) instead of
// 1 / sqrt(head_dim); llama.cpp tells it by its layer count, as here.
constexpr int kGemma3_27bLayers = 62;

// The Gemma 3 parts of c, whose Llama-family parts are read already.
Status read_gemma3_parts(const ModelFile& file, const std::string& p, LlamaConfig& c) {
  c.ffn_activation = FfnActivation::gelu_tanh;
  c.embd_scale = std::sqrt(static_cast<float>(c.n_embd));
  c.qk_norm = true;
  c.post_norms = true;
  c.rope_neox = true;
  int64_t v;
  BL_ASSIGN_OR_RETURN(v, file.get_int(p + "attention.sliding_window"));
  if (v <= 0 || v > (1 << 24)) return invalid_file("attention.sliding_window = " + std::to_string(v) + " is out of range");
  c.sliding_window = static_cast<int>(v);
  c.sliding_window_pattern = kGemma3SlidingWindowPattern;
  c.rope_freq_base_local = kGemma3RopeBaseLocal;
  if (c.n_layer == kGemma3_27bLayers) c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.n_embd / c.n_head));
  return Status::Ok();
}

Status check_positive(const char* what, int64_t v, int64_t max) {
  if (v <= 0 || v > max)
    return invalid_file(std::string(what) + " = " + std::to_string(v) + " is out of range (1.." + std::to_string(max) + ")");
  return Status::Ok();
}

}  // namespace

std::vector<float> llama3_rope_factors(int n_dims, float freq_base, float factor, float low_freq_factor,
                                       float high_freq_factor, float original_context) {
  const double low_freq_wavelen = original_context / low_freq_factor;
  const double high_freq_wavelen = original_context / high_freq_factor;
  std::vector<float> factors(static_cast<size_t>(n_dims / 2));
  for (int i = 0; i < n_dims / 2; ++i) {
    const double freq = std::pow(static_cast<double>(freq_base), -2.0 * i / n_dims);
    const double wavelen = 2 * std::numbers::pi / freq;
    if (wavelen < high_freq_wavelen) {
      factors[i] = 1.0f;
    } else if (wavelen > low_freq_wavelen) {
      factors[i] = factor;
    } else {
      const double smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      factors[i] = static_cast<float>(1.0 / ((1 - smooth) / factor + smooth));
    }
  }
  return factors;
}

Expected<LlamaConfig> read_llama_config(const ModelFile& file) {
  LlamaConfig c;
  BL_ASSIGN_OR_RETURN(c.arch, file.get_string("general.architecture"));
  if (!is_llama_family(c.arch) && c.arch != "gemma3")
    return unsupported("architecture '" + c.arch + "' is not supported (supported: llama, mistral, qwen2, gemma3)");
  const std::string p = c.arch + ".";
  constexpr int64_t kMaxDim = 1 << 20;

  int64_t v;
  BL_ASSIGN_OR_RETURN(v, file.get_int(p + "block_count"));
  BL_RETURN_IF_ERROR(check_positive("block_count", v, 4096));
  c.n_layer = static_cast<int>(v);
  BL_ASSIGN_OR_RETURN(v, file.get_int(p + "embedding_length"));
  BL_RETURN_IF_ERROR(check_positive("embedding_length", v, kMaxDim));
  c.n_embd = static_cast<int>(v);
  BL_ASSIGN_OR_RETURN(v, file.get_int(p + "feed_forward_length"));
  BL_RETURN_IF_ERROR(check_positive("feed_forward_length", v, kMaxDim));
  c.n_ff = static_cast<int>(v);
  BL_ASSIGN_OR_RETURN(v, file.get_int(p + "attention.head_count"));
  BL_RETURN_IF_ERROR(check_positive("attention.head_count", v, 4096));
  c.n_head = static_cast<int>(v);
  BL_ASSIGN_OR_RETURN(v, file.get_int_or(p + "attention.head_count_kv", c.n_head));
  BL_RETURN_IF_ERROR(check_positive("attention.head_count_kv", v, c.n_head));
  c.n_head_kv = static_cast<int>(v);
  if (c.n_head % c.n_head_kv != 0)
    return invalid_file("attention.head_count (" + std::to_string(c.n_head) + ") is not a multiple of head_count_kv (" +
                        std::to_string(c.n_head_kv) + ")");
  BL_ASSIGN_OR_RETURN(v, file.get_int_or(p + "context_length", 4096));
  BL_RETURN_IF_ERROR(check_positive("context_length", v, 1 << 24));
  c.n_ctx_train = static_cast<int>(v);

  // head_dim: attention.key_length when present (Mistral/Qwen variants), else n_embd / n_head.
  BL_ASSIGN_OR_RETURN(v, file.get_int_or(p + "attention.key_length", c.n_embd / c.n_head));
  BL_RETURN_IF_ERROR(check_positive("attention.key_length", v, 4096));
  c.head_dim = static_cast<int>(v);
  BL_ASSIGN_OR_RETURN(v, file.get_int_or(p + "rope.dimension_count", c.head_dim));
  BL_RETURN_IF_ERROR(check_positive("rope.dimension_count", v, c.head_dim));
  if (v % 2) return invalid_file("rope.dimension_count must be even, got " + std::to_string(v));
  c.rope_dims = static_cast<int>(v);

  double f;
  BL_ASSIGN_OR_RETURN(f, file.get_float(p + "attention.layer_norm_rms_epsilon"));
  if (!(f > 0 && f < 1)) return invalid_file("attention.layer_norm_rms_epsilon out of range: " + std::to_string(f));
  c.rms_eps = static_cast<float>(f);
  BL_ASSIGN_OR_RETURN(f, file.get_float_or(p + "rope.freq_base", 10000.0));
  if (!(f > 1)) return invalid_file("rope.freq_base out of range: " + std::to_string(f));
  c.rope_freq_base = static_cast<float>(f);

  std::string scaling_type;
  BL_ASSIGN_OR_RETURN(scaling_type, file.get_string_or(p + "rope.scaling.type", "none"));
  if (scaling_type == "linear") {
    BL_ASSIGN_OR_RETURN(f, file.get_float(p + "rope.scaling.factor"));
    if (!(f > 0)) return invalid_file("rope.scaling.factor must be positive");
    c.rope_freq_scale = static_cast<float>(1.0 / f);
  } else if (scaling_type == "llama3") {
    double factor, low, high, original;
    BL_ASSIGN_OR_RETURN(factor, file.get_float(p + "rope.scaling.factor"));
    BL_ASSIGN_OR_RETURN(low, file.get_float_or(p + "rope.scaling.low_freq_factor", 1.0));
    BL_ASSIGN_OR_RETURN(high, file.get_float_or(p + "rope.scaling.high_freq_factor", 4.0));
    BL_ASSIGN_OR_RETURN(original, file.get_float(p + "rope.scaling.original_context_length"));
    if (!(factor > 0 && high > low && original > 0)) return invalid_file("rope.scaling (llama3) parameters out of range");
    c.rope_freq_factors = llama3_rope_factors(c.rope_dims, c.rope_freq_base, static_cast<float>(factor),
                                              static_cast<float>(low), static_cast<float>(high), static_cast<float>(original));
  } else if (scaling_type != "none") {
    return unsupported("rope.scaling.type '" + scaling_type + "' is not supported (none, linear, llama3)");
  }

  // Qwen2 and HF-layout Llama checkpoints rotate halves; GGUF Llama rows are permuted for pairs.
  bool neox_flag;
  BL_ASSIGN_OR_RETURN(neox_flag, file.get_bool_or("bitlight.rope.neox", false));
  c.rope_neox = c.arch == "qwen2" || neox_flag;
  c.qkv_bias = c.arch == "qwen2";
  c.attn_scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  if (c.arch == "gemma3") BL_RETURN_IF_ERROR(read_gemma3_parts(file, p, c));

  // Vocabulary size: the key if present, else the tokenizer's token list.
  if (file.has(p + "vocab_size")) {
    BL_ASSIGN_OR_RETURN(v, file.get_int(p + "vocab_size"));
  } else {
    const GgufValue* tokens = file.find("tokenizer.ggml.tokens");
    if (!tokens) return invalid_file("neither " + p + "vocab_size nor tokenizer.ggml.tokens is present");
    std::vector<std::string> list;
    BL_ASSIGN_OR_RETURN(list, file.get_string_array("tokenizer.ggml.tokens"));
    v = static_cast<int64_t>(list.size());
  }
  BL_RETURN_IF_ERROR(check_positive("vocab_size", v, 1 << 24));
  c.n_vocab = static_cast<int>(v);
  return c;
}

}  // namespace bl
