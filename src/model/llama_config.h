// Hyper-parameters of the Llama family (Llama 2/3, Mistral, Qwen2, SmolLM2), read from model
// metadata in GGUF key conventions. Nothing is guessed from tensor sizes: a missing required
// key is an error naming it.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace bl {

class ModelFile;

struct LlamaConfig {
  std::string arch;  // general.architecture: "llama" (incl. Mistral, SmolLM2) or "qwen2"
  int n_layer = 0;
  int n_embd = 0;     // model width d
  int n_ff = 0;       // feed-forward width
  int n_head = 0;
  int n_head_kv = 0;  // < n_head: grouped-query attention
  int head_dim = 0;   // usually n_embd / n_head
  int n_vocab = 0;
  int n_ctx_train = 0;
  float rms_eps = 1e-5f;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;
  int rope_dims = 0;       // rotated dims per head
  bool rope_neox = false;  // pairs (i, i + n/2) instead of (2i, 2i+1)
  // Llama 3 frequency divisors, one per rotated pair (empty when the model has none).
  std::vector<float> rope_freq_factors;
  bool qkv_bias = false;   // Qwen2

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
};

Expected<LlamaConfig> read_llama_config(const ModelFile& file);

// Llama 3 "rope_scaling": per-pair divisors of the rotary frequencies (HF's
// _compute_llama3_parameters), for n_dims rotated dims.
std::vector<float> llama3_rope_factors(int n_dims, float freq_base, float factor, float low_freq_factor,
                                       float high_freq_factor, float original_context);

}  // namespace bl
