// Fused dequantize + matrix-vector product for decode (1..16 tokens), every weight format.
//
// out[r, t] = sum_k W[r, k] * x[k, t]. One warp owns kRows adjacent rows; lane l decodes the
// 32-element chunks l, l + 32, ... of each of its rows into registers (weight_decode.cuh) and
// multiplies them with the matching x chunk of every token, so each weight byte is read once
// from HBM for the whole batch. Partial sums are reduced across the warp with shuffles at the
// end (no shared memory, no block barrier).
//
// Napkin math (H100, ~3.0 TB/s read): 4096x4096 Q4_0 is 9.4 MB -> 3.1 us at the limit; the
// 8B lm_head 4096x128256 Q4_0 is 296 MB -> 99 us. x is re-read from L1 per warp: with two rows
// per warp that is 2 bytes of L1 traffic per weight (fp32 x), ~4x the 4-bit weight bytes,
// under the L1 limit (~30 TB/s chip-wide). At 16 tokens the fp32 FMAs (16 per weight, ~33 T
// FMA/s) cap 4-bit weights near 2e12 weights/s, ~40 % of the bandwidth: the tensor-core
// skinny GEMM is the next step for batched decode (docs/cuda.md).
#include <cuda_runtime.h>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/weight_decode.cuh"

namespace bl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kGemvThreads = 256;  // 8 warps per block
constexpr int kRowsPerWarp = 2;     // x chunk loaded once, used for both rows

struct GemvParams {
  const uint8_t* w;
  size_t row_bytes;
  int64_t rows;
  int64_t cols;
  const float* x;  // [cols, n]
  int n;
  float* out;      // [rows, n]
  const float* bias;
};

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// kTokens: compile-time upper bound of the batch (register arrays need constant sizes); the
// runtime p.n <= kTokens. kVec: 16-byte loads of x (and of plain-type weights) are legal.
template <DType T, int kTokens, bool kVec>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(GemvParams p) {
  static_assert(kGemvThreads % kWarp == 0, "whole warps per block");
  const int lane = threadIdx.x % kWarp;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * kGemvThreads + threadIdx.x) / kWarp;
  const int64_t row0 = warp * kRowsPerWarp;
  if (row0 >= p.rows) return;

  // Rows past the end read the last row again (a valid address) and are not stored.
  const uint8_t* rowp[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) rowp[r] = p.w + min(row0 + r, p.rows - 1) * p.row_bytes;

  float acc[kRowsPerWarp][kTokens];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int t = 0; t < kTokens; ++t) acc[r][t] = 0.0f;

  const int64_t n_chunks = p.cols / kChunk;
  for (int64_t c = lane; c < n_chunks; c += kWarp) {
    float w[kRowsPerWarp][kChunk];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) decode_chunk<T, kVec>(rowp[r], c, w[r]);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t >= p.n) break;
      const float* xc = p.x + t * p.cols + c * kChunk;
      if constexpr (kVec) {
#pragma unroll
        for (int i = 0; i < kChunk / 4; ++i) {
          const float4 xv = __ldg(reinterpret_cast<const float4*>(xc) + i);
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) {
            acc[r][t] = fmaf(w[r][4 * i], xv.x, acc[r][t]);
            acc[r][t] = fmaf(w[r][4 * i + 1], xv.y, acc[r][t]);
            acc[r][t] = fmaf(w[r][4 * i + 2], xv.z, acc[r][t]);
            acc[r][t] = fmaf(w[r][4 * i + 3], xv.w, acc[r][t]);
          }
        }
      } else {
#pragma unroll
        for (int i = 0; i < kChunk; ++i) {
          const float xv = __ldg(xc + i);
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r) acc[r][t] = fmaf(w[r][i], xv, acc[r][t]);
        }
      }
    }
  }
  // Row tails (cols % 32) exist only for the plain types; block formats have whole chunks.
  if constexpr (is_plain_type<T>()) {
    for (int64_t k = n_chunks * kChunk + lane; k < p.cols; k += kWarp) {
      float wk[kRowsPerWarp];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) wk[r] = Decoder<T>::element(rowp[r], k);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (t >= p.n) break;
        const float xv = p.x[t * p.cols + k];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) acc[r][t] = fmaf(wk[r], xv, acc[r][t]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t row = row0 + r;
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float s = warp_sum(acc[r][t]);
      if (lane == 0 && t < p.n && row < p.rows) p.out[t * p.rows + row] = s + (p.bias ? p.bias[row] : 0.0f);
    }
  }
}

template <DType T, int kTokens>
void launch_for_tokens(const GemvParams& p, bool vec, cudaStream_t stream) {
  const int64_t warps = (p.rows + kRowsPerWarp - 1) / kRowsPerWarp;
  const dim3 grid(static_cast<unsigned>((warps * kWarp + kGemvThreads - 1) / kGemvThreads));
  if (vec) {
    gemv_kernel<T, kTokens, true><<<grid, kGemvThreads, 0, stream>>>(p);
  } else {
    gemv_kernel<T, kTokens, false><<<grid, kGemvThreads, 0, stream>>>(p);
  }
}

}  // namespace

bool weight_format_supported(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_1: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: return true;
    default: return false;
  }
}

bool launch_gemv(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                 cudaStream_t stream) {
  const GemvParams p{static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, x, n_tokens, out, bias};
  // 16-byte loads need 16-byte aligned rows of weights and of x (block formats: cols % 32 == 0).
  const bool vec = w.row_bytes % 16 == 0 && w.cols % 4 == 0 &&
                   reinterpret_cast<uintptr_t>(w.data) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
  return dispatch_weight_format(w.dtype, [&]<DType T>() {
    if (n_tokens <= 1) launch_for_tokens<T, 1>(p, vec, stream);
    else if (n_tokens <= 2) launch_for_tokens<T, 2>(p, vec, stream);
    else if (n_tokens <= 4) launch_for_tokens<T, 4>(p, vec, stream);
    else if (n_tokens <= 8) launch_for_tokens<T, 8>(p, vec, stream);
    else launch_for_tokens<T, 16>(p, vec, stream);
  });
}

}  // namespace bl::cuda
