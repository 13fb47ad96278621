// x of a decode GEMV quantized to int8 per 32 values in shared memory, for the two integer
// GEMVs that read it the same way: the block formats' (gemv_dp4a.cu) and bl<b>g<g>'s
// (gemv_bl.cu). Both run blocks of kThreads threads and hold, per token, xq [cols] int8 then
// XScale [cols / 32] (quantized_x_bytes), made by the block itself (with a norm, SwiGLU or
// attention-sums prologue) or copied from quantize_x_once_kernel's output (Prologue::staged).
//
// Numerics: x_k = d_b q_k + e_k with |e_k| <= d_b / 2, d_b = max|x_b| / 127 over its block b of
// 32; the kernels' integer dot products are exact and their scales apply in fp32 afterwards.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/attention_sums.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"  // cp_async_16
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/silu.cuh"

namespace bl::cuda::int8x {

constexpr int kWarp = 32;
constexpr int kThreads = 256;  // of every block that stages x with these functions
constexpr int kWarps = kThreads / kWarp;
constexpr int kXBlock = 32;  // x values per int8 scale

// x over one block of 32 values: x_k ~= d q_k; sum = sum of the q_k (for weight offsets/mins).
struct XScale {
  float d;
  int sum;
};

// The int8 step of a block of 32 from its max |x|: q_k = rn(x_k * inverse), x_k ~= d q_k. Blocks
// with max |x| under 1e-30 count as zeros (127 / amax would overflow for subnormals); poison is
// NaN where a value was NaN or inf (fmaxf drops NaN), so the block's scale makes its sums NaN.
// Shared by quantize_group and gemv_stage_next.cuh, which must write the same bytes.
__device__ __forceinline__ float int8_inverse_step(float amax) { return amax >= 1e-30f ? 127.0f / amax : 0.0f; }
__device__ __forceinline__ XScale x_scale_of(float amax, float poison, int sum) { return {amax / 127.0f + poison, sum}; }

// x [cols, n] (fp32) -> xq [n][cols] int8 and xs [n][cols / 32], by the whole block. Each
// thread takes groups of 8 consecutive values, so 4 neighbouring lanes share a block of 32;
// n * cols / 8 is a multiple of 32 (cols % 256 == 0), so whole warps take a group or none and
// the shuffles are safe. The loads of kQuantBatch groups are issued together: x comes from L2,
// and at 14336 columns one group per round trip was 7 serial L2 latencies per block.
constexpr int kQuantBatchPlain = 2;

__device__ __forceinline__ void quantize_group(const float4& a, const float4& b, int64_t i, int8_t* xq,
                                               XScale* xs) {
  const float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
  float amax = 0.0f, poison = 0.0f;  // poison: NaN if any value is NaN or inf (fmaxf drops NaN)
#pragma unroll
  for (int k = 0; k < 8; ++k) amax = fmaxf(amax, fabsf(v[k])), poison += v[k] * 0.0f;
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
  poison += __shfl_xor_sync(0xffffffffu, poison, 1);
  poison += __shfl_xor_sync(0xffffffffu, poison, 2);
  const float inv = int8_inverse_step(amax);
  uint32_t packed[2] = {0, 0};
  int sum = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const int q = __float2int_rn(v[k] * inv);  // |q| <= 127
    sum += q;
    packed[k / 4] |= (static_cast<uint32_t>(q) & 0xFF) << (8 * (k % 4));
  }
  *reinterpret_cast<uint2*>(xq + 8 * i) = make_uint2(packed[0], packed[1]);
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  sum += __shfl_xor_sync(0xffffffffu, sum, 2);
  if ((threadIdx.x & 3) == 0) xs[i / 4] = x_scale_of(amax, poison, sum);
}

// The prologue of a fused GEMV (GemvFusion) on one group of 8 values: x' = silu(x) * up, or
// x * norm (the 1 / rms factor of the norm is applied to the finished sums instead: the int8
// quantization per 32 is scale-invariant, so quantizing x * norm and scaling the dot product by
// 1 / rms gives what quantizing the normed x would).
__device__ __forceinline__ float4 silu_times(float4 g, float4 u) {
  return make_float4(silu(g.x) * u.x, silu(g.y) * u.y, silu(g.z) * u.z, silu(g.w) * u.w);
}
__device__ __forceinline__ float4 times(float4 a, float4 b) { return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w); }
__device__ __forceinline__ float squares(float4 a) { return a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w; }

// Which prologue a kernel instance runs (a template parameter: the plain kernel keeps the
// registers it had, which its double-buffered weights need). staged: x was quantized by
// quantize_x_once_kernel (with whatever prologue) and is copied as it is. attention: x is a
// split-KV attention's num / den (AttentionSums, one token).
enum class Prologue { none, norm, gate, staged, attention };

// sumsq[t]: this thread's share of sum x^2 over token t's x (with a norm prologue; else 0).
// With a prologue one group is loaded at a time: its second operand needs the registers.
template <int kTokens, Prologue kPro>
__device__ __forceinline__ void quantize_x(const GemvArgs& p, int8_t* xq, XScale* xs, float (&sumsq)[kTokens]) {
  constexpr int kQuantBatch = kPro == Prologue::none ? kQuantBatchPlain : 1;
  const int64_t groups = p.n * p.cols / 8, groups_per_token = p.cols / 8;
  const float4* x4 = reinterpret_cast<const float4*>(p.x);
  const float4* u4 = kPro == Prologue::gate ? reinterpret_cast<const float4*>(p.fuse.up) : nullptr;
  const float4* g4 = kPro == Prologue::norm ? reinterpret_cast<const float4*>(p.fuse.norm) : nullptr;
  for (int64_t i0 = threadIdx.x; i0 < groups; i0 += kThreads * kQuantBatch) {
    float4 a[kQuantBatch], b[kQuantBatch], c[kQuantBatch], d[kQuantBatch];  // x and up or norm
#pragma unroll
    for (int k = 0; k < kQuantBatch; ++k) {
      const int64_t i = i0 + k * kThreads;
      if (i >= groups) continue;
      a[k] = __ldg(x4 + 2 * i), b[k] = __ldg(x4 + 2 * i + 1);
      if constexpr (kPro == Prologue::gate) c[k] = __ldg(u4 + 2 * i), d[k] = __ldg(u4 + 2 * i + 1);
      if constexpr (kPro == Prologue::norm) {
        const int64_t j = i % groups_per_token;
        c[k] = __ldg(g4 + 2 * j), d[k] = __ldg(g4 + 2 * j + 1);
      }
    }
#pragma unroll
    for (int k = 0; k < kQuantBatch; ++k) {
      const int64_t i = i0 + k * kThreads;
      if (i >= groups) continue;
      if constexpr (kPro == Prologue::gate) {
        a[k] = silu_times(a[k], c[k]), b[k] = silu_times(b[k], d[k]);
      } else if constexpr (kPro == Prologue::norm) {
        const int64_t t = i / groups_per_token;
        const float sq = squares(a[k]) + squares(b[k]);
#pragma unroll
        for (int tt = 0; tt < kTokens; ++tt)
          if (tt == t) sumsq[tt] += sq;
        a[k] = times(a[k], c[k]), b[k] = times(b[k], d[k]);
      }
      quantize_group(a[k], b[k], i, xq, xs);
    }
  }
}

// Prologue::attention: x = num / den of each value's head, quantized as quantize_x does (groups
// of 8 values, head_dim % 8 == 0, so a group lies in one head). den is 0 only when the token saw
// no slot (its output is then 0, as the combine kernel's). Heads with overflowed splits (rare)
// are done again in a second pass with the exact combine, by each warp that met one, kept out of
// the first so that its registers stay those of the plain prologue (the weights in flight hold
// most of them).
__device__ __forceinline__ void quantize_attention_x(const AttentionSums& s, int8_t* xq, XScale* xs) {
  const int64_t groups = static_cast<int64_t>(s.n_head) * s.head_dim / 8;
  const float4* num4 = reinterpret_cast<const float4*>(s.num());
  bool any_overflowed = false;
  for (int64_t i0 = threadIdx.x; i0 < groups; i0 += kThreads * kQuantBatchPlain) {
    float4 a[kQuantBatchPlain], b[kQuantBatchPlain];
    float den[kQuantBatchPlain];
#pragma unroll
    for (int k = 0; k < kQuantBatchPlain; ++k) {
      const int64_t i = i0 + k * kThreads;
      if (i >= groups) continue;
      const int head = static_cast<int>(8 * i) / s.head_dim;  // 32-bit (attention_values)
      a[k] = __ldg(num4 + 2 * i), b[k] = __ldg(num4 + 2 * i + 1);
      den[k] = __ldg(s.den() + head);
      any_overflowed = any_overflowed || __ldg(s.overflowed() + head) != 0;
    }
#pragma unroll
    for (int k = 0; k < kQuantBatchPlain; ++k) {
      const int64_t i = i0 + k * kThreads;
      if (i >= groups) continue;
      const float inv = den[k] > 0.0f ? 1.0f / den[k] : 0.0f;
      a[k] = make_float4(a[k].x * inv, a[k].y * inv, a[k].z * inv, a[k].w * inv);
      b[k] = make_float4(b[k].x * inv, b[k].y * inv, b[k].z * inv, b[k].w * inv);
      quantize_group(a[k], b[k], i, xq, xs);
    }
  }
  // A warp's lanes run the same count of groups (groups % 32 == 0), so the warp decides.
  if (!__any_sync(0xffffffffu, any_overflowed)) return;
  // Each thread redoes the groups it did (same i, so its own writes are the ones replaced), all
  // of them: quantize_group's shuffles need every lane of a block of 32.
  for (int64_t i = threadIdx.x; i < groups; i += kThreads) {
    const float4 a = __ldg(num4 + 2 * i), b = __ldg(num4 + 2 * i + 1);
    float v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    attention_values<8>(s, 8 * i, v);  // the first pass's num / den where no split overflowed
    quantize_group(make_float4(v[0], v[1], v[2], v[3]), make_float4(v[4], v[5], v[6], v[7]), i, xq, xs);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Bytes of one token's quantized x: int8 [cols] then XScale [cols / 32] (20 x 16 bytes per 256
// columns), in shared memory and in quantize_x_once_kernel's output alike.
__host__ __device__ constexpr int64_t quantized_x_bytes(int64_t cols) {
  return cols + cols / kXBlock * static_cast<int64_t>(sizeof(XScale));
}

// Blocks of quantize_x_once_kernel (gemv_dp4a.cu) for one token of cols values: one per 2048
// (a group of 8 a thread); each leaves one partial sum of x^2 after the quantized bytes.
__host__ __device__ constexpr int64_t quantize_once_blocks(int64_t cols) { return (cols / 8 + kThreads - 1) / kThreads; }
// Most partial sums of x^2 a staged norm reads: quantize_x_once_kernel leaves cols / 2048 of
// them, a GEMV that stages the next one's x (StageNext) one per 32 rows; stage_x's warps load
// kMaxStagedPartials / 32 a lane.
constexpr int kMaxStagedPartials = 128;
// Whether a GEMV with Prologue::staged can take x quantized once at cols columns (up to 16
// partial sums, as before the StageNext ones); the dp4a and bl launchers both ask this.
constexpr int kMaxNormPartials = 16;
__host__ __device__ constexpr bool quantize_once_fits(int64_t cols) { return quantize_once_blocks(cols) <= kMaxNormPartials; }
// Bytes of quantize_x_once_kernel's output for one token: the quantized x, then its blocks'
// partial sums of x^2 (the scratch the x-quantized-once launchers need).
__host__ __device__ constexpr int64_t quantized_x_once_bytes(int64_t cols) {
  return quantized_x_bytes(cols) + quantize_once_blocks(cols) * static_cast<int64_t>(sizeof(float));
}

// Prologue::staged: one token's quantized x copied to shared memory by cp.async (16 bytes
// each, all in flight at once, no registers held: the two weight buffers already in flight
// keep theirs; 14336 columns = 17920 bytes, 4.4 copies per thread). Read through L2 (written
// by the kernel before).
__device__ __forceinline__ void copy_quantized_x(const GemvArgs& p, uint8_t* smem) {
  const int64_t n16 = quantized_x_bytes(p.cols) / 16;
  const uint4* src = reinterpret_cast<const uint4*>(p.x_staged);
  uint4* dst = reinterpret_cast<uint4*>(smem);
  for (int64_t i = threadIdx.x; i < n16; i += kThreads) cp_async_16(dst + i, src + i, 16);
  cp_async_commit();
}
// The whole staging of a kernel's x, between its pdl_wait() and its first use of x: the kPro
// prologue into xq [n][cols] / xs [n][cols / 32] at smem, then a barrier, then
// pdl_allow_next(); out_scale[t] = what token t's finished sums are multiplied by (1 / rms with a
// norm prologue, or staged with the quantizing kernel's partial sums of x^2; else 1).
template <int kTokens, Prologue kPro>
__device__ __forceinline__ void stage_x(const GemvArgs& p, uint8_t* smem, float (&out_scale)[kTokens]) {
  int8_t* xq = reinterpret_cast<int8_t*>(smem);                 // [n][cols]
  XScale* xs = reinterpret_cast<XScale*>(smem + p.n * p.cols);  // [n][cols / 32]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  float sumsq[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) sumsq[t] = 0.0f;
  // Staged: the norm's partial sums are loaded alongside the copy (one round trip for both),
  // lane l taking partials l, l + 32, ..; every warp then adds them in the same order.
  constexpr int kPartialsPerLane = kPro == Prologue::staged ? kMaxStagedPartials / kWarp : 1;
  float partials[kPartialsPerLane];
  if constexpr (kPro == Prologue::staged) {
#pragma unroll
    for (int k = 0; k < kPartialsPerLane; ++k) {
      const int b = lane + k * kWarp;
      partials[k] = b < p.n_partials ? __ldcg(p.sumsq_partials + b) : 0.0f;
    }
    copy_quantized_x(p, smem);
    cp_async_wait<0>();
  } else if constexpr (kPro == Prologue::attention) {
    quantize_attention_x(p.attention, xq, xs);
  } else {
    quantize_x<kTokens, kPro>(p, xq, xs, sumsq);
  }
  // With a norm prologue, each token's 1 / rms: warp sums, then every thread adds the 8 warps'
  // in the same order (deterministic, no second barrier).
  constexpr bool kNorm = kPro == Prologue::norm;
  __shared__ float warp_sumsq[kWarps][kTokens];
  if constexpr (kNorm) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const float s = warp_sum(sumsq[t]);
      if (lane == 0) warp_sumsq[warp][t] = s;
    }
  }
  __syncthreads();
  pdl_allow_next();
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    float total = 0.0f;
    if constexpr (kNorm) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total += warp_sumsq[w][t];
    } else if constexpr (kPro == Prologue::staged) {
#pragma unroll
      for (int k = 0; k < kPartialsPerLane; ++k) total += partials[k];  // zeros past n_partials
      total = warp_sum(total);
    }
    const bool norm = kNorm || (kPro == Prologue::staged && p.n_partials > 0);
    out_scale[t] = norm ? rsqrtf(total / static_cast<float>(p.cols) + p.fuse.eps) : 1.0f;
  }
}

}  // namespace bl::cuda::int8x
