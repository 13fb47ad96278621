// Rotary embedding pieces shared by the rope kernels (elementwise.cu: rope_kernel,
// rope_kv_store_kernel), the rope inside decode attention (attention.cu) and the QKV GEMVs' rope
// epilogue: the angle of a pair, which dims a pair rotates, and a store into an f16 or f32 KV
// cache.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/launchers.h"

namespace bl::cuda {

// cos and sin of pair i at position pos: theta = pos * freq_scale * freq_base^(-2i / n_dims) /
// freq_factors[i] (ggml's rope without YaRN), in fp64: at position 600 an fp32 theta is already
// ~1e-4 rad off.
__device__ __forceinline__ void rope_cos_sin(double pos, int64_t i, const RopeLaunch& p, float& cs, float& sn) {
  double theta = pos * p.freq_scale * pow(static_cast<double>(p.freq_base), -2.0 * static_cast<double>(i) / p.n_dims);
  if (p.freq_factors) theta /= p.freq_factors[i];
  double sd, cd;
  sincos(theta, &sd, &cd);
  cs = static_cast<float>(cd);
  sn = static_cast<float>(sd);
}

// The dims pair i of half = n_dims / 2 rotates: (i, i + half) neox style, else (2i, 2i + 1).
// (Index type I as the caller's: int or int64_t.)
template <typename I>
__device__ __forceinline__ I rope_first(I i, bool neox) {
  return neox ? i : 2 * i;
}
template <typename I>
__device__ __forceinline__ I rope_second(I i, I half, bool neox) {
  return neox ? i + half : 2 * i + 1;
}

// Element i of an f16 (kF16) or f32 KV cache.
template <bool kF16>
__device__ __forceinline__ void put_cache(void* cache, int64_t i, float v) {
  if constexpr (kF16)
    static_cast<__half*>(cache)[i] = __float2half_rn(v);
  else
    static_cast<float*>(cache)[i] = v;
}

// The rope epilogue of a QKV GEMV (GemvRopeStore; gemv_dp4a.cu, gemv.cu, gemv_bl.cu): whether the
// finished row pair at row0 (even) is rotated (it lies in q or k and within n_dims), and which
// pair of its head it is (the index of its angle: rope_cos_sin's i).
__device__ __forceinline__ bool rope_pair_rotates(const GemvRopeStore& e, int64_t row0) {
  return row0 < e.q_rows + e.kv_rows && row0 % e.rope.head_dim < e.rope.n_dims;
}
__device__ __forceinline__ int64_t rope_pair_index(const GemvRopeStore& e, int64_t row0) {
  return row0 % e.rope.head_dim / 2;
}

// The rope epilogue's (cos, sin) of every pair of a head at positions[0] into angles[n_dims / 2],
// one pair a thread of the block: called before the wait (the positions come from the host before
// the step's first kernel), so the fp64 pow and sincos overlap the weight loads; read after a
// block barrier.
__device__ __forceinline__ void rope_angles(const GemvRopeStore& e, float2* angles) {
  for (int i = threadIdx.x; i < e.rope.n_dims / 2; i += blockDim.x) {
    float cs, sn;
    rope_cos_sin(static_cast<double>(e.positions[0]), i, e.rope, cs, sn);
    angles[i] = make_float2(cs, sn);
  }
}

// The epilogue's store of one finished row pair (row0 even; v0, v1 its values with bias; angle
// = (cos, sin) of its pair, read only where rope_pair_rotates): rotated as the attention's own
// rope does it (x0 cs - x1 sn, x0 sn + x1 cs), stored (or added) to out, and the k (rotated) and
// v rows also into the caches at slot positions[0]. One thread a pair.
__device__ __forceinline__ void store_rope_pair(const GemvRopeStore& e, float* out, bool accumulate, float2 angle,
                                                int64_t row0, float v0, float v1) {
  if (rope_pair_rotates(e, row0)) {
    const float x0 = v0, x1 = v1;
    v0 = x0 * angle.x - x1 * angle.y;
    v1 = x0 * angle.y + x1 * angle.x;
  }
  float* o = out + row0;
  o[0] = accumulate ? o[0] + v0 : v0;
  o[1] = accumulate ? o[1] + v1 : v1;
  const int64_t pos = e.positions[0];
  if (row0 < e.q_rows || pos < 0 || pos >= e.n_ctx) return;
  const bool is_k = row0 < e.q_rows + e.kv_rows;
  void* cache = is_k ? e.k_cache : e.v_cache;
  const int64_t at = pos * e.kv_rows + (row0 - e.q_rows - (is_k ? 0 : e.kv_rows));
  if (e.cache_f16) {
    put_cache<true>(cache, at, v0);
    put_cache<true>(cache, at + 1, v1);
  } else {
    put_cache<false>(cache, at, v0);
    put_cache<false>(cache, at + 1, v1);
  }
}

}  // namespace bl::cuda
