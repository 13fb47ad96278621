// Hyper-parameters of the Llama family (Llama 2/3, Mistral, Qwen2, SmolLM2) and of Gemma 3,
// read from model metadata in GGUF key conventions. Nothing is guessed from tensor sizes: a
// missing required key is an error naming it.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace bl {

class ModelFile;

// The gate's activation in the feed-forward block: SwiGLU (Llama) or GeGLU with GELU's tanh
// approximation (Gemma).
enum class FfnActivation { silu, gelu_tanh };

struct LlamaConfig {
  std::string arch;  // general.architecture: "llama" (incl. Mistral, SmolLM2), "qwen2" or "gemma3"
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
  float attn_scale = 0;    // multiplies q·k: 1 / sqrt(head_dim), Gemma 3 27B excepted

  // Gemma 3 (everything off for the Llama family): a GeGLU feed-forward, an RMSNorm of each q
  // and k head before the rope (attn_q_norm / attn_k_norm), an RMSNorm of the attention's and
  // the feed-forward's outputs before they join the residual stream (post_attention_norm /
  // post_ffw_norm), embeddings scaled by sqrt(n_embd), and sliding-window attention with a rope
  // base of its own on every layer but each sliding_window_pattern-th (5 local, 1 global).
  FfnActivation ffn_activation = FfnActivation::silu;
  float embd_scale = 1.0f;
  bool qk_norm = false;
  bool post_norms = false;
  int sliding_window = 0;          // slots a local layer's token sees; 0 = no local layers
  int sliding_window_pattern = 0;  // layer il is global when (il + 1) % pattern == 0
  float rope_freq_base_local = 10000.0f;  // local layers' rope base (no scaling there)

  int q_dim() const { return n_head * head_dim; }
  int kv_dim() const { return n_head_kv * head_dim; }
  bool is_local_layer(int il) const {
    return sliding_window > 0 && sliding_window_pattern > 0 && (il + 1) % sliding_window_pattern != 0;
  }
};

Expected<LlamaConfig> read_llama_config(const ModelFile& file);

// Llama 3 "rope_scaling": per-pair divisors of the rotary frequencies (HF's
// _compute_llama3_parameters), for n_dims rotated dims.
std::vector<float> llama3_rope_factors(int n_dims, float freq_base, float factor, float low_freq_factor,
                                       float high_freq_factor, float original_context);

}  // namespace bl
