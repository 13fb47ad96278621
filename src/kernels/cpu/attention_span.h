// The inner loop of CPU attention: a group of query heads that share one kv head, attending
// over a contiguous span of cache slots with an online (streaming) softmax.
//
// attention.cpp splits the work into spans (token × kv head × slot chunk) and merges the
// partial states of chunks; the ISA variants here do the arithmetic. The state after a span
// is (m, l, o) per head with
//   m = max score seen, l = Σ exp(score - m), o = Σ exp(score - m) · v   (o unnormalized),
// so two states combine exactly and the output is o / l.
#pragma once

#include <cstdint>

namespace bl::cpu {

struct AttentionSpan {
  const float* q = nullptr;   // [head_dim, n_heads]: the query heads that share this kv head
  const void* k = nullptr;    // cache slot 0 of this kv head: F32 or F16 elements
  const void* v = nullptr;
  bool f16 = false;           // cache element type: F16 when true, else F32
  int64_t slot_stride = 0;    // elements from one cache slot to the next (head_dim * n_head_kv)
  int64_t begin = 0, end = 0; // slots [begin, end)
  int n_heads = 0;
  int head_dim = 0;
  float scale = 1.0f;         // applied to q·k
  float* m = nullptr;         // [n_heads] running max of scaled scores; start at -inf
  float* l = nullptr;         // [n_heads] running Σ exp(score - m); start at 0
  float* o = nullptr;         // [head_dim, n_heads] running Σ exp(score - m) · v; start at 0
};

// A kv head's rows are head_dim elements every slot_stride (fp16, head_dim 64: 2 of the 16
// lines of a 1 KiB slot row), a stride the hardware prefetchers follow poorly, and a decode
// step reaches a layer's cache after a whole token of weights has streamed through the caches:
// without help each block of slots waits on DRAM latency. The ISA variants prefetch the k and v
// rows of the slots this far ahead (2 blocks of 16; 1 to 4 blocks measured alike; none: cold
// decode attention 1.2-1.8x slower in alternating runs of bench/attention_bench, a 1B bl2g128
// decode at ~1k slots 4-5 % slower).
inline constexpr int64_t kPrefetchSlotsAhead = 32;

// Prefetches the k and v rows of slots [first, min(last, span.end)) into L1. Defined out of line
// (attention.cpp): inlined into the ISA variants, GCC 12 at -O2/-O3 deleted the whole loop, as
// if a loop of prefetches had no effect.
void prefetch_span_rows(const AttentionSpan& s, int64_t first, int64_t last);

// Updates span.m, span.l, span.o with the slots of the span. Call an _avx2 / _avx512 variant
// only when the CPU has that ISA (cpu_features.h).
void attend_span_scalar(const AttentionSpan& span);
void attend_span_avx2(const AttentionSpan& span);
void attend_span_avx512(const AttentionSpan& span);

}  // namespace bl::cpu
