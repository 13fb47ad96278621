// config.json of a Hugging Face causal LM -> the GGUF hyper-parameter keys llama.cpp's
// converter writes, for LlamaForCausalLM / MistralForCausalLM (architecture "llama") and
// Qwen2ForCausalLM ("qwen2"):
//   general.architecture, <arch>.block_count, .context_length, .embedding_length,
//   .feed_forward_length, .attention.head_count, .attention.head_count_kv,
//   .attention.layer_norm_rms_epsilon, .rope.freq_base, .rope.dimension_count (head_dim),
//   .attention.key_length / .value_length (when config.json gives head_dim), .vocab_size,
//   .rope.scaling.{type,factor,original_context_length} (from rope_scaling).
// bitlight's own keys (not written by llama.cpp; model code reads them when present):
//   bitlight.rope.neox (bool, true): HF checkpoints keep q/k in rotate-half order (llama.cpp's
//     converter permutes them for interleaved rope; we do not), so rope must be neox-style.
//   bitlight.rope_freqs (f32[head_dim/2]): for rope_scaling type "llama3", the divisor of each
//     rotary frequency, computed as llama.cpp's converter computes its rope_freqs.weight tensor.
//   bitlight.tie_word_embeddings (bool): config.json's tie_word_embeddings (then there is no
//     output.weight and the model uses token_embd.weight).
#pragma once

#include <string>
#include <vector>

#include "core/status.h"
#include "io/gguf_value.h"
#include "io/json_file.h"

namespace bl {

struct HfConfig {
  std::string arch;  // "llama" | "qwen2"
  uint64_t vocab_size = 0;
  bool tie_word_embeddings = false;
  std::vector<GgufKeyValue> metadata;
};

Expected<HfConfig> translate_hf_config(const Json& config);

}  // namespace bl
