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

#include "kernels/cuda/attention_sums.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"  // cp_async_16
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/silu.cuh"
#include "kernels/cuda/weight_decode.cuh"
#include "kernels/cuda/weight_layout.cuh"

namespace bl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarp;
constexpr int kXBlock = 32;  // x values per int8 scale
constexpr uint32_t kLowNibbles = 0x0F0F0F0Fu;
constexpr uint32_t kOnes = 0x01010101u;  // dp4a with this sums four int8

// x over one block of 32 values: x_k ~= d q_k; sum = sum of the q_k (for weight offsets/mins).
struct XScale {
  float d;
  int sum;
};

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
  // Blocks with max |x| under 1e-30 count as zeros (127 / amax would overflow for subnormals).
  const float inv = amax >= 1e-30f ? 127.0f / amax : 0.0f;
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
  if ((threadIdx.x & 3) == 0)
    xs[i / 4] = {amax / 127.0f + poison, sum};  // a NaN scale makes the row's sum NaN
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
      const int head = static_cast<int>(8 * i) / s.head_dim;  // 32-bit (attention_values8)
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
    attention_values8(s, 8 * i, v);  // the first pass's num / den where no split overflowed
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

// The first kernel of launch_gemv_dp4a_x_quantized_once: one thread per group of 8 values
// (cols % 256 == 0, so a warp has all 32 groups or none and quantize_group's shuffles are
// safe), x' = x * norm or silu(x) * up or x, quantized into dst in the shared-memory layout;
// with a norm, block b writes its sum of x^2 to partial_sumsq[b] (the GEMV adds the partials in
// order: deterministic, no atomics).
template <Prologue kPro>
__global__ void __launch_bounds__(kThreads)
    quantize_x_once_kernel(const float* x, GemvFusion fuse, int64_t cols, uint8_t* dst,
                           float* partial_sumsq) {
  pdl_start_next_early();  // the GEMV after this one may start its weight loads
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
// Most partial sums of x^2 a staged norm reads (quantize_x_once_kernel blocks: cols / 2048).
constexpr int kMaxNormPartials = 16;

// Rows a warp multiplies per step: x is loaded from shared memory once for all of them. At 4
// tokens the weights are already reused 4 times and 2 rows would not fit in 128 registers.
template <int kTokens>
constexpr int rows_per_step() {
  return kTokens >= 4 ? 1 : 2;
}

template <DType T, int kTokens, Prologue kPro>
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
  pdl_wait();           // x and out belong to the kernel before (pdl.cuh); the weights do not
  float sumsq[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) sumsq[t] = 0.0f;
  // Staged: the norm's partial sums are loaded alongside the copy (one round trip for both).
  float partials[kPro == Prologue::staged ? kMaxNormPartials : 1];
  if constexpr (kPro == Prologue::staged) {
#pragma unroll
    for (int b = 0; b < kMaxNormPartials; ++b)
      partials[b] = b < p.n_partials ? __ldcg(p.sumsq_partials + b) : 0.0f;
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
  // 1 / rms of each token's x with a norm prologue (staged: from the quantizing kernel's
  // partial sums, one token), else 1.
  constexpr bool kScaled = kNorm || kPro == Prologue::staged;
  float out_scale[kTokens];
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    float total = 0.0f;
    if constexpr (kNorm) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) total += warp_sumsq[w][t];
    } else if constexpr (kPro == Prologue::staged) {
#pragma unroll
      for (int b = 0; b < kMaxNormPartials; ++b) total += partials[b];  // zeros past n_partials
    }
    const bool norm = kNorm || (kPro == Prologue::staged && p.n_partials > 0);
    out_scale[t] = norm ? rsqrtf(total / static_cast<float>(p.cols) + p.fuse.eps) : 1.0f;
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
    if (b.chunk == 0) {  // the group's rows are complete
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int64_t row = a.group * kRows + r;
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          const float s = warp_sum(acc[r][t]);
          if (lane == 0 && t < p.n && row < p.rows) {
            float* o = p.out + t * p.rows + row;
            const float v = (kScaled ? s * out_scale[t] : s) + (p.bias ? p.bias[row] : 0.0f);
            *o = p.fuse.accumulate ? *o + v : v;
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
}

size_t smem_bytes(int64_t cols, int n) { return static_cast<size_t>(n * quantized_x_bytes(cols)); }

template <DType T, int kTokens, Prologue kPro = Prologue::none>
bool launch_tokens(const GemvArgs& p, cudaStream_t stream) {
  const auto kernel = gemv_dp4a_kernel<T, kTokens, kPro>;
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
  const int64_t grid =
      std::max<int64_t>(1, std::min<int64_t>(needed, static_cast<int64_t>(std::max(per_sm, 1)) * sms));
  launch_pdl(kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), smem, stream, p);
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
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  if (!gemv_dp4a_applies(w, n_tokens) || !aligned(x) || !aligned(fuse.norm) || !aligned(fuse.up)) return false;
  const GemvArgs p{
      static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, x, n_tokens, out, bias, fuse};
  // Prologues are compiled for one token only (decode): more tokens run the plain ops.
  if (fuse.prologue() && n_tokens != 1) return false;
  bool launched = false;
  dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (has_unit<T>()) {
      if (fuse.norm)
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

namespace {
// Partial sums of x^2 after the quantized bytes: one per block of quantize_x_once_kernel.
int64_t quantize_blocks(int64_t cols) { return (cols / 8 + kThreads - 1) / kThreads; }
}  // namespace

size_t gemv_dp4a_x_quantized_bytes(int64_t cols) {
  return static_cast<size_t>(quantized_x_bytes(cols) +
                             quantize_blocks(cols) * static_cast<int64_t>(sizeof(float)));
}

bool gemv_dp4a_after_attention_applies(const WeightView& w, int n_head, int head_dim) {
  if (!gemv_dp4a_applies(w, 1) || n_head <= 0 || head_dim <= 0 || head_dim % 8 != 0 ||
      static_cast<int64_t>(n_head) * head_dim != w.cols)
    return false;
  int device = 0, optin = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  return smem_bytes(w.cols, 1) + 1024 <= static_cast<size_t>(optin);
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
  return n_tokens == 1 && gemv_dp4a_applies(w, 1) && quantize_blocks(w.cols) <= kMaxNormPartials;
}

bool launch_gemv_dp4a_x_quantized_once(const WeightView& w, const float* x, int n_tokens, float* out,
                                       const float* bias, const GemvFusion& fuse, void* scratch,
                                       size_t scratch_bytes, cudaStream_t stream) {
  auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  if (!gemv_dp4a_x_quantized_once_applies(w, n_tokens) || !aligned(x) || !aligned(fuse.norm) ||
      !aligned(fuse.up) || !aligned(scratch) || scratch_bytes < gemv_dp4a_x_quantized_bytes(w.cols))
    return false;
  int device = 0, optin = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (smem_bytes(w.cols, 1) + 1024 > static_cast<size_t>(optin)) return false;  // before launching anything
  uint8_t* staged = static_cast<uint8_t*>(scratch);
  float* partials = reinterpret_cast<float*>(staged + quantized_x_bytes(w.cols));
  const dim3 grid(static_cast<unsigned>(quantize_blocks(w.cols)));
  if (fuse.norm)
    launch_pdl(quantize_x_once_kernel<Prologue::norm>, grid, dim3(kThreads), 0, stream, x, fuse, w.cols,
               staged, partials);
  else if (fuse.up)
    launch_pdl(quantize_x_once_kernel<Prologue::gate>, grid, dim3(kThreads), 0, stream, x, fuse, w.cols,
               staged, partials);
  else
    launch_pdl(quantize_x_once_kernel<Prologue::none>, grid, dim3(kThreads), 0, stream, x, fuse, w.cols,
               staged, partials);
  GemvArgs p{static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, x, 1, out, bias, fuse};
  p.x_staged = staged;
  p.sumsq_partials = fuse.norm ? partials : nullptr;
  p.n_partials = fuse.norm ? static_cast<int>(grid.x) : 0;
  bool launched = false;
  dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (has_unit<T>()) launched = launch_tokens<T, 1, Prologue::staged>(p, stream);
  });
  return launched;
}

}  // namespace bl::cuda
