// Causal attention over the KV cache, split-KV (FlashDecoding) with GQA head grouping.
//
// Grid (n_head_kv * groups, n_tokens, n_splits): a block owns one KV head, up to kMaxGroup of
// the query heads that share it, one token and one slice of the cache slots, so each K/V row
// is read once for the whole group. Its 4 warps take every 4th slot; lane l holds head dims
// {2l, 2l+1} + 64e of each query; a slot's scores are warp-reduced and folded into a running
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

template <bool kF16>
__device__ __forceinline__ float2 load_pair(const void* base, int64_t idx) {
  if constexpr (kF16) return __half22float2(*reinterpret_cast<const __half2*>(static_cast<const __half*>(base) + idx));
  return *reinterpret_cast<const float2*>(static_cast<const float*>(base) + idx);
}

// kPairs: dim pairs per lane, 64 * kPairs >= head_dim. kRope: q and the new k, v come unrotated
// from the QKV matmul (AttnParams::k_new); the kernel rotates them (as rope_kv_store_kernel,
// rope.cuh: angles in fp64) and stores the new k, v in the caches itself.
template <int kPairs, bool kF16, bool kRope>
__global__ void __launch_bounds__(kAttnThreads) attention_kernel(AttnParams p) {
  const int kv_head = blockIdx.x / p.groups_per_kv;
  const int group = blockIdx.x % p.groups_per_kv;
  const int64_t t = blockIdx.y;
  const int split = blockIdx.z;
  const int heads_per_kv = p.n_head / p.n_head_kv;
  const int g0 = group * kMaxGroup;
  const int n_g = min(kMaxGroup, heads_per_kv - g0);
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int n_pairs = p.head_dim / 2;

  // One sequence per token (seq_slots > 0): its cache region starts at slot t * seq_slots and
  // n_ctx is that region's size.
  const int64_t base_slot = p.seq_slots > 0 ? t * p.seq_slots : 0;
  // The slots the token sees, [0, end), cut into n_splits equal ranges: by its position, not by
  // the cache size, so every split has work at any context length (the decode graph is captured
  // once and replayed at every position; cut by the capacity, a 4096-slot cache at 600 tokens of
  // context left 28 of 33 splits idle and 5 with 125 slots each instead of 33 with ~19).
  const int64_t pos = p.positions[t];
  const int64_t end = pos < 0 ? 0 : min(pos + 1, p.n_ctx);
  const int64_t per_split = (end + p.n_splits - 1) / p.n_splits;
  const int64_t begin = min(end, split * per_split);
  const int64_t stop = min(begin + per_split, end);

  // A warp's slots begin + warp + 4 i, kSlotBatch at a time: all their K and V loads are issued
  // before the first score is needed, so a split of ~30 slots costs ~1 memory round trip per
  // warp instead of ~8 (one per slot: the decode step at 512 slots of context was latency-bound,
  // 12 us per call for 2 MB of K/V, docs/cuda.md). One online-softmax correction per batch.
  constexpr int kSlotBatch = kPairs >= 4 ? 1 : 8;  // head_dim 256 would spill with more than 1
  float2 kp[kSlotBatch][kPairs], vp[kSlotBatch][kPairs];
  // Loads the batch of slots s0, s0 + 4, ..; slots past stop read a valid row (the last one),
  // their scores are masked below. Own::skip leaves the token's own slot for later, Own::only
  // loads just that one.
  enum class Own { load, skip, only };
  auto load_batch = [&](int64_t s0, Own own) {
#pragma unroll
    for (int j = 0; j < kSlotBatch; ++j) {
      const int64_t s = min(s0 + static_cast<int64_t>(kAttnWarps) * j, stop - 1);
      if ((own == Own::skip && s == pos) || (own == Own::only && s != pos)) continue;
      const int64_t row = ((base_slot + s) * p.n_head_kv + kv_head) * p.head_dim;
#pragma unroll
      for (int e = 0; e < kPairs; ++e) {
        const int pr = lane + kWarp * e;
        kp[j][e] = pr < n_pairs ? load_pair<kF16>(p.k, row + 2 * pr) : make_float2(0.0f, 0.0f);
        vp[j][e] = pr < n_pairs ? load_pair<kF16>(p.v, row + 2 * pr) : make_float2(0.0f, 0.0f);
      }
    }
  };

  // Before the wait: nothing the kernel before writes (positions come from the host before the
  // step's first kernel; the rope angles depend on them only). At one token per sequence that
  // includes the K/V rows of every slot but the token's own: the warp's first batch is loaded
  // into registers now, so its round trip overlaps the kernel before instead of following it;
  // the later batches are asked of L2.
  const int64_t first_s0 = begin + warp;
  const bool early = p.kv_loads_early && first_s0 < stop;
  if (early) load_batch(first_s0, Own::skip);
  prefetch_rows_l2(p, kv_head, base_slot, early ? min(stop, begin + kAttnWarps * kSlotBatch) : begin, stop,
                   kF16 ? 2 : 4);
  __shared__ float cos_sh[kAttentionMaxHeadDim / 2], sin_sh[kAttentionMaxHeadDim / 2];
  __shared__ float q_sh[kRope ? kMaxGroup : 1][kRope ? kAttentionMaxHeadDim : 1];
  const int half = p.rope.n_dims / 2;
  if constexpr (kRope) {
    for (int i = threadIdx.x; i < half; i += kAttnThreads) rope_cos_sin(static_cast<double>(pos), i, p.rope, cos_sh[i], sin_sh[i]);
  }
  pdl_start();
  // The other sums buffer: its GEMV completed before the kernel before this one did.
  if (p.clear) {
    const int64_t blocks = static_cast<int64_t>(gridDim.x) * gridDim.y * gridDim.z;
    const int64_t b = blockIdx.x + gridDim.x * (blockIdx.y + static_cast<int64_t>(gridDim.y) * blockIdx.z);
    for (int64_t i = b * kAttnThreads + threadIdx.x; i < p.clear_floats; i += blocks * kAttnThreads) p.clear[i] = 0.0f;
  }
  if constexpr (kRope) {
    // The group's q heads, rotated, into shared memory; the block whose slots hold the token's
    // own slot rotates its k and writes k and v there (read back below after the barrier).
    for (int idx = threadIdx.x; idx < n_g * p.head_dim; idx += kAttnThreads)
      q_sh[idx / p.head_dim][idx % p.head_dim] =
          p.q[(t * p.n_head + kv_head * heads_per_kv + g0) * p.head_dim + idx];
    __syncthreads();
    const bool own_slot = pos >= begin && pos < stop;
    for (int idx = threadIdx.x; idx < (n_g + (own_slot ? 1 : 0)) * half; idx += kAttnThreads) {
      const int g = idx / half, i = idx % half;
      const int i0 = rope_first(i, p.rope.neox), i1 = rope_second(i, half, p.rope.neox);
      const float sn = sin_sh[i], cs = cos_sh[i];
      if (g < n_g) {
        const float x0 = q_sh[g][i0], x1 = q_sh[g][i1];
        q_sh[g][i0] = x0 * cs - x1 * sn;
        q_sh[g][i1] = x0 * sn + x1 * cs;
      } else {
        const float* kh = p.k_new + static_cast<int64_t>(kv_head) * p.head_dim;
        const int64_t row = (pos * p.n_head_kv + kv_head) * p.head_dim;
        const float x0 = kh[i0], x1 = kh[i1];
        put_cache<kF16>(const_cast<void*>(p.k), row + i0, x0 * cs - x1 * sn);
        put_cache<kF16>(const_cast<void*>(p.k), row + i1, x0 * sn + x1 * cs);
      }
    }
    if (own_slot) {
      const int64_t row = (pos * p.n_head_kv + kv_head) * p.head_dim;
      const int64_t at = static_cast<int64_t>(kv_head) * p.head_dim;
      for (int e = threadIdx.x; e < p.head_dim; e += kAttnThreads) {
        if (e >= p.rope.n_dims) put_cache<kF16>(const_cast<void*>(p.k), row + e, p.k_new[at + e]);
        put_cache<kF16>(const_cast<void*>(p.v), row + e, p.v_new[at + e]);
      }
    }
    __syncthreads();  // q_sh rotated; the own slot's k, v visible to the block's loads
  }
  // With sums: slot 0's K row, for the common exponent phi = q . k_0 (loaded now, used after the
  // slots; at position 0 it is the own slot, written above with kRope or by the kernel before).
  const bool sums = p.sums.buffer != nullptr && begin < stop;
  float2 k0[kPairs];
#pragma unroll
  for (int e = 0; e < kPairs; ++e) {
    const int pr = lane + kWarp * e;
    k0[e] = sums && pr < n_pairs ? load_pair<kF16>(p.k, static_cast<int64_t>(kv_head) * p.head_dim + 2 * pr)
                                 : make_float2(0.0f, 0.0f);
  }

  float2 qv[kMaxGroup][kPairs];
  float m[kMaxGroup], l[kMaxGroup];
  float2 acc[kMaxGroup][kPairs];
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
    const float* qh = kRope ? q_sh[kRope ? g : 0] : p.q + (t * p.n_head + kv_head * heads_per_kv + g0 + g) * p.head_dim;
#pragma unroll
    for (int e = 0; e < kPairs; ++e) {
      const int pr = lane + kWarp * e;
      acc[g][e] = make_float2(0.0f, 0.0f);
      qv[g][e] = make_float2(0.0f, 0.0f);
      if (g < n_g && pr < n_pairs) qv[g][e] = make_float2(qh[2 * pr] * p.scale, qh[2 * pr + 1] * p.scale);
    }
  }

  // The own slot of an early first batch, now that it is written (by the kernel before, or
  // above with kRope: visible after the block's barrier). It is the last slot a token sees, so
  // it lies in this split only as stop - 1, which is also the row the batch's masked entries
  // read (their P is 0, but 0 * an unloaded register could be NaN).
  if (early && pos >= first_s0 && pos < stop) load_batch(first_s0, Own::only);
  for (int64_t s0 = first_s0; s0 < stop; s0 += kAttnWarps * kSlotBatch) {
    if (!early || s0 != first_s0) load_batch(s0, Own::load);
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {
      if (g >= n_g) break;
      float d[kSlotBatch];
#pragma unroll
      for (int j = 0; j < kSlotBatch; ++j) {
        d[j] = 0.0f;
#pragma unroll
        for (int e = 0; e < kPairs; ++e) d[j] += qv[g][e].x * kp[j][e].x + qv[g][e].y * kp[j][e].y;
      }
#pragma unroll
      for (int o = kWarp / 2; o > 0; o /= 2)
#pragma unroll
        for (int j = 0; j < kSlotBatch; ++j) d[j] += __shfl_xor_sync(0xffffffffu, d[j], o);
      float m_new = m[g];
#pragma unroll
      for (int j = 0; j < kSlotBatch; ++j)
        if (s0 + static_cast<int64_t>(kAttnWarps) * j < stop) m_new = fmaxf(m_new, d[j]);
      // The batch's first slot is < stop, so m_new is finite; m[g] = -inf gives corr = 0.
      const float corr = expf(m[g] - m_new);
      float pe[kSlotBatch], pe_sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kSlotBatch; ++j) {
        pe[j] = s0 + static_cast<int64_t>(kAttnWarps) * j < stop ? expf(d[j] - m_new) : 0.0f;
        pe_sum += pe[j];
      }
      l[g] = l[g] * corr + pe_sum;
      m[g] = m_new;
#pragma unroll
      for (int e = 0; e < kPairs; ++e) {
        float ax = acc[g][e].x * corr, ay = acc[g][e].y * corr;
#pragma unroll
        for (int j = 0; j < kSlotBatch; ++j) ax += pe[j] * vp[j][e].x, ay += pe[j] * vp[j][e].y;
        acc[g][e] = make_float2(ax, ay);
      }
    }
  }

  __shared__ float sm_m[kAttnWarps][kMaxGroup], sm_l[kAttnWarps][kMaxGroup];
  __shared__ float sm_acc[kAttnWarps][kMaxGroup][kAttentionMaxHeadDim];
  __shared__ float sm_phi[kMaxGroup];  // with sums: each query head's score of slot 0
  if (sums) {
#pragma unroll
    for (int g = 0; g < kMaxGroup; ++g) {  // g a constant, so qv stays in registers
      if (g >= n_g) break;
      if (g % kAttnWarps != warp) continue;
      float d = 0.0f;
#pragma unroll
      for (int e = 0; e < kPairs; ++e) d += qv[g][e].x * k0[e].x + qv[g][e].y * k0[e].y;
#pragma unroll
      for (int o = kWarp / 2; o > 0; o /= 2) d += __shfl_xor_sync(0xffffffffu, d, o);
      if (lane == 0) sm_phi[g] = d;
    }
  }
#pragma unroll
  for (int g = 0; g < kMaxGroup; ++g) {
    if (lane == 0) sm_m[warp][g] = m[g], sm_l[warp][g] = l[g];
#pragma unroll
    for (int e = 0; e < kPairs; ++e) {
      const int pr = lane + kWarp * e;
      if (pr < n_pairs) sm_acc[warp][g][2 * pr] = acc[g][e].x, sm_acc[warp][g][2 * pr + 1] = acc[g][e].y;
    }
  }
  __syncthreads();

  for (int idx = threadIdx.x; idx < n_g * p.head_dim; idx += kAttnThreads) {
    const int g = idx / p.head_dim, dim = idx % p.head_dim;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) mx = fmaxf(mx, sm_m[w][g]);
    float sum = 0.0f, a = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kAttnWarps; ++w) {
        const float f = expf(sm_m[w][g] - mx);  // 0 for warps that saw no slot (m = -inf)
        sum += sm_l[w][g] * f;
        a += sm_acc[w][g][dim] * f;
      }
    }
    const int64_t head = kv_head * heads_per_kv + g0 + g;
    const int64_t th = t * p.n_head + head;
    if (p.n_splits == 1) {
      p.out[th * p.head_dim + dim] = sum > 0.0f ? a / sum : 0.0f;
    } else if (p.sums.buffer) {
      // One token (th = head). A block that saw slots adds its share at the common exponent, or,
      // more than kAttentionSumsMaxExponent above it, leaves its partial for the GEMV's exact
      // combine; (m, l) of every split are written for that combine to find those.
      const int64_t slot = split * p.n_head + th;
      const bool saw = mx != -INFINITY;
      const float phi = saw ? sm_phi[g] : 0.0f;
      if (saw && mx - phi <= kAttentionSumsMaxExponent) {
        const float f = expf(mx - phi);
        atomicAdd(p.sums.num() + th * p.head_dim + dim, a * f);
        if (dim == 0) atomicAdd(p.sums.den() + th, sum * f);
      } else if (saw) {
        p.partial_acc[slot * p.head_dim + dim] = a;
        if (dim == 0) atomicAdd(p.sums.overflowed() + th, 1);
      }
      if (dim == 0) {
        p.partial_ml[2 * slot] = mx, p.partial_ml[2 * slot + 1] = sum;
        if (split == 0 && saw) p.sums.phi()[th] = phi;
      }
    } else {
      const int64_t slot = split * p.n_tokens * p.n_head + th;
      p.partial_acc[slot * p.head_dim + dim] = a;
      if (dim == 0) p.partial_ml[2 * slot] = mx, p.partial_ml[2 * slot + 1] = sum;
    }
  }
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

template <int kPairs, bool kRope>
void launch_pairs(const AttnParams& ap, dim3 grid, bool f16, cudaStream_t stream) {
  launch_pdl(f16 ? attention_kernel<kPairs, true, kRope> : attention_kernel<kPairs, false, kRope>, grid,
             dim3(kAttnThreads), 0, stream, ap);
}

// launch_attention, or with ap.k_new set launch_rope_attention.
template <bool kRope>
void launch_split_kv(const AttnParams& ap, const AttentionLaunch& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.n_head_kv * ap.groups_per_kv), static_cast<unsigned>(p.n_tokens),
                  static_cast<unsigned>(ap.n_splits));
  if (p.head_dim <= 64) launch_pairs<1, kRope>(ap, grid, p.cache_f16, stream);
  else if (p.head_dim <= 128) launch_pairs<2, kRope>(ap, grid, p.cache_f16, stream);
  else launch_pairs<4, kRope>(ap, grid, p.cache_f16, stream);
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
                AttentionSums{}, nullptr, 0};
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
