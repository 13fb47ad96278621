// Causal attention over the KV cache, split-KV (FlashDecoding) with GQA head grouping.
//
// Grid (n_head_kv * groups, n_tokens, n_splits): a block owns one KV head, up to kMaxGroup of
// the query heads that share it, one token and one slice of the cache slots, so each K/V row
// is read once for the whole group. Its 4 warps take every 4th slot; head_dim / 8 lanes (rounded
// up to 8, 16 or 32) share a K/V row, 8 dims a lane (one 16-byte load at f16), so a warp reads
// 4, 2 or 1 rows a load; a slot's score is reduced over its lanes and folded into a running
// (max, sum, acc) per query (online softmax). The warps merge in shared memory; with several
// splits the block writes an unnormalised partial and attention_combine_kernel does the one
// fixup pass, or (AttentionSums, one token) adds its share scaled to a common exponent into
// sums that the output projection's GEMV divides, with no fixup kernel.
//
// Napkin math: decode at 8k context, 8B shape: K+V of one layer = 8 heads x 128 x 2 x 8192 x
// 2 B = 32 MB -> ~11 us at 3 TB/s, needing >= 132 blocks in flight: 8 KV heads x 32 splits.
// Prefill uses the same kernel with one split (each token re-reads its prefix from L2); a
// FlashAttention-2-style tiled tensor-core kernel is the planned replacement (docs/cuda.md).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <type_traits>

#include "kernels/cuda/block_trace.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rope.cuh"

namespace bl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kAttnWarps = 4;
constexpr int kAttnThreads = kAttnWarps * kWarp;
constexpr int kMaxGroup = 8;  // query heads per block
// Slots per split at least: small enough that a decode step at a few hundred tokens of context
// still fills the SMs (measured on an H100, 1B shape at 640 slots: 256 gave 3 splits, 24 blocks,
// 51 us per call under ncu, the largest kernel of the step).
constexpr int kSlotsPerSplitMin = 32;

struct AttnParams {
  const float* q;  // [head_dim, n_head, n_tokens]
  const void* k;   // [head_dim, n_head_kv, n_ctx]
  const void* v;
  const int32_t* positions;
  int n_head, n_head_kv, head_dim, groups_per_kv;
  float scale;
  int64_t n_tokens, n_ctx;
  int n_splits;
  float* partial_acc;  // [n_splits, n_tokens, n_head, head_dim]
  float* partial_ml;   // [n_splits, n_tokens, n_head, 2]
  float* out;          // [head_dim, n_head, n_tokens]
  int64_t seq_slots;   // > 0: token t's cache is slots [t * seq_slots, (t + 1) * seq_slots)
  // With the rope (attention_kernel<.., kRope>, launch_rope_attention: one token of one
  // sequence, one query group per KV head): q and k_new, v_new [head_dim, n_head_kv] as the QKV
  // matmul wrote them, rotated here; k_new (rotated) and v_new go into the caches at slot
  // positions[0] (= the cache row: no seq_slots) by the block whose slots hold it.
  const float* k_new;
  const float* v_new;
  RopeLaunch rope;
  bool kv_loads_early;  // AttentionLaunch::kv_loads_early, checked against the shape
  // AttentionSumsLaunch: sums.buffer non-null = add into it (one token, n_splits > 1, out unused).
  AttentionSums sums;
  float* clear;
  int64_t clear_floats;
  int window;  // AttentionLaunch::window
  block_trace::Slot trace;  // set by the launch (trace builds: block_trace.h)
};

// Asks L2 for the K and V rows of kv_head at slots [begin, stop) (from base_slot): issued
// before pdl_wait, their DRAM latency overlaps the kernel before. Safe to issue early: rows
// a predecessor still writes (the current token's) are only read after the wait, and L2 is
// the point of coherence, so a line fetched early is updated in place by the write.
__device__ __forceinline__ void prefetch_rows_l2(const AttnParams& p, int kv_head, int64_t base_slot, int64_t begin,
                                                 int64_t stop, int elem_bytes) {
  constexpr int kLine = 128;
  const int64_t row_bytes = static_cast<int64_t>(p.head_dim) * elem_bytes;
  const int64_t lines = (row_bytes + kLine - 1) / kLine;
  for (int64_t j = threadIdx.x; j < (stop - begin) * lines; j += kAttnThreads) {
    const int64_t slot = begin + j / lines, line = j % lines;
    const int64_t at = ((base_slot + slot) * p.n_head_kv + kv_head) * row_bytes + line * kLine;
    asm volatile("prefetch.global.L2 [%0];" ::"l"(static_cast<const char*>(p.k) + at));
    asm volatile("prefetch.global.L2 [%0];" ::"l"(static_cast<const char*>(p.v) + at));
  }
}

// Up to 8 consecutive values of a K or V row: one 16-byte load (f16) or two (f32) where the
// row's values are 16-byte aligned (head_dim % 8 == 0), else one load a value. n = how many of
// the 8 exist (fewer at the end of a row whose head_dim is not a multiple of 8; <= 0: none).
template <bool kF16>
struct Values8 {
  uint4 raw[kF16 ? 1 : 2];
};
template <bool kF16>
__device__ __forceinline__ void load_values8(const void* cache, int64_t at, int n, bool aligned, Values8<kF16>& out) {
  if (n >= 8 && aligned) {
    const uint4* src = reinterpret_cast<const uint4*>(static_cast<const char*>(cache) + at * (kF16 ? 2 : 4));
#pragma unroll
    for (int i = 0; i < (kF16 ? 1 : 2); ++i) out.raw[i] = src[i];
    return;
  }
#pragma unroll
  for (int i = 0; i < (kF16 ? 1 : 2); ++i) out.raw[i] = make_uint4(0u, 0u, 0u, 0u);
  if constexpr (kF16) {
    const unsigned short* src = static_cast<const unsigned short*>(cache) + at;
    unsigned int w[4] = {0u, 0u, 0u, 0u};
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (k < n) w[k / 2] |= static_cast<unsigned int>(src[k]) << (16 * (k % 2));
    out.raw[0] = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
    const unsigned int* src = static_cast<const unsigned int*>(cache) + at;
    unsigned int w[8] = {0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u};
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (k < n) w[k] = src[k];
    out.raw[0] = make_uint4(w[0], w[1], w[2], w[3]);
    out.raw[1] = make_uint4(w[4], w[5], w[6], w[7]);
  }
}

template <bool kF16>
__device__ __forceinline__ void to_floats8(const Values8<kF16>& v, float (&f)[8]) {
  if constexpr (kF16) {
    const unsigned int w[4] = {v.raw[0].x, v.raw[0].y, v.raw[0].z, v.raw[0].w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 pair = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
      f[2 * i] = pair.x, f[2 * i + 1] = pair.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      f[4 * i] = __uint_as_float(v.raw[i].x), f[4 * i + 1] = __uint_as_float(v.raw[i].y);
      f[4 * i + 2] = __uint_as_float(v.raw[i].z), f[4 * i + 3] = __uint_as_float(v.raw[i].w);
    }
  }
}

// e^x by the special-function unit (ex2.approx; relative error ~2^-22 over the softmax's
// range x <= 0, e^-inf = 0): the accurate expf is ~10 instructions, and a warp of this kernel
// takes ~20 of them a batch.
__device__ __forceinline__ float exp_fast(float x) { return exp2f(x * 1.4426950408889634f); }

// at[0 .. n) += v[0 .. n) atomically, n = 4 (at 16-byte aligned) or 1: one vector atomic for 4
// on sm_90 (red.global.add.v4.f32), else one a value.
__device__ __forceinline__ void add_floats(float* at, const float (&v)[4], int n) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (n == 4) {
    atomicAdd(reinterpret_cast<float4*>(at), make_float4(v[0], v[1], v[2], v[3]));
    return;
  }
#endif
#pragma unroll
  for (int k = 0; k < 4; ++k)
    if (k < n) atomicAdd(at + k, v[k]);
}

// kLanes lanes share one K/V row (8 dims a lane: 8 * kLanes >= head_dim), so a warp reads
// kWarp / kLanes rows per load, and each score needs log2(kLanes) shuffles instead of the 5 of a
// row spread over the warp. kGroup >= the block's query heads (1, 2, 4, 8): the loops over the
// group are as long as the heads it has, so registers and code stay in proportion (one 8-head
// shape for all cost ~200 registers, 2 blocks an SM, and 9k instructions of code whose
// instruction-cache misses were 30 % of the stall samples at 8B, ncu 2026-11-24). kRope: q and
// the new k, v come unrotated from the QKV matmul (AttnParams::k_new); the kernel rotates them
// (as rope_kv_store_kernel, rope.cuh: angles in fp64) and stores the new k, v in the caches itself.
template <int kLanes, int kGroup, bool kF16, bool kRope>
__global__ void __launch_bounds__(kAttnThreads) attention_kernel(AttnParams p) {
  constexpr int kRows = kWarp / kLanes;  // slots a warp reads with one load
  // Loads a lane issues a batch: ~8 slots a warp at f16 (4 at f32 or 8 query heads: registers),
  // all in flight before the first score, so a split of ~30 slots costs ~1 memory round trip.
  constexpr int kSlotsPerWarp = (kF16 ? 8 : 4) / (kGroup >= 8 ? 2 : 1);
  constexpr int kLoads = kSlotsPerWarp / kRows > 0 ? kSlotsPerWarp / kRows : 1;
  constexpr int kBatch = kAttnWarps * kRows * kLoads;  // slots a block takes a batch
  constexpr int kMaxDim = 8 * kLanes;
  const int kv_head = blockIdx.x / p.groups_per_kv;
  const int group = blockIdx.x % p.groups_per_kv;
  const int64_t t = blockIdx.y;
  const int split = blockIdx.z;
  const int heads_per_kv = p.n_head / p.n_head_kv;
  const int g0 = group * kMaxGroup;
  const int n_g = min(kMaxGroup, heads_per_kv - g0);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int row = lane / kLanes;       // which of the warp's kRows slots of a load
  const int dim0 = 8 * (lane % kLanes);  // the lane's 8 dims of that row
  const int n_dims = min(8, p.head_dim - dim0);
  const bool aligned = p.head_dim % 8 == 0;
  block_trace::mark(p.trace, block_trace::Kernel::attention, block_trace::Point::enter, p.k);

  // One sequence per token (seq_slots > 0): its cache region starts at slot t * seq_slots and
  // n_ctx is that region's size.
  const int64_t base_slot = p.seq_slots > 0 ? t * p.seq_slots : 0;
  // The slots the token sees, [first, end) ([0, end) without a window), cut into n_splits equal
  // ranges: by its position, not by the cache size, so every split has work at any context
  // length (the decode graph is captured once and replayed at every position; cut by the
  // capacity, a 4096-slot cache at 600 tokens of context left 28 of 33 splits idle and 5 with
  // 125 slots each instead of 33 with ~19).
  const int64_t pos = p.positions[t];
  const int64_t end = pos < 0 ? 0 : min(pos + 1, p.n_ctx);
  const int64_t first = p.window > 0 ? max(int64_t{0}, end - p.window) : 0;
  const int64_t per_split = (end - first + p.n_splits - 1) / p.n_splits;
  const int64_t begin = min(end, first + split * per_split);
  const int64_t stop = min(begin + per_split, end);

  // The slot of a lane's load j in the batch from b0: the block's warps take every 4th slot,
  // so the warp's first slot of a batch is b0 + warp.
  auto slot_of = [&](int64_t b0, int j) {
    return b0 + static_cast<int64_t>((j * kRows + row) * kAttnWarps + warp);
  };
  Values8<kF16> kv_k[kLoads], kv_v[kLoads];
  // With kRope the token's own K/V row, as the caches hold it (rotated k; f16 or f32), for the
  // block whose slots include it: its loads take that row from here instead of from the cache it
  // has just written (a global round trip after the barrier).
  using CacheValue = std::conditional_t<kF16, __half, float>;
  __shared__ __align__(16) CacheValue own_k_sh[kRope ? kMaxDim : 1], own_v_sh[kRope ? kMaxDim : 1];
  // Loads the lane's rows of the batch from b0; slots past stop read a valid row (the last
  // one), their scores are masked below. Own::skip leaves the token's own slot for later,
  // Own::only loads just that one (from own_k_sh / own_v_sh with kRope).
  enum class Own { load, skip, only };
  auto load_batch = [&](int64_t b0, Own own) {
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      const int64_t s = min(slot_of(b0, j), stop - 1);
      if ((own == Own::skip && s == pos) || (own == Own::only && s != pos)) continue;
      if (kRope && own == Own::only) {
        load_values8<kF16>(own_k_sh, dim0, n_dims, aligned, kv_k[j]);
        load_values8<kF16>(own_v_sh, dim0, n_dims, aligned, kv_v[j]);
        continue;
      }
      const int64_t at = ((base_slot + s) * p.n_head_kv + kv_head) * p.head_dim + dim0;
      load_values8<kF16>(p.k, at, n_dims, aligned, kv_k[j]);
      load_values8<kF16>(p.v, at, n_dims, aligned, kv_v[j]);
    }
  };

  // Before the wait: nothing the kernel before writes (positions come from the host before the
  // step's first kernel; the rope angles depend on them only). At one token per sequence that
  // includes the K/V rows of every slot but the token's own: the first batch is loaded into
  // registers now, so its round trip overlaps the kernel before instead of following it; the
  // later batches are asked of L2. With sums, slot 0's K row too (phi = q . k_0, below), unless
  // slot 0 is the own slot.
  const bool early = p.kv_loads_early && begin + warp < stop;
  if (early) load_batch(begin, Own::skip);
  prefetch_rows_l2(p, kv_head, base_slot, early ? min(stop, begin + kBatch) : begin, stop, kF16 ? 2 : 4);
  const bool sums = p.sums.buffer != nullptr && begin < stop;
  const bool k0_early = sums && p.kv_loads_early && pos != 0;
  Values8<kF16> k0;
  if (k0_early) load_values8<kF16>(p.k, static_cast<int64_t>(kv_head) * p.head_dim + dim0, n_dims, aligned, k0);
  __shared__ float cos_sh[kAttentionMaxHeadDim / 2], sin_sh[kAttentionMaxHeadDim / 2];
  __shared__ __align__(16) float q_sh[kRope ? kGroup : 1][kRope ? kMaxDim : 1];
  __shared__ float own_k_new_sh[kRope ? kMaxDim : 1];
  const int half = p.rope.n_dims / 2;
  if constexpr (kRope) {
    for (int i = threadIdx.x; i < half; i += kAttnThreads) rope_cos_sin(static_cast<double>(pos), i, p.rope, cos_sh[i], sin_sh[i]);
  }
  pdl_start();
  block_trace::mark(p.trace, block_trace::Kernel::attention, block_trace::Point::waited, p.k);
  // The other sums buffer: its GEMV completed before the kernel before this one did.
  if (p.clear) {
    const int64_t blocks = static_cast<int64_t>(gridDim.x) * gridDim.y * gridDim.z;
    const int64_t b = blockIdx.x + gridDim.x * (blockIdx.y + static_cast<int64_t>(gridDim.y) * blockIdx.z);
    for (int64_t i = b * kAttnThreads + threadIdx.x; i < p.clear_floats; i += blocks * kAttnThreads) p.clear[i] = 0.0f;
  }
  const float* q_head0 = p.q + (t * p.n_head + kv_head * heads_per_kv + g0) * p.head_dim;
  if constexpr (kRope) {
    // In one round trip: the group's q heads, and for the block whose slots hold the token's own
    // slot its new k and v; then q and k rotated in shared memory, k and v stored to the caches
    // (for later tokens) and kept in own_k_sh / own_v_sh (for this one).
    const bool own_slot = pos >= begin && pos < stop;
    for (int idx = threadIdx.x; idx < n_g * p.head_dim; idx += kAttnThreads)
      q_sh[idx / p.head_dim][idx % p.head_dim] = q_head0[idx];
    if (own_slot) {
      const int64_t from = static_cast<int64_t>(kv_head) * p.head_dim;
      for (int e = threadIdx.x; e < p.head_dim; e += kAttnThreads) {
        own_k_new_sh[e] = p.k_new[from + e];
        own_v_sh[e] = static_cast<CacheValue>(p.v_new[from + e]);
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < (n_g + (own_slot ? 1 : 0)) * half; idx += kAttnThreads) {
      const int g = idx / half, i = idx % half;
      const int i0 = rope_first(i, p.rope.neox), i1 = rope_second(i, half, p.rope.neox);
      const float sn = sin_sh[i], cs = cos_sh[i];
      float* x = g < n_g ? q_sh[g] : own_k_new_sh;
      const float x0 = x[i0], x1 = x[i1];
      x[i0] = x0 * cs - x1 * sn;
      x[i1] = x0 * sn + x1 * cs;
    }
    __syncthreads();  // q_sh and own_k_new_sh rotated
    if (own_slot) {
      const int64_t at = (pos * p.n_head_kv + kv_head) * p.head_dim;
      for (int e = threadIdx.x; e < p.head_dim; e += kAttnThreads) {
        own_k_sh[e] = static_cast<CacheValue>(own_k_new_sh[e]);
        static_cast<CacheValue*>(const_cast<void*>(p.k))[at + e] = own_k_sh[e];
        static_cast<CacheValue*>(const_cast<void*>(p.v))[at + e] = own_v_sh[e];
      }
      __syncthreads();  // own_k_sh written (block-uniform branch)
    }
  }
  // Slot 0's K row for phi when it is the own slot (position 0): from own_k_sh with kRope, else
  // from the cache the kernel before wrote.
  if (sums && !k0_early) {
    if (kRope && pos == 0) load_values8<kF16>(own_k_sh, dim0, n_dims, aligned, k0);
    else load_values8<kF16>(p.k, static_cast<int64_t>(kv_head) * p.head_dim + dim0, n_dims, aligned, k0);
  }

  // The lane's 8 dims of each query head, scaled (0 for heads past n_g and dims past head_dim).
  float q[kGroup][8];
#pragma unroll
  for (int g = 0; g < kGroup; ++g)
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const float* qh = kRope ? &q_sh[kRope ? g : 0][0] : q_head0 + static_cast<int64_t>(g) * p.head_dim;
      q[g][k] = g < n_g && k < n_dims ? qh[dim0 + k] * p.scale : 0.0f;
    }

  // Online softmax: m is the warp's running max (the same in every lane), l and acc each row's
  // share of the sums (the kRows rows of a warp are added after the loop).
  float m[kGroup], l[kGroup], acc[kGroup][8];
#pragma unroll
  for (int g = 0; g < kGroup; ++g) {
    m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[g][k] = 0.0f;
  }

  // The own slot of an early first batch, now that it is written (by the kernel before, or
  // above with kRope: visible after the block's barrier). It is the last slot a token sees, so
  // it lies in this split only as stop - 1, which is also the row the batch's masked entries
  // read (their P is 0, but 0 * an unloaded register could be NaN).
  if (early && pos >= begin && pos < stop) load_batch(begin, Own::only);
  block_trace::mark(p.trace, block_trace::Kernel::attention, block_trace::Point::step1, p.k);
  for (int64_t b0 = begin; b0 < stop; b0 += kBatch) {
    if (b0 + warp >= stop) break;  // the warp's first slot of the batch is past the split: no more
    if (!early || b0 != begin) load_batch(b0, Own::load);
    float score[kGroup][kLoads];
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      float kf[8];
      to_floats8<kF16>(kv_k[j], kf);
#pragma unroll
      for (int g = 0; g < kGroup; ++g) {
        float d = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; ++k) d += q[g][k] * kf[k];
        score[g][j] = d;
      }
    }
#pragma unroll
    for (int o = kLanes / 2; o > 0; o /= 2)
#pragma unroll
      for (int g = 0; g < kGroup; ++g)
#pragma unroll
        for (int j = 0; j < kLoads; ++j) score[g][j] += __shfl_xor_sync(0xffffffffu, score[g][j], o);
    bool valid[kLoads];
#pragma unroll
    for (int j = 0; j < kLoads; ++j) valid[j] = slot_of(b0, j) < stop;
    float pe[kGroup][kLoads];
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      float m_new = m[g];
#pragma unroll
      for (int j = 0; j < kLoads; ++j)
        if (valid[j]) m_new = fmaxf(m_new, score[g][j]);
#pragma unroll
      for (int o = kLanes; o < kWarp; o *= 2) m_new = fmaxf(m_new, __shfl_xor_sync(0xffffffffu, m_new, o));
      // Row 0's load 0 is the warp's first slot (< stop), so m_new is finite; m = -inf gives 0.
      const float corr = exp_fast(m[g] - m_new);
      m[g] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kLoads; ++j) {
        pe[g][j] = valid[j] ? exp_fast(score[g][j] - m_new) : 0.0f;
        sum += pe[g][j];
      }
      l[g] = l[g] * corr + sum;
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[g][k] *= corr;
    }
#pragma unroll
    for (int j = 0; j < kLoads; ++j) {
      float vf[8];
      to_floats8<kF16>(kv_v[j], vf);
#pragma unroll
      for (int g = 0; g < kGroup; ++g)
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[g][k] += pe[g][j] * vf[k];
    }
  }
  block_trace::mark(p.trace, block_trace::Kernel::attention, block_trace::Point::step2, p.k);
  // The warp's rows added: lanes with the same dims (lane % kLanes) hold the same m.
#pragma unroll
  for (int o = kLanes; o < kWarp; o *= 2)
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {
      l[g] += __shfl_xor_sync(0xffffffffu, l[g], o);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[g][k] += __shfl_xor_sync(0xffffffffu, acc[g][k], o);
    }

  __shared__ float sm_m[kAttnWarps][kGroup], sm_l[kAttnWarps][kGroup];
  __shared__ __align__(16) float sm_acc[kAttnWarps][kGroup][kMaxDim];
  __shared__ float sm_phi[kGroup];  // with sums: each query head's score of slot 0
  __shared__ float sm_weight[kAttnWarps][kGroup], sm_max[kGroup], sm_total[kGroup];
  if (sums) {
    float kf[8];
    to_floats8<kF16>(k0, kf);
#pragma unroll
    for (int g = 0; g < kGroup; ++g) {  // g a constant, so q stays in registers
      if (g % kAttnWarps != warp) continue;
      float d = 0.0f;
#pragma unroll
      for (int k = 0; k < 8; ++k) d += q[g][k] * kf[k];
#pragma unroll
      for (int o = kLanes / 2; o > 0; o /= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
      if (lane == 0) sm_phi[g] = d;
    }
  }
  if (row == 0 && n_dims > 0) {
#pragma unroll
    for (int g = 0; g < kGroup; ++g)
#pragma unroll
      for (int k = 0; k < 8; ++k)
        if (k < n_dims) sm_acc[warp][g][dim0 + k] = acc[g][k];
  }
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < kGroup; ++g) sm_m[warp][g] = m[g], sm_l[warp][g] = l[g];
  }
  __syncthreads();
  // Each head's max over the warps, the warps' weights e^(m_w - max) (0 for a warp that saw no
  // slot) and the total sum.
  if (threadIdx.x < kGroup) {
    const int g = threadIdx.x;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) mx = fmaxf(mx, sm_m[w][g]);
    float total = 0.0f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) {
      const float f = mx == -INFINITY ? 0.0f : exp_fast(sm_m[w][g] - mx);
      sm_weight[w][g] = f;
      total += sm_l[w][g] * f;
    }
    sm_max[g] = mx, sm_total[g] = total;
  }
  __syncthreads();

  // A thread takes 4 consecutive dims of a head where head_dim % 4 == 0 (else 1): the sums are
  // then added by one 16-byte atomic each (sm_90) instead of 4.
  const int piece = p.head_dim % 4 == 0 ? 4 : 1;
  for (int idx = threadIdx.x * piece; idx < n_g * p.head_dim; idx += kAttnThreads * piece) {
    const int g = idx / p.head_dim, dim = idx % p.head_dim;
    float a[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      a[k] = 0.0f;
      if (k < piece) {
#pragma unroll
        for (int w = 0; w < kAttnWarps; ++w) a[k] += sm_weight[w][g] * sm_acc[w][g][dim + k];
      }
    }
    const float mx = sm_max[g], sum = sm_total[g];
    const int64_t head = kv_head * heads_per_kv + g0 + g;
    const int64_t th = t * p.n_head + head;
    if (p.n_splits == 1) {
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (k < piece) p.out[th * p.head_dim + dim + k] = sum > 0.0f ? a[k] / sum : 0.0f;
    } else if (p.sums.buffer) {
      // One token (th = head). A block that saw slots adds its share at the common exponent, or,
      // more than kAttentionSumsMaxExponent above it, leaves its partial for the GEMV's exact
      // combine; (m, l) of every split are written for that combine to find those.
      const int64_t slot = split * p.n_head + th;
      const bool saw = mx != -INFINITY;
      const float phi = saw ? sm_phi[g] : 0.0f;
      if (saw && mx - phi <= kAttentionSumsMaxExponent) {
        const float f = expf(mx - phi);
#pragma unroll
        for (int k = 0; k < 4; ++k) a[k] *= f;
        add_floats(p.sums.num() + th * p.head_dim + dim, a, piece);
        if (dim == 0) atomicAdd(p.sums.den() + th, sum * f);
      } else if (saw) {
#pragma unroll
        for (int k = 0; k < 4; ++k)
          if (k < piece) p.partial_acc[slot * p.head_dim + dim + k] = a[k];
        if (dim == 0) atomicAdd(p.sums.overflowed() + th, 1);
      }
      if (dim == 0) {
        p.partial_ml[2 * slot] = mx, p.partial_ml[2 * slot + 1] = sum;
        if (split == 0 && saw) p.sums.phi()[th] = phi;
      }
    } else {
      const int64_t slot = split * p.n_tokens * p.n_head + th;
#pragma unroll
      for (int k = 0; k < 4; ++k)
        if (k < piece) p.partial_acc[slot * p.head_dim + dim + k] = a[k];
      if (dim == 0) p.partial_ml[2 * slot] = mx, p.partial_ml[2 * slot + 1] = sum;
    }
  }
  block_trace::mark_exit(p.trace, block_trace::Kernel::attention, p.k);
}

// Grid (n_head, n_tokens), kCombineThreads threads: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
// The first warp reads the splits' (m, l) side by side (lane s and s + 32) and leaves the
// weights e^(m_s - M) in shared memory; then each thread sums its dims over the splits with
// the loads unrolled. (Before: a loop of 2 x n_splits dependent loads, ~7.5 us a call at 17
// splits under ncu for 17 KB of partials.)
constexpr int kCombineThreads = 128;
__global__ void __launch_bounds__(kCombineThreads) attention_combine_kernel(AttnParams p) {
  static_assert(kAttentionMaxSplits <= 2 * kWarp, "the first warp reads two splits per lane");
  pdl_start_next_early();  // the O GEMV after this one may start its weight loads
  const int64_t th = static_cast<int64_t>(blockIdx.y) * p.n_head + blockIdx.x;
  const int64_t stride = p.n_tokens * p.n_head;
  __shared__ float weight[kAttentionMaxSplits];  // e^(m_s - M), 0 for splits that saw no slot
  __shared__ float total;                        // sum_s l_s e^(m_s - M)
  if (threadIdx.x < kWarp) {
    const int lane = threadIdx.x;
    float ms[2], ls[2], mx = -INFINITY;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int s = lane + kWarp * h;
      ms[h] = s < p.n_splits ? p.partial_ml[2 * (s * stride + th)] : -INFINITY;
      ls[h] = s < p.n_splits ? p.partial_ml[2 * (s * stride + th) + 1] : 0.0f;
      if (ls[h] > 0.0f) mx = fmaxf(mx, ms[h]);
    }
#pragma unroll
    for (int o = kWarp / 2; o > 0; o /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float w = ls[h] > 0.0f ? expf(ms[h] - mx) : 0.0f;
      sum += ls[h] * w;
      if (lane + kWarp * h < kAttentionMaxSplits) weight[lane + kWarp * h] = w;
    }
#pragma unroll
    for (int o = kWarp / 2; o > 0; o /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) total = sum;
  }
  __syncthreads();
  for (int dim = threadIdx.x; dim < p.head_dim; dim += kCombineThreads) {
    // Fully unrolled over the most splits, predicated: every load is issued before the sum
    // needs the first (a runtime-bound loop issued them 8 at a time: 3 round trips at 17).
    float v[kAttentionMaxSplits];
#pragma unroll
    for (int s = 0; s < kAttentionMaxSplits; ++s)
      v[s] = s < p.n_splits ? p.partial_acc[(s * stride + th) * p.head_dim + dim] : 0.0f;
    float a = 0.0f;
#pragma unroll
    for (int s = 0; s < kAttentionMaxSplits; ++s) {
      const float w = s < p.n_splits ? weight[s] : 0.0f;
      a += w > 0.0f ? w * v[s] : 0.0f;
    }
    p.out[th * p.head_dim + dim] = total > 0.0f ? a / total : 0.0f;
  }
}

template <int kLanes, bool kRope>
void launch_lanes(const AttnParams& ap, dim3 grid, bool f16, int heads_per_block, cudaStream_t stream) {
  auto pick = [&](auto kernel_f16, auto kernel_f32) {
    AttnParams traced = ap;
    traced.trace = block_trace::next_slot();
    launch_pdl(f16 ? kernel_f16 : kernel_f32, grid, dim3(kAttnThreads), 0, stream, traced);
  };
  if (heads_per_block <= 1) pick(attention_kernel<kLanes, 1, true, kRope>, attention_kernel<kLanes, 1, false, kRope>);
  else if (heads_per_block <= 2) pick(attention_kernel<kLanes, 2, true, kRope>, attention_kernel<kLanes, 2, false, kRope>);
  else if (heads_per_block <= 4) pick(attention_kernel<kLanes, 4, true, kRope>, attention_kernel<kLanes, 4, false, kRope>);
  else pick(attention_kernel<kLanes, 8, true, kRope>, attention_kernel<kLanes, 8, false, kRope>);
}

// launch_attention, or with ap.k_new set launch_rope_attention.
template <bool kRope>
void launch_split_kv(const AttnParams& ap, const AttentionLaunch& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.n_head_kv * ap.groups_per_kv), static_cast<unsigned>(p.n_tokens),
                  static_cast<unsigned>(ap.n_splits));
  const int heads_per_block = std::min(kMaxGroup, p.n_head / p.n_head_kv);
  if (p.head_dim <= 64) launch_lanes<8, kRope>(ap, grid, p.cache_f16, heads_per_block, stream);
  else if (p.head_dim <= 128) launch_lanes<16, kRope>(ap, grid, p.cache_f16, heads_per_block, stream);
  else launch_lanes<32, kRope>(ap, grid, p.cache_f16, heads_per_block, stream);
  if (ap.n_splits > 1 && !ap.sums.buffer) {
    const dim3 cgrid(static_cast<unsigned>(p.n_head), static_cast<unsigned>(p.n_tokens));
    launch_pdl(attention_combine_kernel, cgrid, dim3(kCombineThreads), 0, stream, ap);
  }
}

// The split-KV workspace (attention_workspace_floats): the splits' acc [n_splits, n_tokens,
// n_head, head_dim], then their (m, l) [n_splits, n_tokens, n_head, 2] from here.
float* partial_ml_of(float* workspace, const AttentionLaunch& p, int n_splits) {
  return workspace + static_cast<size_t>(n_splits) * p.n_tokens * p.n_head * p.head_dim;
}

AttnParams attn_params(const float* q, const void* k_cache, const void* v_cache, const int32_t* positions,
                       const AttentionLaunch& p, float* workspace, float* out, const AttentionSumsLaunch& sums) {
  const int heads_per_kv = p.n_head / p.n_head_kv;
  const int groups = (heads_per_kv + kMaxGroup - 1) / kMaxGroup;
  const int n_splits = std::clamp(p.n_splits, 1, kAttentionMaxSplits);
  AttnParams ap{q, k_cache, v_cache, positions, p.n_head, p.n_head_kv, p.head_dim, groups, p.scale,
                p.n_tokens, p.seq_slots > 0 ? p.seq_slots : p.n_ctx, n_splits, nullptr, nullptr, out, p.seq_slots,
                nullptr, nullptr, RopeLaunch{}, p.kv_loads_early && (p.n_tokens == 1 || p.seq_slots > 0),
                AttentionSums{}, nullptr, 0, p.window, block_trace::Slot{}};
  if (n_splits > 1) {
    ap.partial_acc = workspace;
    ap.partial_ml = partial_ml_of(workspace, p, n_splits);
  }
  if (sums.buffer && attention_sums_apply(p)) {
    ap.sums = attention_sums_view(p, workspace, sums.buffer);
    ap.clear = sums.clear;
    ap.clear_floats = sums.clear ? sums.clear_floats : 0;
  }
  return ap;
}

}  // namespace

bool attention_sums_apply(const AttentionLaunch& p) {
  return p.n_tokens == 1 && p.seq_slots == 0 && std::clamp(p.n_splits, 1, kAttentionMaxSplits) > 1;
}

AttentionSums attention_sums_view(const AttentionLaunch& p, float* workspace, float* buffer) {
  const int n_splits = std::clamp(p.n_splits, 1, kAttentionMaxSplits);
  AttentionSums s;
  s.buffer = buffer;
  s.partial_acc = workspace;
  s.partial_ml = partial_ml_of(workspace, p, n_splits);
  s.n_splits = n_splits;
  s.n_head = p.n_head;
  s.head_dim = p.head_dim;
  return s;
}

size_t attention_workspace_floats(const AttentionLaunch& p) {
  if (p.n_splits <= 1) return 0;
  return static_cast<size_t>(p.n_splits) * p.n_tokens * p.n_head * (p.head_dim + 2);
}

int attention_pick_splits(int n_head_kv, int64_t n_tokens, int64_t n_ctx, int n_sms) {
  const int64_t blocks = std::max<int64_t>(1, n_head_kv * n_tokens);
  const int64_t want = (2 * static_cast<int64_t>(n_sms) + blocks - 1) / blocks;
  const int64_t most = n_ctx / kSlotsPerSplitMin + 1;
  return static_cast<int>(std::clamp<int64_t>(std::min(want, most), 1, kAttentionMaxSplits));
}

void launch_attention(const float* q, const void* k_cache, const void* v_cache, const int32_t* positions,
                      const AttentionLaunch& p, float* workspace, float* out, cudaStream_t stream,
                      const AttentionSumsLaunch& sums) {
  if (p.n_tokens <= 0 || p.n_head <= 0) return;
  launch_split_kv<false>(attn_params(q, k_cache, v_cache, positions, p, workspace, out, sums), p, stream);
}

bool rope_attention_applies(const AttentionLaunch& p, const RopeLaunch& r) {
  return p.n_tokens == 1 && p.seq_slots == 0 && p.n_head_kv > 0 && p.n_head % p.n_head_kv == 0 &&
         p.n_head / p.n_head_kv <= kMaxGroup && r.head_dim == p.head_dim && r.n_dims > 0 && r.n_dims % 2 == 0 &&
         r.n_dims <= p.head_dim;
}

void launch_rope_attention(const float* q, const float* k, const float* v, void* k_cache, void* v_cache,
                           const int32_t* positions, const AttentionLaunch& p, const RopeLaunch& r, float* workspace,
                           float* out, cudaStream_t stream, const AttentionSumsLaunch& sums) {
  if (!rope_attention_applies(p, r) || p.n_head <= 0) return;
  AttnParams ap = attn_params(q, k_cache, v_cache, positions, p, workspace, out, sums);
  ap.k_new = k;
  ap.v_new = v;
  ap.rope = r;
  launch_split_kv<true>(ap, p, stream);
}

}  // namespace bl::cuda
