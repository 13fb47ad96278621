// The activation operand of a prefill GEMM, made in one pass: the fp32 residual stream (or the
// gate and up projections) read once, fp16 (bf16 for BF16 weights) written once, with the
// RMSNorm or SwiGLU that precedes the matmul applied on the way.
//
// Why: cuBLAS multiplies fp16 operands, and before this the prefill ran rms_norm (fp32 out),
// then a conversion, per matmul: at 2048 tokens of the 8B shape (H100) 22 + 24 us for each of
// q, k, v, gate and up, 156 + 85 us for SwiGLU of the down projection, all at ~2.5 TB/s. One
// pass moves 6 of those 10 bytes per element (x or gate + up in, 2 out): ~16 us for [4096,
// 2048], ~100 us for the SwiGLU's 2 x [14336, 2048].
#include <cuda_runtime.h>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/silu.cuh"
#include "kernels/cuda/weight_decode.cuh"

namespace bl::cuda {
namespace {

constexpr int kThreads = 256;

template <bool kBf16>
__device__ __forceinline__ uint2 to_half4(float a, float b, float c, float d) {
  return make_uint2(to_half_bits<kBf16>(a) | (static_cast<uint32_t>(to_half_bits<kBf16>(b)) << 16),
                    to_half_bits<kBf16>(c) | (static_cast<uint32_t>(to_half_bits<kBf16>(d)) << 16));
}

__device__ __forceinline__ float silu_times(float g, float u) { return silu(g) * u; }

// One block per token, d % 4 == 0 and 16-byte aligned rows (the launcher checks): the sum of
// squares as rms_norm_kernel computes it (elementwise.cu), then dst = x * scale * weight.
template <bool kBf16>
__global__ void __launch_bounds__(kThreads)
    rms_norm_half_kernel(const float* x, const float* weight, float eps, int64_t d, uint16_t* dst) {
  pdl_start();
  const float4* x4 = reinterpret_cast<const float4*>(x + blockIdx.x * d);
  float sum = 0.0f;
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < d / 4; i += kThreads) {
    const float4 v = x4[i];
    sum += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  }
  const float scale = rsqrtf(block_sum<kThreads>(sum) / static_cast<float>(d) + eps);
  const float4* w4 = reinterpret_cast<const float4*>(weight);
  uint2* o = reinterpret_cast<uint2*>(dst + blockIdx.x * d);
#pragma unroll 4
  for (int64_t i = threadIdx.x; i < d / 4; i += kThreads) {
    const float4 v = x4[i], w = w4[i];
    o[i] = to_half4<kBf16>(v.x * scale * w.x, v.y * scale * w.y, v.z * scale * w.z, v.w * scale * w.w);
  }
}

// 4 elements per thread (n % 4 == 0, 16-byte aligned): dst = silu(gate) * up, or src with up null.
template <bool kBf16, bool kSwiGlu>
__global__ void __launch_bounds__(kThreads)
    to_half_kernel(const float* src, const float* up, int64_t n4, uint16_t* dst) {
  pdl_start();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n4) return;
  float4 v = reinterpret_cast<const float4*>(src)[i];
  if constexpr (kSwiGlu) {
    const float4 u = reinterpret_cast<const float4*>(up)[i];
    v = make_float4(silu_times(v.x, u.x), silu_times(v.y, u.y), silu_times(v.z, u.z), silu_times(v.w, u.w));
  }
  reinterpret_cast<uint2*>(dst)[i] = to_half4<kBf16>(v.x, v.y, v.z, v.w);
}

// Any n and alignment: one element per thread.
template <bool kBf16, bool kSwiGlu>
__global__ void __launch_bounds__(kThreads)
    to_half_scalar_kernel(const float* src, const float* up, int64_t n, uint16_t* dst) {
  pdl_start();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n) return;
  float v = src[i];
  if constexpr (kSwiGlu) v = silu_times(v, up[i]);
  dst[i] = to_half_bits<kBf16>(v);
}

// dst = silu(gate) * up on fp16 (bf16) gate and up, as the fp32 kernels compute it after
// widening: 8 elements per thread (uint4 loads), or one with kScalar for any n and alignment.
template <bool kBf16, bool kScalar>
__global__ void __launch_bounds__(kThreads)
    silu_mul_halves_kernel(const uint16_t* gate, const uint16_t* up, int64_t n_units, uint16_t* dst) {
  pdl_start();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= n_units) return;
  if constexpr (kScalar) {
    dst[i] = to_half_bits<kBf16>(silu_times(from_half_bits<kBf16>(gate[i]), from_half_bits<kBf16>(up[i])));
  } else {
    const uint4 g = reinterpret_cast<const uint4*>(gate)[i], u = reinterpret_cast<const uint4*>(up)[i];
    const uint32_t gw[4] = {g.x, g.y, g.z, g.w}, uw[4] = {u.x, u.y, u.z, u.w};
    uint32_t out[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float lo = silu_times(from_half_bits<kBf16>(gw[j] & 0xFFFF), from_half_bits<kBf16>(uw[j] & 0xFFFF));
      const float hi = silu_times(from_half_bits<kBf16>(gw[j] >> 16), from_half_bits<kBf16>(uw[j] >> 16));
      out[j] = to_half_bits<kBf16>(lo) | (static_cast<uint32_t>(to_half_bits<kBf16>(hi)) << 16);
    }
    reinterpret_cast<uint4*>(dst)[i] = make_uint4(out[0], out[1], out[2], out[3]);
  }
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <bool kSwiGlu>
void launch_to_half(const float* src, const float* up, int64_t n, uint16_t* dst, bool to_bf16,
                    cudaStream_t stream) {
  if (n <= 0) return;
  if (n % 4 == 0 && aligned16(src) && (!up || aligned16(up)) && reinterpret_cast<uintptr_t>(dst) % 8 == 0) {
    const auto k = to_bf16 ? to_half_kernel<true, kSwiGlu> : to_half_kernel<false, kSwiGlu>;
    launch_pdl(k, dim3(blocks_for(n / 4)), dim3(kThreads), 0, stream, src, up, n / 4, dst);
  } else {
    const auto k = to_bf16 ? to_half_scalar_kernel<true, kSwiGlu> : to_half_scalar_kernel<false, kSwiGlu>;
    launch_pdl(k, dim3(blocks_for(n)), dim3(kThreads), 0, stream, src, up, n, dst);
  }
}

}  // namespace

void launch_f32_to_half(const float* src, uint16_t* dst, int64_t n, bool to_bf16, cudaStream_t stream) {
  launch_to_half<false>(src, nullptr, n, dst, to_bf16, stream);
}

void launch_silu_mul_to_half(const float* gate, const float* up, int64_t n, uint16_t* dst, bool to_bf16,
                             cudaStream_t stream) {
  launch_to_half<true>(gate, up, n, dst, to_bf16, stream);
}

void launch_silu_mul_halves(const uint16_t* gate, const uint16_t* up, int64_t n, uint16_t* dst, bool bf16,
                            cudaStream_t stream) {
  if (n <= 0) return;
  if (n % 8 == 0 && aligned16(gate) && aligned16(up) && aligned16(dst)) {
    const auto k = bf16 ? silu_mul_halves_kernel<true, false> : silu_mul_halves_kernel<false, false>;
    launch_pdl(k, dim3(blocks_for(n / 8)), dim3(kThreads), 0, stream, gate, up, n / 8, dst);
  } else {
    const auto k = bf16 ? silu_mul_halves_kernel<true, true> : silu_mul_halves_kernel<false, true>;
    launch_pdl(k, dim3(blocks_for(n)), dim3(kThreads), 0, stream, gate, up, n, dst);
  }
}

bool launch_rms_norm_to_half(const float* x, const float* weight, float eps, int64_t d, int64_t n_tokens,
                             uint16_t* dst, bool to_bf16, cudaStream_t stream) {
  if (d % 4 != 0 || !aligned16(x) || !aligned16(weight) || reinterpret_cast<uintptr_t>(dst) % 8 != 0)
    return false;
  if (n_tokens <= 0) return true;
  const auto k = to_bf16 ? rms_norm_half_kernel<true> : rms_norm_half_kernel<false>;
  launch_pdl(k, dim3(static_cast<unsigned>(n_tokens)), dim3(kThreads), 0, stream, x, weight, eps, d, dst);
  return true;
}

}  // namespace bl::cuda
