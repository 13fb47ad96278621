// Integer GEMV for decode (1..4 tokens), block formats: out[r, t] = sum_k W[r, k] x[k, t].
//
// Why integers: the fp32 GEMV (gemv.cu) spends ~5 instructions per weight on decoding and FMAs,
// which held every block format near 2e12 weights/s whatever its bytes per weight: 27-61 % of
// the HBM bandwidth (docs/cuda.md, v3). Here x is quantized to int8 per 32 values and a
// 4-bit weight costs ~1/4 of a dp4a plus its share of the nibble masks: ~0.6 instructions
// per weight, so the bytes are the limit again.
//
// Block: 256 threads, 2 blocks per SM (<= 128 registers). It first starts the loads of its
// warps' first weights, then waits for the kernel before it (programmatic dependent launch,
// pdl.cuh: the loads overlap that kernel's tail), then quantizes all of x into shared memory
// (int8 values + one {scale, sum} per 32; every block reads x once from L2). Then each warp
// runs over groups of kRows rows (2; 1 at 4 tokens): group blockIdx.x * 8 + warp, then + 8 x
// grid (grid = as many blocks as fit on the SMs at once, so x is quantized once per resident
// block, not once per row). In a row, lane l takes "units" (16 bytes of quants each, see the
// Unit specialisations) l, l + 32, ...: one 16-byte load per unit, side by side across the
// warp. kUnroll units per lane and row form a chunk; the next chunk's loads are issued before
// the current one is multiplied (double buffer), and each unit's x is read from shared memory
// once for the kRows rows. A row's partial sums meet in a warp shuffle.
//
// One token with a norm / SwiGLU prologue over 2048 columns (launch_gemv_dp4a_x_quantized_once):
// quantize_x_once_kernel does the prologue and the int8 quantization once, into global memory
// in the shared-memory layout, and every block of the GEMV (Prologue::staged) copies those
// bytes with cp.async instead of quantizing x itself.
//
// Numerics: x_k = d_b q_k + e_k with |e_k| <= d_b / 2, d_b = max|x_b| / 127 over its block b
// of 32; the integer dot products are exact and scales are applied once per 16 or 32 weights
// in fp32. So |out - W x| <= sum_k |w_k| d_b / 2 (+ fp32 rounding): the bound the op test
// checks (tests/gpu/cuda_backend_ops_test.cpp). The reference backend also quantizes x to 8
// bits per block for these formats (tests/ops/backend_op_cases.h: its 1e-2 tolerance).
//
// Napkin math (H100, ~3.0 TB/s): 4096x4096 Q4_0 (9.4 MB) in ~3.1 us; per SM that is ~71 KB,
// and ~23 KB must be in flight per SM (bandwidth x ~1 us latency): 16 warps x 32 lanes x
// 2 rows x 4 units x 16 B = 64 KB per buffer. Measured: docs/cuda.md (v4..v7).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/block_trace.cuh"
#include "kernels/cuda/gemv_int8_x.cuh"
#include "kernels/cuda/gemv_stage_next.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/weight_decode.cuh"
#include "kernels/cuda/weight_layout.cuh"

namespace bl::cuda {
namespace {

using namespace int8x;

constexpr uint32_t kLowNibbles = 0x0F0F0F0Fu;
constexpr uint32_t kOnes = 0x01010101u;  // dp4a with this sums four int8

__device__ __forceinline__ int dp4a(uint32_t a, uint32_t b, int c) {
  return __dp4a(static_cast<int>(a), static_cast<int>(b), c);
}
__device__ __forceinline__ float half_to_float(uint32_t bits) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xFFFF)));
}
// Weights are read once: evict-first, so they do not push x out of L1/L2.
__device__ __forceinline__ uint4 load_weights16(const uint8_t* p) {
  return __ldcs(reinterpret_cast<const uint4*>(p));
}
__device__ __forceinline__ uint4 load_x16(const int8_t* p) { return *reinterpret_cast<const uint4*>(p); }

// Sum over the 4 words of q (int8 x4 each, non-negative) times the 16 x values at xq.
__device__ __forceinline__ int dot16(uint32_t q0, uint32_t q1, uint32_t q2, uint32_t q3, uint4 x, int acc) {
  return dp4a(q3, x.w, dp4a(q2, x.z, dp4a(q1, x.y, dp4a(q0, x.x, acc))));
}
__device__ __forceinline__ int sum16(uint4 x) { return dot16(kOnes, kOnes, kOnes, kOnes, x, 0); }
// The 32 nibbles of q (byte j: weight j low, weight j + 16 high) times x: lo with the first
// 16 x values, hi with the last 16.
__device__ __forceinline__ int dot_nibbles(uint4 q, uint4 lo, uint4 hi) {
  const int s = dot16(q.x & kLowNibbles, q.y & kLowNibbles, q.z & kLowNibbles, q.w & kLowNibbles, lo, 0);
  return dot16((q.x >> 4) & kLowNibbles, (q.y >> 4) & kLowNibbles, (q.z >> 4) & kLowNibbles, (q.w >> 4) & kLowNibbles,
               hi, s);
}

// ---- units: 16 bytes of quants and what is needed to scale them ----
// Each Unit<T> has kWeights (weights per unit), kUnroll (units per lane per row and chunk),
// Raw (the loaded weight registers) with load(row, u), X (the unit's x, from shared memory)
// with load_x(u, xq, xs) for one token's quantized x (xq [cols], xs [cols / 32]), and
// dot(raw, u, x) = the unit's share of the row's dot product. X is loaded once per token and
// used for all kRows rows of a step.
template <DType T>
struct Unit;

// Legacy formats: x of one block of 32 (both halves) or of one half block.
struct XBlock {
  uint4 a, b;
  XScale s;
};
struct XHalf {
  uint4 a;
  float d;
};

// Q4_0, tiled: unit = block b (32 weights): byte j of the body holds weight j (low nibble) and
// j + 16 (high), value d (q - 8). sum_k (q_k - 8) x_k = dx (sum q xq - 8 sum xq).
template <>
struct Unit<DType::Q4_0> {
  static constexpr int kWeights = 32, kUnroll = 4;
  struct Raw {
    uint4 q;
    uint32_t d;
  };
  using X = XBlock;
  __device__ __forceinline__ static Raw load(const uint8_t* row, int64_t u) {
    const BlockRef b = block_ref<DType::Q4_0, true>(row, u);
    return {load_weights16(b.body), *reinterpret_cast<const uint16_t*>(b.hdr)};
  }
  __device__ __forceinline__ static X load_x(int64_t u, const int8_t* xq, const XScale* xs) {
    return {load_x16(xq + kXBlock * u), load_x16(xq + kXBlock * u + 16), xs[u]};
  }
  __device__ __forceinline__ static float dot(const Raw& w, int64_t, const X& x) {
    const int s = dot_nibbles(w.q, x.a, x.b);
    return half_to_float(w.d) * x.s.d * static_cast<float>(s - 8 * x.s.sum);
  }
};

// Q4_1, tiled: as Q4_0 with value d q + m: sum_k (d q_k + m) x_k = dx (d sum q xq + m sum xq).
template <>
struct Unit<DType::Q4_1> {
  static constexpr int kWeights = 32, kUnroll = 4;
  struct Raw {
    uint4 q;
    uint32_t dm;
  };
  using X = XBlock;
  __device__ __forceinline__ static Raw load(const uint8_t* row, int64_t u) {
    const BlockRef b = block_ref<DType::Q4_1, true>(row, u);
    return {load_weights16(b.body), *reinterpret_cast<const uint32_t*>(b.hdr)};
  }
  __device__ __forceinline__ static X load_x(int64_t u, const int8_t* xq, const XScale* xs) {
    return {load_x16(xq + kXBlock * u), load_x16(xq + kXBlock * u + 16), xs[u]};
  }
  __device__ __forceinline__ static float dot(const Raw& w, int64_t, const X& x) {
    const int s = dot_nibbles(w.q, x.a, x.b);
    return x.s.d * (half_to_float(w.dm) * static_cast<float>(s) +
                    half_to_float(w.dm >> 16) * static_cast<float>(x.s.sum));
  }
};

// Q8_0, tiled: unit = half h = u % 2 of block u / 2 (16 int8 weights), value d q.
template <>
struct Unit<DType::Q8_0> {
  static constexpr int kWeights = 16, kUnroll = 4;
  struct Raw {
    uint4 q;
    uint32_t d;
  };
  using X = XHalf;
  __device__ __forceinline__ static Raw load(const uint8_t* row, int64_t u) {
    const BlockRef b = block_ref<DType::Q8_0, true>(row, u >> 1);
    return {load_weights16(b.body + 16 * (u & 1)), *reinterpret_cast<const uint16_t*>(b.hdr)};
  }
  __device__ __forceinline__ static X load_x(int64_t u, const int8_t* xq, const XScale* xs) {
    return {load_x16(xq + 16 * u), xs[u >> 1].d};
  }
  __device__ __forceinline__ static float dot(const Raw& w, int64_t, const X& x) {
    const int s = dot16(w.q.x, w.q.y, w.q.z, w.q.w, x.a, 0);
    return half_to_float(w.d) * x.d * static_cast<float>(s);
  }
};

// Q4_K / Q5_K sub-block j's 6-bit scale and min (ggml's get_scale_min_k4) from the scale words
// s0, s1, s2, as integers; both cases computed and one selected (lanes differ in j).
__device__ __forceinline__ void k_scale_min_int(int j, uint32_t s0, uint32_t s1, uint32_t s2, int& sc,
                                                int& m) {
  const int sh = 8 * (j & 3);
  const uint32_t sc_lo = (s0 >> sh) & 63, m_lo = (s1 >> sh) & 63;
  const uint32_t sc_hi = ((s2 >> sh) & 0xF) | (((s0 >> (sh + 6)) & 3) << 4);
  const uint32_t m_hi = ((s2 >> (sh + 4)) & 0xF) | (((s1 >> (sh + 6)) & 3) << 4);
  sc = static_cast<int>(j < 4 ? sc_lo : sc_hi);
  m = static_cast<int>(j < 4 ? m_lo : m_hi);
}

// Q4_K / Q5_K, GGUF layout (super-blocks of 144 / 176 bytes are 16-byte aligned already):
// unit u = super-block u / 8, k = u % 8, group g = k / 2, half h = k % 2: qs bytes 32 g + 16 h
// + i (i < 16) hold element 16 h + i of sub-block 2 g (low nibble) and of 2 g + 1 (high);
// Q5_K's fifth bit of element l of sub-block s is bit s of qh[l]. Value d sc q - dmin m, so
// sum = dx (d sc sum q xq - dmin m sum xq) per sub-block half.
template <bool kFive>
struct UnitK45 {
  static constexpr int kWeights = 32, kUnroll = kFive ? 1 : 2;
  static constexpr size_t kBytes = kFive ? 176 : 144;
  static constexpr int kQs = kFive ? 48 : 16;
  struct Raw {
    uint4 q, hdr, qh;  // qh only for Q5_K
  };
  struct X {
    uint4 lo, hi;      // x of the two sub-block halves
    int n_lo, n_hi;    // their sums of q
    float d_lo, d_hi;  // their scales
  };
  __device__ __forceinline__ static Raw load(const uint8_t* row, int64_t u) {
    const uint8_t* sb = row + (u >> 3) * kBytes;
    const int k = static_cast<int>(u & 7), g = k >> 1, h = k & 1;
    Raw r;
    r.hdr = __ldg(reinterpret_cast<const uint4*>(sb));  // shared by the unit's 8 lanes: keep it in L1
    r.q = load_weights16(sb + kQs + 32 * g + 16 * h);
    if constexpr (kFive)
      r.qh = load_weights16(sb + 16 + 16 * h);
    else
      r.qh = make_uint4(0, 0, 0, 0);
    return r;
  }
  __device__ __forceinline__ static X load_x(int64_t u, const int8_t* xq, const XScale* xs) {
    const int64_t s = u >> 3;
    const int k = static_cast<int>(u & 7), g = k >> 1, h = k & 1;
    const int8_t* x_lo = xq + 256 * s + 64 * g + 16 * h;  // sub-block 2g, elements 16h ..
    X x;
    x.lo = load_x16(x_lo), x.hi = load_x16(x_lo + 32);
    x.n_lo = sum16(x.lo), x.n_hi = sum16(x.hi);
    x.d_lo = xs[8 * s + 2 * g].d, x.d_hi = xs[8 * s + 2 * g + 1].d;
    return x;
  }
  __device__ __forceinline__ static float dot(const Raw& w, int64_t u, const X& x) {
    const int g = static_cast<int>(u & 7) >> 1;
    uint32_t lo[4] = {w.q.x & kLowNibbles, w.q.y & kLowNibbles, w.q.z & kLowNibbles, w.q.w & kLowNibbles};
    uint32_t hi[4] = {(w.q.x >> 4) & kLowNibbles, (w.q.y >> 4) & kLowNibbles, (w.q.z >> 4) & kLowNibbles,
                      (w.q.w >> 4) & kLowNibbles};
    if constexpr (kFive) {
      const uint32_t qh[4] = {w.qh.x, w.qh.y, w.qh.z, w.qh.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        lo[i] |= ((qh[i] >> (2 * g)) & kOnes) << 4;
        hi[i] |= ((qh[i] >> (2 * g + 1)) & kOnes) << 4;
      }
    }
    const int s_lo = dot16(lo[0], lo[1], lo[2], lo[3], x.lo, 0),
              s_hi = dot16(hi[0], hi[1], hi[2], hi[3], x.hi, 0);
    int sc0, m0, sc1, m1;
    k_scale_min_int(2 * g, w.hdr.y, w.hdr.z, w.hdr.w, sc0, m0);
    k_scale_min_int(2 * g + 1, w.hdr.y, w.hdr.z, w.hdr.w, sc1, m1);
    const float d = half_to_float(w.hdr.x), dmin = half_to_float(w.hdr.x >> 16);
    return x.d_lo * (d * static_cast<float>(sc0 * s_lo) - dmin * static_cast<float>(m0 * x.n_lo)) +
           x.d_hi * (d * static_cast<float>(sc1 * s_hi) - dmin * static_cast<float>(m1 * x.n_hi));
  }
};
template <>
struct Unit<DType::Q4_K> : UnitK45<false> {};
template <>
struct Unit<DType::Q5_K> : UnitK45<true> {};

// Q6_K, tiled (body = ql[128], qh[64]; header = scales[16], d): unit u = super-block u / 4,
// half hf = (u / 2) % 2, lq = u % 2: 16 elements l = 16 lq + i of each of the 4 parts p of the
// half. Part p's 6-bit value: low (p = 0, 1) or high (p = 2, 3) nibble of ql[64 hf + 32 (p % 2)
// + l], bits 2p, 2p+1 of qh[32 hf + l]; element 128 hf + 32 p + l, scale scales[8 hf + 2p + lq],
// value d sc (q - 32).
template <>
struct Unit<DType::Q6_K> {
  static constexpr int kWeights = 64, kUnroll = 1;
  struct Raw {
    uint4 l0, l1, h;
    uint32_t sc;  // the 4 int8 scales of parts 0..3
    uint32_t d;
  };
  struct X {
    uint4 p[4];  // x of parts 0..3
    int n[4];    // their sums of q
    float d[4];  // their scales
  };
  __device__ __forceinline__ static Raw load(const uint8_t* row, int64_t u) {
    const BlockRef b = block_ref<DType::Q6_K, true>(row, u >> 2);
    const int hf = static_cast<int>((u >> 1) & 1), lq = static_cast<int>(u & 1);
    Raw r;
    r.l0 = load_weights16(b.body + 64 * hf + 16 * lq);
    r.l1 = load_weights16(b.body + 64 * hf + 32 + 16 * lq);
    r.h = load_weights16(b.body + 128 + 32 * hf + 16 * lq);
    // The header is 2-byte aligned (18 bytes each): scales[8 hf .. 8 hf + 7] as four halves,
    // then bytes lq, 2 + lq, 4 + lq, 6 + lq of them.
    const uint16_t* hdr = reinterpret_cast<const uint16_t*>(b.hdr);
    const uint32_t w01 = hdr[4 * hf] | (static_cast<uint32_t>(hdr[4 * hf + 1]) << 16);
    const uint32_t w23 = hdr[4 * hf + 2] | (static_cast<uint32_t>(hdr[4 * hf + 3]) << 16);
    r.sc = __byte_perm(w01, w23, lq ? 0x7531 : 0x6420);
    r.d = hdr[8];
    return r;
  }
  __device__ __forceinline__ static X load_x(int64_t u, const int8_t* xq, const XScale* xs) {
    const int64_t s = u >> 2;
    const int hf = static_cast<int>((u >> 1) & 1), lq = static_cast<int>(u & 1);
    X x;
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      x.p[p] = load_x16(xq + 256 * s + 128 * hf + 32 * p + 16 * lq);
      x.n[p] = sum16(x.p[p]);
      x.d[p] = xs[8 * s + 4 * hf + p].d;
    }
    return x;
  }
  __device__ __forceinline__ static float dot(const Raw& w, int64_t, const X& x) {
    const uint32_t l0[4] = {w.l0.x, w.l0.y, w.l0.z, w.l0.w}, l1[4] = {w.l1.x, w.l1.y, w.l1.z, w.l1.w};
    const uint32_t h[4] = {w.h.x, w.h.y, w.h.z, w.h.w};
    float acc = 0.0f;
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      uint32_t q[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint32_t l = p & 1 ? l1[i] : l0[i];
        q[i] = ((p < 2 ? l : l >> 4) & kLowNibbles) | (((h[i] >> (2 * p)) & 0x03030303u) << 4);
      }
      const int dot = dot16(q[0], q[1], q[2], q[3], x.p[p], 0) - 32 * x.n[p];
      const int sc = static_cast<int8_t>((w.sc >> (8 * p)) & 0xFF);
      acc += x.d[p] * static_cast<float>(sc * dot);
    }
    return half_to_float(w.d) * acc;
  }
};

template <DType T>
constexpr bool has_unit() {
  return T == DType::Q4_0 || T == DType::Q4_1 || T == DType::Q8_0 || T == DType::Q4_K || T == DType::Q5_K ||
         T == DType::Q6_K;
}

// The first kernel of launch_gemv_dp4a_x_quantized_once: one thread per group of 8 values
// (cols % 256 == 0, so a warp has all 32 groups or none and quantize_group's shuffles are
// safe), x' = x * norm or silu(x) * up or x, quantized into dst in the shared-memory layout;
// with a norm, block b writes its sum of x^2 to partial_sumsq[b] (the GEMV adds the partials in
// order: deterministic, no atomics).
template <Prologue kPro>
__global__ void __launch_bounds__(kThreads)
    quantize_x_once_kernel(const float* x, GemvFusion fuse, int64_t cols, uint8_t* dst,
                           float* partial_sumsq, block_trace::Slot trace) {
  block_trace::mark(trace, block_trace::Kernel::quantize_x, block_trace::Point::enter, x);
  pdl_start_next_early();  // the GEMV after this one may start its weight loads
  block_trace::mark(trace, block_trace::Kernel::quantize_x, block_trace::Point::waited, x);
  int8_t* xq = reinterpret_cast<int8_t*>(dst);
  XScale* xs = reinterpret_cast<XScale*>(dst + cols);
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  float sq = 0.0f;
  if (i < cols / 8) {
    const float4* x4 = reinterpret_cast<const float4*>(x);
    float4 a = __ldg(x4 + 2 * i), b = __ldg(x4 + 2 * i + 1);
    if constexpr (kPro == Prologue::norm) {
      const float4* g4 = reinterpret_cast<const float4*>(fuse.norm);
      sq = squares(a) + squares(b);
      a = times(a, __ldg(g4 + 2 * i)), b = times(b, __ldg(g4 + 2 * i + 1));
    } else if constexpr (kPro == Prologue::gate) {
      const float4* u4 = reinterpret_cast<const float4*>(fuse.up);
      a = silu_times(a, __ldg(u4 + 2 * i)), b = silu_times(b, __ldg(u4 + 2 * i + 1));
    }
    quantize_group(a, b, i, xq, xs);
  }
  if constexpr (kPro == Prologue::norm) {
    __shared__ float warp_sq[kWarps];
    sq = warp_sum(sq);
    if (threadIdx.x % kWarp == 0) warp_sq[threadIdx.x / kWarp] = sq;
    __syncthreads();
    if (threadIdx.x == 0) {
      float total = 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total += warp_sq[w];
      partial_sumsq[blockIdx.x] = total;
    }
  }
  block_trace::mark_exit(trace, block_trace::Kernel::quantize_x, x);
}

// Rows a warp multiplies per step: x is loaded from shared memory once for all of them. At 4
// tokens the weights are already reused 4 times and 2 rows would not fit in 128 registers.
template <int kTokens>
constexpr int rows_per_step() {
  return kTokens >= 4 ? 1 : 2;
}

// kStageNext (one token, launched in pairs with exactly rows / 16 blocks: one row group a
// warp): also stage the next GEMV's x (gemv_stage_next.cuh); the rows' old out values are
// loaded right after the wait instead of after the last sum.
// kRopeStore (one token): the rope epilogue of p.fuse.rope_store (GemvRopeStore), an instance
// of its own so that the other GEMVs carry neither its angle table nor its fp64 code.
template <DType T, int kTokens, Prologue kPro, bool kStageNext = false, bool kRopeStore = false>
__global__ void __launch_bounds__(kThreads, 2) gemv_dp4a_kernel(GemvArgs p) {
  constexpr int kRows = rows_per_step<kTokens>();
  using U = Unit<T>;
  using Raw = typename U::Raw;
  constexpr int kUnroll = U::kUnroll;
  extern __shared__ __align__(16) uint8_t smem[];
  int8_t* xq = reinterpret_cast<int8_t*>(smem);                 // [n][cols]
  XScale* xs = reinterpret_cast<XScale*>(smem + p.n * p.cols);  // [n][cols / 32]
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t units = p.cols / U::kWeights;
  const int64_t chunk_units = static_cast<int64_t>(kWarp) * kUnroll;
  const int64_t chunks = (units + chunk_units - 1) / chunk_units;
  const int64_t group_step = static_cast<int64_t>(gridDim.x) * kWarps;
  const int64_t groups = (p.rows + kRows - 1) / kRows;
  block_trace::mark(p.trace, block_trace::Kernel::gemv_dp4a, block_trace::Point::enter, p.w);

  // A warp's work is a sequence of (group, chunk) items: chunks 0.. of row group (rows
  // kRows g ..) g = blockIdx.x * 8 + warp, then of the group group_step further, and so on.
  struct Item {
    int64_t group, chunk;
  };
  auto next = [&](Item it) {
    return it.chunk + 1 < chunks ? Item{it.group, it.chunk + 1} : Item{it.group + group_step, 0};
  };
  // Rows past the end load the last row again (valid memory); their sums are not stored.
  auto load_chunk = [&](Raw(&raw)[kRows][kUnroll], Item it) {
    if (it.group >= groups) return;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const uint8_t* rowp = p.w + min(it.group * kRows + r, p.rows - 1) * p.row_bytes;
#pragma unroll
      for (int j = 0; j < kUnroll; ++j) {
        const int64_t u = it.chunk * chunk_units + j * kWarp + lane;
        if (u < units) raw[r][j] = U::load(rowp, u);
      }
    }
  };

  // Two buffers: while one chunk is multiplied the next is in flight, and the buffer just
  // used is refilled at once with the chunk after that. The buffers swap roles by unrolling
  // (step(b0), step(b1)), not by copying: a register copy would wait for the load to land.
  Raw buf0[kRows][kUnroll], buf1[kRows][kUnroll];
  Item a{static_cast<int64_t>(blockIdx.x) * kWarps + warp, 0}, b = next(a);
  load_chunk(buf0, a);
  load_chunk(buf1, b);  // both in flight while x is quantized
  static_assert(!kRopeStore || (kTokens == 1 && kRows == 2 && !kStageNext), "the rope epilogue takes row pairs");
  __shared__ float2 rope_cs[kRopeStore ? kAttentionMaxHeadDim / 2 : 1];  // read after stage_x's barrier
  if constexpr (kRopeStore) rope_angles(p.fuse.rope_store, rope_cs);
  pdl_wait();           // x and out belong to the kernel before (pdl.cuh); the weights do not
  block_trace::mark(p.trace, block_trace::Kernel::gemv_dp4a, block_trace::Point::waited, p.w);
  float out_scale[kTokens];
  stage_x<kTokens, kPro>(p, smem, out_scale);
  constexpr bool kScaled = kPro == Prologue::norm || kPro == Prologue::staged;
  static_assert(!kStageNext || (kTokens == 1 && kRows * kWarps * kStageNextPair == kStageNextRows),
                "a pair of blocks owns one int8 block of the next x");
  __shared__ float pair_rows[kStageNextRows];  // with kStageNext: the pair's rows, in block 0
  float before[kRows] = {};                    // with kStageNext: out's values before the add
  PairRows pair{};
  if constexpr (kStageNext) {
    pair = pair_rows_of(pair_rows, blockIdx.x / kStageNextPair * kStageNextRows);
    if (lane == 0 && p.fuse.accumulate)
#pragma unroll
      for (int r = 0; r < kRows; ++r) before[r] = p.out[a.group * kRows + r];
  }

  float acc[kRows][kTokens];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int t = 0; t < kTokens; ++t) acc[r][t] = 0.0f;
  // Multiplies item a (in buf), refills buf with the item after b; false once a is past the end.
  auto step = [&](Raw(&buf)[kRows][kUnroll]) {
    if (a.group >= groups) return false;
#pragma unroll
    for (int j = 0; j < kUnroll; ++j) {
      const int64_t u = a.chunk * chunk_units + j * kWarp + lane;
      if (u >= units) continue;
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (t >= p.n) break;
        const typename U::X x = U::load_x(u, xq + t * p.cols, xs + t * (p.cols / kXBlock));
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r][t] += U::dot(buf[r][j], u, x);
      }
    }
    if constexpr (kRopeStore) {  // every finished row pair goes through the rope epilogue
      if (b.chunk == 0) {
        const int64_t row0 = a.group * kRows;
        float v[kRows];
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const float s = warp_sum(acc[r][0]);
          v[r] = (kScaled ? s * out_scale[0] : s) + (p.bias ? p.bias[min(row0 + r, p.rows - 1)] : 0.0f);
          acc[r][0] = 0.0f;
        }
        const GemvRopeStore& e = p.fuse.rope_store;
        if (lane == 0 && row0 + 1 < p.rows)  // rows are whole pairs where the epilogue applies
          store_rope_pair(e, p.out, p.fuse.accumulate,
                          rope_pair_rotates(e, row0) ? rope_cs[rope_pair_index(e, row0)] : float2{}, row0, v[0], v[1]);
      }
    }
    if (!kRopeStore && b.chunk == 0) {  // the group's rows are complete
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int64_t row = a.group * kRows + r;
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          const float s = warp_sum(acc[r][t]);
          if (lane == 0 && t < p.n && row < p.rows) {
            float* o = p.out + t * p.rows + row;
            const float v = (kScaled ? s * out_scale[t] : s) + (p.bias ? p.bias[row] : 0.0f);
            if constexpr (kStageNext) {
              const float h = p.fuse.accumulate ? before[r] + v : v;
              *o = h;
              pair.first[row - pair.first_row] = h;
            } else {
              *o = p.fuse.accumulate ? *o + v : v;
            }
          }
          acc[r][t] = 0.0f;
        }
      }
    }
    const Item c = next(b);
    load_chunk(buf, c);
    a = b, b = c;
    return true;
  };
  while (step(buf0) && step(buf1)) {
  }
  if constexpr (kStageNext) stage_next_epilogue(p.fuse.stage_next, pair, pair_rows, p.rows);
  block_trace::mark_exit(p.trace, block_trace::Kernel::gemv_dp4a, p.w);
}

size_t smem_bytes(int64_t cols, int n) { return static_cast<size_t>(n * quantized_x_bytes(cols)); }

template <DType T, int kTokens, Prologue kPro = Prologue::none, bool kStageNext = false, bool kRopeStore = false>
bool launch_tokens(const GemvArgs& p, cudaStream_t stream) {
  const auto kernel = gemv_dp4a_kernel<T, kTokens, kPro, kStageNext, kRopeStore>;
  int device = 0, sms = 0, optin = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  // The opt-in limit counts the kernel's static shared memory (the norm's per-warp sums) too.
  static const size_t static_smem = [&] {
    cudaFuncAttributes attr{};
    cudaFuncGetAttributes(&attr, kernel);
    return attr.sharedSizeBytes;
  }();
  const size_t max_dynamic = static_cast<size_t>(optin) - static_smem;
  const size_t smem = smem_bytes(p.cols, p.n);
  if (smem > max_dynamic) return false;
  static bool raised = false;  // per instantiation: allow up to the opt-in limit once
  if (!raised) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(max_dynamic));
    raised = true;
  }
  int per_sm = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  constexpr int kRows = rows_per_step<kTokens>();
  const int64_t needed = (p.rows + kWarps * kRows - 1) / (kWarps * kRows);
  GemvArgs traced = p;
  traced.trace = block_trace::next_slot();
  if constexpr (kStageNext) {  // one row group a warp, whatever fits at once (gemv_stage_next.cuh)
    launch_pdl_clusters(kernel, dim3(static_cast<unsigned>(needed)), dim3(kThreads), smem, stream, kStageNextPair,
                        traced);
    return true;
  }
  const int64_t grid =
      std::max<int64_t>(1, std::min<int64_t>(needed, static_cast<int64_t>(std::max(per_sm, 1)) * sms));
  launch_pdl(kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), smem, stream, traced);
  return true;
}

}  // namespace

bool gemv_dp4a_applies(const WeightView& w, int n_tokens) {
  if (n_tokens < 1 || n_tokens > kDp4aMaxTokens || w.cols % 256 != 0 || w.rows < 1) return false;
  switch (w.dtype) {
    case DType::Q4_K:
    case DType::Q5_K:
      return true;
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q8_0:
    case DType::Q6_K:
      return w.tiled;
    default:
      return false;
  }
}

bool launch_gemv_dp4a(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                      cudaStream_t stream, const GemvFusion& fuse) {
  if (!gemv_dp4a_applies(w, n_tokens) || !aligned16(x) || !aligned16(fuse.norm) || !aligned16(fuse.up)) return false;
  const GemvArgs p{
      static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, x, n_tokens, out, bias, fuse};
  // Prologues are compiled for one token only (decode): more tokens run the plain ops.
  if (fuse.prologue() && n_tokens != 1) return false;
  // The rope epilogue (a QKV GEMV): one token, with the norm inside or no prologue.
  const bool rope = fuse.rope_store.positions != nullptr;
  if (rope && (n_tokens != 1 || fuse.up)) return false;
  bool launched = false;
  dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (has_unit<T>()) {
      if (rope && fuse.norm)
        launched = launch_tokens<T, 1, Prologue::norm, false, true>(p, stream);
      else if (rope)
        launched = launch_tokens<T, 1, Prologue::none, false, true>(p, stream);
      else if (fuse.norm)
        launched = launch_tokens<T, 1, Prologue::norm>(p, stream);
      else if (fuse.up)
        launched = launch_tokens<T, 1, Prologue::gate>(p, stream);
      else if (n_tokens == 1)
        launched = launch_tokens<T, 1>(p, stream);
      else if (n_tokens == 2)
        launched = launch_tokens<T, 2>(p, stream);
      else
        launched = launch_tokens<T, 4>(p, stream);
    }
  });
  return launched;
}

bool gemv_dp4a_staged_applies(const WeightView& w) {
  int device = 0, optin = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  return gemv_dp4a_applies(w, 1) && smem_bytes(w.cols, 1) + 1024 <= static_cast<size_t>(optin);
}

bool gemv_dp4a_after_attention_applies(const WeightView& w, int n_head, int head_dim) {
  return n_head > 0 && head_dim > 0 && head_dim % 8 == 0 && static_cast<int64_t>(n_head) * head_dim == w.cols &&
         gemv_dp4a_staged_applies(w);
}

bool launch_gemv_dp4a_after_attention(const WeightView& w, const AttentionSums& sums, float* out, const float* bias,
                                      bool accumulate, cudaStream_t stream) {
  if (!sums.buffer || !gemv_dp4a_after_attention_applies(w, sums.n_head, sums.head_dim)) return false;
  GemvArgs p{static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, sums.num(), 1, out, bias,
             GemvFusion{.accumulate = accumulate}};
  p.attention = sums;
  bool launched = false;
  dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (has_unit<T>()) launched = launch_tokens<T, 1, Prologue::attention>(p, stream);
  });
  return launched;
}

bool gemv_dp4a_x_quantized_once_applies(const WeightView& w, int n_tokens) {
  return n_tokens == 1 && gemv_dp4a_applies(w, 1) && quantize_once_fits(w.cols);
}

StagedX launch_quantize_x_once(const float* x, const GemvFusion& fuse, int64_t cols, void* scratch,
                               cudaStream_t stream) {
  uint8_t* staged = static_cast<uint8_t*>(scratch);
  float* partials = reinterpret_cast<float*>(staged + quantized_x_bytes(cols));
  const dim3 grid(static_cast<unsigned>(quantize_once_blocks(cols)));
  if (fuse.norm)
    launch_pdl(quantize_x_once_kernel<Prologue::norm>, grid, dim3(kThreads), 0, stream, x, fuse, cols, staged,
               partials, block_trace::next_slot());
  else if (fuse.up)
    launch_pdl(quantize_x_once_kernel<Prologue::gate>, grid, dim3(kThreads), 0, stream, x, fuse, cols, staged,
               partials, block_trace::next_slot());
  else
    launch_pdl(quantize_x_once_kernel<Prologue::none>, grid, dim3(kThreads), 0, stream, x, fuse, cols, staged,
               partials, block_trace::next_slot());
  return {staged, fuse.norm ? partials : nullptr, fuse.norm ? static_cast<int>(grid.x) : 0};
}

bool launch_gemv_dp4a_x_quantized_once(const WeightView& w, const float* x, int n_tokens, float* out,
                                       const float* bias, const GemvFusion& fuse, void* scratch,
                                       size_t scratch_bytes, cudaStream_t stream) {
  if (!gemv_dp4a_x_quantized_once_applies(w, n_tokens) || !aligned16(x) || !aligned16(fuse.norm) ||
      !aligned16(fuse.up) || !aligned16(scratch) || scratch_bytes < static_cast<size_t>(quantized_x_once_bytes(w.cols)) ||
      !gemv_dp4a_staged_applies(w) || (fuse.stage_next.dst && !gemv_stages_next_applies(w)))
    return false;  // before launching anything
  const StagedX staged = launch_quantize_x_once(x, fuse, w.cols, scratch, stream);
  return launch_gemv_dp4a_staged(w, staged, out, bias, fuse, stream);
}

bool launch_gemv_dp4a_staged(const WeightView& w, const StagedX& x, float* out, const float* bias,
                             const GemvFusion& fuse, cudaStream_t stream) {
  if (!gemv_dp4a_staged_applies(w) || x.n_partials > kMaxStagedPartials ||
      (fuse.stage_next.dst && !gemv_stages_next_applies(w)) || (fuse.rope_store.positions && fuse.stage_next.dst))
    return false;
  GemvArgs p{static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, nullptr, 1, out, bias, fuse};
  p.x_staged = x.bytes;
  p.sumsq_partials = x.sumsq_partials;
  p.n_partials = x.n_partials;
  bool launched = false;
  dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (has_unit<T>())
      launched = fuse.stage_next.dst         ? launch_tokens<T, 1, Prologue::staged, true>(p, stream)
                 : fuse.rope_store.positions ? launch_tokens<T, 1, Prologue::staged, false, true>(p, stream)
                                             : launch_tokens<T, 1, Prologue::staged>(p, stream);
  });
  return launched;
}

int64_t stage_next_bytes(int64_t rows) { return stage_next_bytes_of(rows); }

StagedX staged_next_x(const StageNext& next, int64_t rows) {
  return {next.dst, reinterpret_cast<const float*>(next.dst + quantized_x_bytes(rows)),
          static_cast<int>(stage_next_partials(rows))};
}

bool gemv_stages_next_applies(const WeightView& w) {
  if (!gemv_dp4a_applies(w, 1) || w.rows % 256 != 0 || stage_next_partials(w.rows) > kMaxStagedPartials ||
      !pdl_supported())
    return false;
  bool sm90 = false;  // the cluster code is compiled for sm_90 and newer only
  dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (has_unit<T>()) sm90 = kernel_waits_for_predecessor(gemv_dp4a_kernel<T, 1, Prologue::staged, true>);
  });
  return sm90;
}

}  // namespace bl::cuda
