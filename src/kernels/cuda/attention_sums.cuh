// How a GEMV reads the x that a one-token split-KV attention left as sums (AttentionSums,
// launchers.h; docs/cuda.md "Eighteenth session"): x = num / den of each value's head, or for a
// head with overflowed splits the exact combine of the splits. Used by the dp4a GEMV
// (gemv_dp4a.cu, Prologue::attention) and the fp32 GEMV (gemv.cu).
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/launchers.h"

namespace bl::cuda {

// For a head with overflowed splits (rare: a split's max more than
// kAttentionSumsMaxExponent above the head's phi): the kN values at dims dim0.. of v (num on the
// way in) combined exactly. M = the largest overflowed max; num and den carry the other splits
// at exponent phi <= M - 60, so both are scaled by e^(phi - M) and each overflowed split's
// partial by e^(m_s - M). The overflow test is the attention kernel's, on the same floats.
template <int kN>
__device__ __forceinline__ void combine_overflowed_head(const AttentionSums& s, int head, int dim0, float den,
                                                     float* v) {
  const float phi = s.phi()[head];
  auto overflowed = [&](float m) { return m != -INFINITY && !(m - phi <= kAttentionSumsMaxExponent); };
  float top = -INFINITY;
  for (int sp = 0; sp < s.n_splits; ++sp) {
    const float m = s.partial_ml[2 * (sp * s.n_head + head)];
    if (overflowed(m)) top = fmaxf(top, m);
  }
  const float to_top = expf(phi - top);
  float total = den * to_top;
#pragma unroll
  for (int k = 0; k < kN; ++k) v[k] *= to_top;
  for (int sp = 0; sp < s.n_splits; ++sp) {
    const int64_t slot = sp * s.n_head + head;
    const float m = s.partial_ml[2 * slot];
    if (!overflowed(m)) continue;
    const float w = expf(m - top);
    total += s.partial_ml[2 * slot + 1] * w;
#pragma unroll
    for (int k = 0; k < kN; ++k) v[k] += s.partial_acc[slot * s.head_dim + dim0 + k] * w;
  }
#pragma unroll
  for (int k = 0; k < kN; ++k) v[k] = total > 0.0f ? v[k] / total : 0.0f;
}

// The kN values of x at columns c .. c + kN - 1 (c % kN == 0, head_dim % 8 == 0: one head), v
// holding num's on the way in: num / den, or the exact combine where the head has overflowed
// splits. kN 8: a piece of 8 consecutive values (the dp4a GEMV, the plain types); 4: each half of
// a piece whose halves lie apart (the block formats in the fp32 GEMV, gemv_pieces.cuh).
template <int kN = 8>
__device__ __forceinline__ void attention_values(const AttentionSums& s, int64_t c, float* v) {
  // 32-bit division (n_head * head_dim < 2^31): a 64-bit one is a long subroutine on the GPU,
  // paid once per 8 values, in the fp32 GEMV once per piece of its stream.
  const int col = static_cast<int>(c), head = col / s.head_dim;
  const float den = __ldg(s.den() + head);
  if (__ldg(s.overflowed() + head) != 0) {
    combine_overflowed_head<kN>(s, head, col - head * s.head_dim, den, v);
    return;
  }
  const float inv = den > 0.0f ? 1.0f / den : 0.0f;
#pragma unroll
  for (int k = 0; k < kN; ++k) v[k] *= inv;
}

}  // namespace bl::cuda
