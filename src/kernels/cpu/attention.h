// Causal multi-head attention over a KV cache (GQA), for prefill and decode.
#pragma once

#include <cstdint>

#include "core/aligned_buffer.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_features.h"

namespace bl::cpu {

struct AttentionShape {
  int n_head = 0;     // query heads
  int n_head_kv = 0;  // kv heads; n_head % n_head_kv == 0
  int head_dim = 0;
  float scale = 1.0f; // multiplies q·k, usually 1/sqrt(head_dim)
  int window = 0;     // > 0: the token at position p sees slots [p - window + 1, p] only
};

// out [head_dim, n_head, n] = softmax(scale · q kᵀ) v per head, for q [head_dim, n_head, n] F32
// over caches [head_dim, n_head_kv, n_ctx] (F32 or F16): token i sees slots [0, positions[i]],
// or with shape.window only the last `window` of them.
// A position >= n_ctx is treated as n_ctx - 1, a negative one gives a zero output (callers
// keep positions in range; this only keeps a bad one from reading outside the cache).
//
// Work is split into (token, kv head, slot chunk) spans taken dynamically by the pool's
// threads, longest first; the slots are split into chunks only when there are too few
// (token, kv head) pairs to keep every thread busy (decode). scratch holds the per-thread and
// per-chunk softmax states; it grows on first use and is reused after.
void attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache, const int32_t* positions,
               const AttentionShape& shape, Tensor& out, ThreadPool& pool, AlignedBuffer& scratch,
               Isa isa = active_isa());

}  // namespace bl::cpu
