// Random-weight Llama-family and Gemma 3 GGUF files of named shapes (`bitlight synth`), for benchmarks
// and tests: speed does not depend on weight values, so a synthetic 8B model measures what a
// real one would, without a model hub. Never zeros: random data cannot hide unwritten outputs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "core/thread_pool.h"

namespace bl {

struct SynthShape {
  std::string name;
  int n_layer, n_embd, n_ff, n_head, n_head_kv, n_vocab, n_ctx;
  float rope_freq_base;
  bool tied_embeddings;
  std::string arch = "llama";  // or "gemma3": q/k norms, post-norms, GeGLU, sliding windows
  int head_dim = 0;            // 0: n_embd / n_head
  int sliding_window = 0;      // gemma3: attention.sliding_window
};

// tiny, smollm2-135m, llama3-1b, llama3-8b, gemma3-270m
const std::vector<SynthShape>& synth_shapes();
Expected<SynthShape> find_synth_shape(const std::string& name);

// Writes a GGUF with every matrix in `weight_type` (norms f32) and a byte-level tokenizer
// (the 256 byte tokens, then filler control tokens up to n_vocab; no merges).
Status write_synthetic_model(const SynthShape& shape, DType weight_type, uint64_t seed, const std::string& path,
                             ThreadPool& pool);

}  // namespace bl
