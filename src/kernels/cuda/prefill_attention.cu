// Causal attention for a chunk of prompt tokens, FlashAttention-2 style on tensor cores.
//
// Grid (n_head, ceil(n_tokens / 64)): a block owns one query head and 64 query tokens (4 warps
// x 16 rows); it walks the KV cache of that head's KV head (GQA: head / (n_head / n_head_kv))
// in tiles of 64 slots, staged in shared memory by cp.async two tiles deep. Per tile each warp
// computes S = Q K^T (16 x 64) with mma.sync m16n8k16 (Q in registers as fp16 A fragments,
// pre-scaled by scale * log2 e), masks slots past each query's position, folds S into a
// running (max, sum) per row (online softmax in base 2), rounds P to fp16 in place (the C
// fragments of S are the A fragments of P) and accumulates O += P V (V^T fragments by
// ldmatrix.trans). O / sum goes out in fp32.
//
// With angles (PrefillRope), q arrives as the QKV matmul wrote it and each thread rotates the
// dims of its Q fragments as it loads them, with the (cos, sin) the rope kernel computed for
// the token's position (launch_rope_kv_store's q_angles): q's fp32 round trip through the rope
// kernel (2 x 33.5 MB a layer at the 8B shape, 2048 tokens) is not made.
//
// Positions come from the positions tensor, per query: query i sees slots [0, positions[i]]
// (clamped to the cache; a negative position sees nothing and gives zeros), which is both
// plain causal prefill (0..n-1) and a later chunk of a chunked prefill (p0..p0+n-1 over a
// cache holding 0..p0+n-1). The block reads slots up to the largest position of its queries;
// a warp skips the tiles wholly past its own largest position.
//
// Napkin math (H100, 8B shape, 2048 tokens, one layer): 32 heads x 2048 queries x ~1024 slots
// x 128 dims x 4 flops = 34 GFLOP; at ~300 TFLOP/s of mma.sync that is ~115 us (the split-KV
// decode kernel it replaces for prefill took 6.7 ms: fp32 CUDA cores, every token re-reading
// its prefix). K/V bytes: each block reads at most 2048 slots x 256 B x 2 = 1 MB, from L2
// (one layer's cache is 8 MB).
//
// Precision: Q and P are rounded to fp16 (2^-12 relative each), the cache is fp16 already;
// products and sums in fp32. The op test bounds the error (tests/gpu/).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/pdl.cuh"

namespace bl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarps = 4;
constexpr int kThreads = kWarps * kWarp;
constexpr int kQueryRows = 16 * kWarps;  // queries per block: one mma M of 16 per warp
constexpr int kSlots = 64;               // cache slots per KV tile
constexpr int kStages = 2;               // KV tiles in shared memory (one computed, one loading)
constexpr float kLog2e = 1.4426950408889634f;

template <int kHeadDim>
struct Tile {
  static_assert(kHeadDim % 16 == 0, "head_dim must be whole mma k-steps of 16");
  // Shared-memory row stride in halves: +8 halves (16 B) makes the 8 rows an ldmatrix reads
  // start in 8 different 16-byte bank groups (stride / 16 B is odd), so it is conflict-free.
  static constexpr int kStride = kHeadDim + 8;
  static constexpr int kHalves = kSlots * kStride;  // one K or V tile
  static constexpr size_t kSmemBytes = size_t{kStages} * 2 * kHalves * sizeof(__half);
  static constexpr int kChunksPerRow = kHeadDim / 8;  // 16-byte cp.async chunks
  static constexpr int kChunksPerThread = kSlots * kChunksPerRow / kThreads;
  static_assert(kSlots * kChunksPerRow % kThreads == 0, "a tile must split evenly over the threads");
};

struct PrefillParams {
  const float* q;            // [head_dim, n_head, n_tokens], rope applied unless angles
  const __half* k;           // [head_dim, n_head_kv, n_ctx]
  const __half* v;           // [head_dim, n_head_kv, n_ctx]
  const int32_t* positions;  // [n_tokens]
  float* out;                // [head_dim, n_head, n_tokens]
  int n_head, n_head_kv;
  int64_t n_tokens, n_ctx;
  float scale_log2;  // softmax scale * log2(e): scores in base 2
  const float2* angles;  // [n_tokens, head_dim / 2] (cos, sin) to rotate q by, or null
  bool neox;             // rope pairs (i, i + head_dim / 2), else (2i, 2i + 1)
  int window;            // > 0: a query sees only the last `window` slots up to its position
};

// The last slot query `token` may see: positions[token] clamped to the cache, -1 for none
// (negative position, or a row past the end of the chunk).
__device__ __forceinline__ int last_slot(const PrefillParams& p, int64_t token) {
  if (token >= p.n_tokens) return -1;
  const int pos = p.positions[token];
  return pos < 0 ? -1 : static_cast<int>(min(static_cast<int64_t>(pos), p.n_ctx - 1));
}

// The first slot a query whose last slot is `last` may see: 0, or with a window the last
// window slots' first.
__device__ __forceinline__ int first_slot(const PrefillParams& p, int last) {
  return p.window > 0 ? max(0, last - p.window + 1) : 0;
}

// This thread's q dims of one query row, as qv[4 s + 2 h + e] = dim 16 s + 8 h + 2 t + e (s <
// kHeadDim / 16, h, e in {0, 1}: its A-fragment dims), rotated by the token's angles. Both dims
// of every rope pair are the thread's: (2i, 2i + 1) are e = 0, 1, and neox's (i, i + kHeadDim / 2)
// are s and s + kHeadDim / 32 (whole-head rotary only). The arithmetic is rope_kv_store's.
template <int kHeadDim>
__device__ __forceinline__ void rotate_q_row(float (&qv)[kHeadDim / 4], const float2* angles, bool neox, int t) {
  auto rotate = [](float& x0, float& x1, float2 cs) {
    const float y0 = x0 * cs.x - x1 * cs.y, y1 = x0 * cs.y + x1 * cs.x;
    x0 = y0, x1 = y1;
  };
  if (neox) {
#pragma unroll
    for (int j = 0; j < kHeadDim / 8; ++j) {  // dims below kHeadDim / 2, each with its partner
      const int d = 16 * (j / 4) + 8 * ((j / 2) % 2) + 2 * t + j % 2;
      rotate(qv[j], qv[j + kHeadDim / 8], angles[d]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kHeadDim / 4; j += 2) {
      const int d = 16 * (j / 4) + 8 * ((j / 2) % 2) + 2 * t;
      rotate(qv[j], qv[j + 1], angles[d / 2]);
    }
  }
}

// Copies slots [slot0, slot0 + 64) of one KV head of K and V into a stage; slots >= end are
// zero-filled (P is 0 there, and 0 * garbage could be NaN).
template <int kHeadDim>
__device__ __forceinline__ void load_kv_tile(const PrefillParams& p, int kv_head, int slot0, int end,
                                             __half* ks, __half* vs) {
  using T = Tile<kHeadDim>;
#pragma unroll
  for (int i = 0; i < T::kChunksPerThread; ++i) {
    const int c = threadIdx.x + i * kThreads;
    const int row = c / T::kChunksPerRow, chunk = c % T::kChunksPerRow;
    const int slot = slot0 + row;
    const bool valid = slot < end;
    const int64_t at =
        (static_cast<int64_t>(valid ? slot : 0) * p.n_head_kv + kv_head) * kHeadDim + chunk * 8;
    cp_async_16(ks + row * T::kStride + chunk * 8, p.k + at, valid ? 16 : 0);
    cp_async_16(vs + row * T::kStride + chunk * 8, p.v + at, valid ? 16 : 0);
  }
}

template <int kHeadDim>
__global__ void __launch_bounds__(kThreads, 2) prefill_attention_kernel(PrefillParams p) {
  using T = Tile<kHeadDim>;
  constexpr int kSteps = kHeadDim / 16;    // mma k-steps over head dims (S = Q K^T)
  constexpr int kDimTiles = kHeadDim / 8;  // mma n-tiles over head dims (O = P V)
  constexpr int kSlotTiles = kSlots / 8;   // mma n-tiles over the slots of a tile
  extern __shared__ __align__(16) unsigned char smem_bytes[];
  __half* smem = reinterpret_cast<__half*>(smem_bytes);  // stage s: K at 2s, V at 2s + 1 (x kHalves)

  pdl_start();
  const int head = blockIdx.x;
  const int kv_head = head / (p.n_head / p.n_head_kv);
  // The last query tiles see the most slots: they go first, so the short ones fill the tail.
  const int64_t tile = gridDim.y - 1 - blockIdx.y;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int g = lane / 4, t = lane % 4;
  const int64_t row0 = tile * kQueryRows + warp * 16;                        // this warp's first query
  const int last[2] = {last_slot(p, row0 + g), last_slot(p, row0 + g + 8)};  // rows g, g + 8
  const int first[2] = {first_slot(p, last[0]), first_slot(p, last[1])};

  // Slots this block and this warp must read: up to the largest last slot of their queries,
  // from the smallest first one.
  int warp_end = max(last[0], last[1]) + 1;
  int warp_begin = min(first[0], first[1]);
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    warp_end = max(warp_end, __shfl_xor_sync(0xffffffffu, warp_end, o));
    warp_begin = min(warp_begin, __shfl_xor_sync(0xffffffffu, warp_begin, o));
  }
  __shared__ int warp_ends[kWarps], warp_begins[kWarps];
  if (lane == 0) warp_ends[warp] = warp_end, warp_begins[warp] = warp_begin;

  // Q fragments (A operand), fp16, pre-scaled: a0 (row g, dims 16s + 2t), a1 (row g + 8),
  // a2 / a3 the same at dims 16s + 8 + 2t. Rows past the chunk are zeros (and fully masked).
  uint32_t qf[kSteps][4];
  {
    float qv[2][kHeadDim / 4];  // rows g, g + 8 (rotate_q_row's order)
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int64_t token = row0 + g + 8 * r;
      const float* qrow = token < p.n_tokens ? p.q + (token * p.n_head + head) * kHeadDim : nullptr;
#pragma unroll
      for (int j = 0; j < kHeadDim / 4; j += 2) {
        const float2 v = qrow ? *reinterpret_cast<const float2*>(qrow + 16 * (j / 4) + 8 * ((j / 2) % 2) + 2 * t)
                              : make_float2(0.0f, 0.0f);
        qv[r][j] = v.x, qv[r][j + 1] = v.y;
      }
      if (qrow && p.angles) rotate_q_row<kHeadDim>(qv[r], p.angles + token * (kHeadDim / 2), p.neox, t);
    }
#pragma unroll
    for (int s = 0; s < kSteps; ++s)
#pragma unroll
      for (int i = 0; i < 4; ++i) {  // a0..a3: row i % 2, dims 16 s + 8 (i / 2) + 2 t, + 1
        const float* v = qv[i % 2] + 4 * s + 2 * (i / 2);
        qf[s][i] = pack_half2(v[0] * p.scale_log2, v[1] * p.scale_log2);
      }
  }
  __syncthreads();
  int end = 0, begin = INT32_MAX;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) end = max(end, warp_ends[w]), begin = min(begin, warp_begins[w]);
  const int n_tiles = (end + kSlots - 1) / kSlots;
  const int first_tile = min(begin / kSlots, n_tiles);

  float o[kDimTiles][4];
#pragma unroll
  for (int j = 0; j < kDimTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // this thread's part of the row's sum (4 lanes share a row)

  // ldmatrix addresses inside a tile: lane l gives row l % 8 of matrix l / 8.
  const int mi = lane / 8, mr = lane % 8;
  // K as the B operand of S (k = dims, n = slots): matrices (slots +0, dims +0), (+0, +8),
  // (+8, +0), (+8, +8) -> b0, b1 of slot tile 2n, then of slot tile 2n + 1.
  const int k_off = ((mi / 2) * 8 + mr) * T::kStride + (mi % 2) * 8;
  // V as the B operand of O (k = slots, n = dims), transposed: matrices (slots +0, dims +0),
  // (+8, +0), (+0, +8), (+8, +8) -> b0, b1 of dim tile 2n, then of dim tile 2n + 1.
  const int v_off = ((mi % 2) * 8 + mr) * T::kStride + (mi / 2) * 8;

  if (first_tile < n_tiles) {
    __half* stage = smem + (first_tile % kStages) * 2 * T::kHalves;
    load_kv_tile<kHeadDim>(p, kv_head, first_tile * kSlots, end, stage, stage + T::kHalves);
  }
  cp_async_commit();
  for (int it = first_tile; it < n_tiles; ++it) {
    if (it + 1 < n_tiles) {
      __half* next = smem + ((it + 1) % kStages) * 2 * T::kHalves;
      load_kv_tile<kHeadDim>(p, kv_head, (it + 1) * kSlots, end, next, next + T::kHalves);
    }
    cp_async_commit();
    cp_async_wait<1>();  // this tile's group has landed (the next one may still be in flight)
    __syncthreads();
    const __half* ks = smem + (it % kStages) * 2 * T::kHalves;
    const __half* vs = ks + T::kHalves;
    const int slot0 = it * kSlots;
    if (slot0 < warp_end && slot0 + kSlots > warp_begin) {
      // S = Q K^T: 16 rows x 64 slots, base-2 scores.
      float s[kSlotTiles][4];
#pragma unroll
      for (int j = 0; j < kSlotTiles; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
      for (int st = 0; st < kSteps; ++st)
#pragma unroll
        for (int n = 0; n < kSlotTiles / 2; ++n) {
          uint32_t b[4];
          ldmatrix_x4<false>(b, ks + n * 16 * T::kStride + st * 16 + k_off);
          mma_16816(s[2 * n], qf[st], b[0], b[1]);
          mma_16816(s[2 * n + 1], qf[st], b[2], b[3]);
        }
      // Causal mask, only where some slot of the tile is past some query of the warp (or, with
      // a window, before some query's first slot).
      if (slot0 + kSlots - 1 > min(last[0], last[1]) || slot0 < max(first[0], first[1])) {
#pragma unroll
        for (int j = 0; j < kSlotTiles; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int slot = slot0 + 8 * j + 2 * t + (e & 1);
            if (slot > last[e / 2] || slot < first[e / 2]) s[j][e] = -INFINITY;
          }
      }
      // Online softmax per row r (C regs 2r, 2r + 1): new max over the 4 lanes of the row,
      // rescale what was accumulated, exponentiate.
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = row_max[r];
#pragma unroll
        for (int j = 0; j < kSlotTiles; ++j) mx = fmaxf(mx, fmaxf(s[j][2 * r], s[j][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        // A row that has seen no slot yet keeps max -inf; subtract 0 instead so 2^(-inf) = 0, not NaN.
        const float ref = mx == -INFINITY ? 0.0f : mx;
        const float corr = fast_exp2(row_max[r] - ref);
        row_max[r] = mx;
        row_sum[r] *= corr;
#pragma unroll
        for (int j = 0; j < kDimTiles; ++j) o[j][2 * r] *= corr, o[j][2 * r + 1] *= corr;
#pragma unroll
        for (int j = 0; j < kSlotTiles; ++j) {
          s[j][2 * r] = fast_exp2(s[j][2 * r] - ref);
          s[j][2 * r + 1] = fast_exp2(s[j][2 * r + 1] - ref);
          row_sum[r] += s[j][2 * r] + s[j][2 * r + 1];
        }
      }
      // O += P V: P's A fragment for slots 16k..16k+15 is S's C of slot tiles 2k, 2k + 1.
#pragma unroll
      for (int kk = 0; kk < kSlots / 16; ++kk) {
        const uint32_t pa[4] = {
            pack_half2(s[2 * kk][0], s[2 * kk][1]), pack_half2(s[2 * kk][2], s[2 * kk][3]),
            pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
        for (int n = 0; n < kDimTiles / 2; ++n) {
          uint32_t b[4];
          ldmatrix_x4<true>(b, vs + kk * 16 * T::kStride + n * 16 + v_off);
          mma_16816(o[2 * n], pa, b[0], b[1]);
          mma_16816(o[2 * n + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the stage just read is the one the next iteration loads into
  }

  // out = O / sum for the rows of the chunk; a row that saw no slot gives zeros.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int64_t token = row0 + g + 8 * r;
    if (token >= p.n_tokens) continue;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    float* dst = p.out + (token * p.n_head + head) * kHeadDim;
#pragma unroll
    for (int j = 0; j < kDimTiles; ++j)
      *reinterpret_cast<float2*>(dst + 8 * j + 2 * t) = make_float2(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
  }
}

template <int kHeadDim>
void launch_for(const PrefillParams& pp, cudaStream_t stream) {
  // Above 48 KB of dynamic shared memory a kernel must opt in, once per process and device.
  static const cudaError_t opted_in =
      cudaFuncSetAttribute(prefill_attention_kernel<kHeadDim>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(Tile<kHeadDim>::kSmemBytes));
  (void)opted_in;  // an error shows at the launch
  const dim3 grid(static_cast<unsigned>(pp.n_head),
                  static_cast<unsigned>((pp.n_tokens + kQueryRows - 1) / kQueryRows));
  launch_pdl(prefill_attention_kernel<kHeadDim>, grid, dim3(kThreads), Tile<kHeadDim>::kSmemBytes, stream,
             pp);
}

}  // namespace

bool prefill_attention_applies(const AttentionLaunch& p) {
  return p.cache_f16 && (p.head_dim == 64 || p.head_dim == 128) && p.n_head_kv > 0 &&
         p.n_head % p.n_head_kv == 0 && p.n_tokens > 0 && p.n_tokens <= int64_t{65535} * kQueryRows &&
         p.n_ctx > 0 && p.n_ctx <= INT32_MAX;
}

void launch_prefill_attention(const float* q, const void* k_cache, const void* v_cache,
                              const int32_t* positions, const AttentionLaunch& p, float* out,
                              cudaStream_t stream, const PrefillRope& rope) {
  const PrefillParams pp{q,
                         static_cast<const __half*>(k_cache),
                         static_cast<const __half*>(v_cache),
                         positions,
                         out,
                         p.n_head,
                         p.n_head_kv,
                         p.n_tokens,
                         p.n_ctx,
                         p.scale * kLog2e,
                         rope.angles,
                         rope.neox,
                         p.window};
  if (p.head_dim == 64)
    launch_for<64>(pp, stream);
  else
    launch_for<128>(pp, stream);
}

}  // namespace bl::cuda
