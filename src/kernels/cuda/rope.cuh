// Rotary embedding pieces shared by the rope kernels (elementwise.cu: rope_kernel,
// rope_kv_store_kernel) and the rope inside decode attention (attention.cu): the angle of a pair,
// which dims a pair rotates, and a store into an f16 or f32 KV cache.
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

}  // namespace bl::cuda
