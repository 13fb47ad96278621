// Small memory-bound ops of a transformer layer: RMSNorm, residual add, SwiGLU, rotary
// embedding, KV-cache store. Each is one pass over its tensors (read once, write once); at the
// 8B decode shape they move a few tens of KB and cost their launch, which is why the decode
// step is replayed from a CUDA graph (cuda_backend.h) and why fusing them into the GEMV is
// the next step (docs/cuda.md). Each is launched with PDL (pdl.cuh): it waits for the kernel
// before it on its first line and lets the next one launch at once.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/block_reduce.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/silu.cuh"

namespace bl::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// One block per token; x, out [d, n]. With d % 4 == 0 and 16-byte aligned rows the passes use
// float4 loads, unrolled so that a thread's loads are in flight together: the plain loop
// issued one 4-byte load per L2 round trip, 16 in a row at d = 4096 (6.7 us a call, docs/cuda.md).
// kAdd: out += the normed x (add_rms_norm), with the same rounding as rms_norm then add.
template <bool kAdd>
__global__ void rms_norm_kernel(const float* x, const float* weight, float eps, int64_t d, float* out) {
  pdl_start_next_early();  // the GEMV after this one may start its weight loads
  const float* xt = x + blockIdx.x * d;
  float* ot = out + blockIdx.x * d;
  const bool vec = d % 4 == 0 && reinterpret_cast<uintptr_t>(xt) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(ot) % 16 == 0 && reinterpret_cast<uintptr_t>(weight) % 16 == 0;
  const float4* x4 = reinterpret_cast<const float4*>(xt);
  float sum = 0.0f;
  if (vec) {
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < d / 4; i += kThreads) {
      const float4 v = x4[i];
      sum += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
  } else {
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < d; i += kThreads) sum += xt[i] * xt[i];
  }
  const float scale = rsqrtf(block_sum<kThreads>(sum) / static_cast<float>(d) + eps);
  if (vec) {
    const float4* w4 = reinterpret_cast<const float4*>(weight);
    float4* o4 = reinterpret_cast<float4*>(ot);
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < d / 4; i += kThreads) {
      const float4 v = x4[i], w = w4[i];
      float4 o = make_float4(v.x * scale * w.x, v.y * scale * w.y, v.z * scale * w.z, v.w * scale * w.w);
      if constexpr (kAdd) {
        const float4 r = o4[i];
        o = make_float4(r.x + o.x, r.y + o.y, r.z + o.z, r.w + o.w);
      }
      o4[i] = o;
    }
  } else {
#pragma unroll 4
    for (int64_t i = threadIdx.x; i < d; i += kThreads) {
      const float o = xt[i] * scale * weight[i];
      ot[i] = kAdd ? ot[i] + o : o;
    }
  }
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  pdl_start();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n) out[i] = a[i] + b[i];
}

__global__ void silu_mul_kernel(const float* gate, const float* up, float* out, int64_t n) {
  pdl_start_next_early();  // the down GEMV after this one may start its weight loads
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n) out[i] = silu(gate[i]) * up[i];
}

__global__ void gelu_mul_kernel(const float* gate, const float* up, float* out, int64_t n) {
  pdl_start_next_early();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n) out[i] = gelu_tanh(gate[i]) * up[i];
}

__global__ void scale_kernel(const float* x, float factor, float* out, int64_t n) {
  pdl_start();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < n) out[i] = x[i] * factor;
}

// One thread per rotated pair: i in [0, n_dims / 2) of head h of token t (angles in fp64,
// rope.cuh; the op is tiny).
__global__ void rope_kernel(float* x, const int32_t* positions, RopeLaunch p) {
  pdl_start();
  const int64_t half = p.n_dims / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= half * p.n_heads * p.n_tokens) return;
  const int64_t i = idx % half;
  const int64_t head = (idx / half) % p.n_heads;
  const int64_t t = idx / (half * p.n_heads);
  float c, s;
  rope_cos_sin(static_cast<double>(positions[t]), i, p, c, s);
  float* xh = x + (t * p.n_heads + head) * p.head_dim;
  const int64_t i0 = rope_first(i, p.neox), i1 = rope_second(i, half, p.neox);
  const float x0 = xh[i0], x1 = xh[i1];
  xh[i0] = x0 * c - x1 * s;
  xh[i1] = x0 * s + x1 * c;
}

template <bool kF16>
__global__ void kv_store_kernel(const float* k, const float* v, void* k_cache, void* v_cache, int64_t kv_dim,
                                int64_t n_tokens, int64_t n_ctx, const int32_t* positions) {
  pdl_start();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= kv_dim * n_tokens) return;
  const int64_t t = i / kv_dim, e = i % kv_dim;
  const int64_t slot = positions[t];
  if (slot < 0 || slot >= n_ctx) return;
  const int64_t dst = slot * kv_dim + e;
  if constexpr (kF16) {
    static_cast<__half*>(k_cache)[dst] = __float2half_rn(k[i]);
    static_cast<__half*>(v_cache)[dst] = __float2half_rn(v[i]);
  } else {
    static_cast<float*>(k_cache)[dst] = k[i];
    static_cast<float*>(v_cache)[dst] = v[i];
  }
}

// rope + KV store in one kernel: block (b, t) takes heads [b * heads_per_block, +heads_per_block)
// of token t, where heads count the n_head q heads, then the n_head_kv k heads, then the
// n_head_kv v heads. The block first computes the token's n_dims / 2 rotation angles (fp64, as
// rope_kernel) into shared memory, then rotates its q and k heads in place (thread i: pairs i,
// i + blockDim, ...); a k head is also written to the k cache (rotated pairs and the pass-through
// dims past n_dims), a v head only to the v cache. q [head_dim, n_head, n], k, v [head_dim,
// n_head_kv, n], caches [.., n_ctx].
// Why several heads per block: the fp64 pow + sincos per pair cost more than the bytes; with
// one head per block a 2048-token prefill of the 8B shape (48 heads) took 120 us a layer on an
// H100, re-deriving every angle 40 times. Decode keeps one head per block (48 blocks for one
// token instead of 6), so the angles of one token are computed 40 times in parallel. Prefill
// takes rope_kv_store_token_kernel (below) where it applies; this kernel with 8 heads a block
// serves many tokens of several sequences (seq_slots) and unaligned pairs.
constexpr int kRopeKvThreads = 64;  // a Llama head of 128 dims is 64 pairs
constexpr int64_t kRopeManyTokens = 64;  // from here on, a block per token (or 8 heads a block)

template <bool kF16>
__global__ void __launch_bounds__(kRopeKvThreads) rope_kv_store_kernel(float* q, float* k, const float* v, void* k_cache,
                                                                        void* v_cache, int n_head, int n_head_kv,
                                                                        int64_t n_ctx, const int32_t* positions,
                                                                        RopeLaunch p, int heads_per_block,
                                                                        int64_t seq_slots) {
  pdl_start();
  const int64_t t = blockIdx.y;
  const int hd = p.head_dim, half = p.n_dims / 2;
  const int64_t kv_dim = static_cast<int64_t>(n_head_kv) * hd;
  // seq_slots > 0: token t is sequence t's, whose cache region starts at slot t * seq_slots.
  const int64_t slot = seq_slots > 0 ? t * seq_slots + positions[t] : positions[t];
  const bool store = seq_slots > 0 ? positions[t] >= 0 && positions[t] < seq_slots : slot >= 0 && slot < n_ctx;
  const int h0 = static_cast<int>(blockIdx.x) * heads_per_block;
  const int h_end = min(h0 + heads_per_block, n_head + 2 * n_head_kv);

  __shared__ float cos_sh[kAttentionMaxHeadDim / 2], sin_sh[kAttentionMaxHeadDim / 2];
  if (h0 < n_head + n_head_kv) {  // some q or k head to rotate
    const double pos = static_cast<double>(positions[t]);
    for (int i = threadIdx.x; i < half; i += kRopeKvThreads) rope_cos_sin(pos, i, p, cos_sh[i], sin_sh[i]);
    __syncthreads();
  }
  for (int h = h0; h < h_end; ++h) {
    if (h >= n_head + n_head_kv) {  // a v head: copy into the cache
      const int64_t at = static_cast<int64_t>(h - n_head - n_head_kv) * hd;
      if (store)
        for (int e = threadIdx.x; e < hd; e += kRopeKvThreads) put_cache<kF16>(v_cache, slot * kv_dim + at + e, v[t * kv_dim + at + e]);
      continue;
    }
    const bool is_k = h >= n_head;
    const int64_t at = static_cast<int64_t>(is_k ? h - n_head : h) * hd;  // the head's offset in its token
    float* xh = is_k ? k + t * kv_dim + at : q + t * static_cast<int64_t>(n_head) * hd + at;
    const bool to_cache = is_k && store;
    const int64_t cache_at = slot * kv_dim + at;
    for (int i = threadIdx.x; i < half; i += kRopeKvThreads) {
      const float sn = sin_sh[i], cs = cos_sh[i];
      const int i0 = rope_first(i, p.neox), i1 = rope_second(i, half, p.neox);
      const float x0 = xh[i0], x1 = xh[i1];
      const float y0 = x0 * cs - x1 * sn, y1 = x0 * sn + x1 * cs;
      xh[i0] = y0;
      xh[i1] = y1;
      if (to_cache) put_cache<kF16>(k_cache, cache_at + i0, y0), put_cache<kF16>(k_cache, cache_at + i1, y1);
    }
    if (to_cache)
      for (int e = p.n_dims + threadIdx.x; e < hd; e += kRopeKvThreads) put_cache<kF16>(k_cache, cache_at + e, xh[e]);
  }
}

// Prefill (kRopeManyTokens tokens or more): one block per token, all of its heads. The token's
// n_dims / 2 angles once (fp64, as rope_kernel) into shared memory, then every (q or k head,
// pair) item rotated in place, a k item also written to the k cache, then the k heads'
// pass-through dims and the v heads into the caches. Adjacent pairs (2i, 2i + 1, not neox) move
// as one float2 (and one half2 into an f16 cache); the launcher checks the 8-byte alignment.
// Why: with 8 heads a block (rope_kv_store_kernel) a 2048-token prefill of the 8B shape
// computed each token's angles 6 times and moved 4 bytes per load, ~49 us a layer for ~100 MB.
template <bool kF16>
__device__ __forceinline__ void put_cache_pair(void* cache, int64_t i, float a, float b) {
  if constexpr (kF16)
    *reinterpret_cast<__half2*>(static_cast<__half*>(cache) + i) = __floats2half2_rn(a, b);
  else
    *reinterpret_cast<float2*>(static_cast<float*>(cache) + i) = make_float2(a, b);
}

// With q_angles (launch_rope_kv_store's): the q heads are left as they are and the token's
// (cos, sin) go to q_angles[t * half + i] for the prefill attention to rotate q as it loads it.
template <bool kF16>
__global__ void __launch_bounds__(kThreads)
    rope_kv_store_token_kernel(float* q, float* k, const float* v, void* k_cache, void* v_cache, int n_head,
                               int n_head_kv, int64_t n_ctx, const int32_t* positions, RopeLaunch p, float2* q_angles) {
  pdl_start();
  const int64_t t = blockIdx.x;
  const int hd = p.head_dim, half = p.n_dims / 2;
  const int64_t kv_dim = static_cast<int64_t>(n_head_kv) * hd;
  const int64_t slot = positions[t];
  const bool store = slot >= 0 && slot < n_ctx;
  __shared__ float cos_sh[kAttentionMaxHeadDim / 2], sin_sh[kAttentionMaxHeadDim / 2];
  for (int i = threadIdx.x; i < half; i += kThreads) {
    rope_cos_sin(static_cast<double>(slot), i, p, cos_sh[i], sin_sh[i]);
    if (q_angles) q_angles[t * half + i] = make_float2(cos_sh[i], sin_sh[i]);
  }
  __syncthreads();
  float* qt = q + t * n_head * hd;
  float* kt = k + t * kv_dim;
  const int first_head = q_angles ? n_head : 0;  // q heads rotated here, or by the attention
  for (int idx = threadIdx.x + first_head * half; idx < (n_head + n_head_kv) * half; idx += kThreads) {
    const int h = idx / half, i = idx % half;
    const bool is_k = h >= n_head;
    const int64_t at = static_cast<int64_t>(is_k ? h - n_head : h) * hd;
    float* xh = (is_k ? kt : qt) + at;
    const float sn = sin_sh[i], cs = cos_sh[i];
    const int i0 = rope_first(i, p.neox), i1 = rope_second(i, half, p.neox);
    float x0, x1;
    if (p.neox) {
      x0 = xh[i0], x1 = xh[i1];
    } else {
      const float2 pair = *reinterpret_cast<const float2*>(xh + i0);
      x0 = pair.x, x1 = pair.y;
    }
    const float y0 = x0 * cs - x1 * sn, y1 = x0 * sn + x1 * cs;
    if (p.neox) {
      xh[i0] = y0, xh[i1] = y1;
      if (is_k && store) put_cache<kF16>(k_cache, slot * kv_dim + at + i0, y0), put_cache<kF16>(k_cache, slot * kv_dim + at + i1, y1);
    } else {
      *reinterpret_cast<float2*>(xh + i0) = make_float2(y0, y1);
      if (is_k && store) put_cache_pair<kF16>(k_cache, slot * kv_dim + at + i0, y0, y1);
    }
  }
  if (!store) return;
  const int pass = hd - p.n_dims;  // dims past n_dims, not rotated
  for (int idx = threadIdx.x; idx < n_head_kv * pass; idx += kThreads) {
    const int64_t e = static_cast<int64_t>(idx / pass) * hd + p.n_dims + idx % pass;
    put_cache<kF16>(k_cache, slot * kv_dim + e, kt[e]);
  }
  for (int64_t e = threadIdx.x; e < kv_dim; e += kThreads) put_cache<kF16>(v_cache, slot * kv_dim + e, v[t * kv_dim + e]);
}

// Whether rope_kv_store_token_kernel serves these operands.
bool token_kernel_applies(const float* q, const float* k, const void* k_cache, const RopeLaunch& p, int64_t seq_slots) {
  const bool aligned8 = reinterpret_cast<uintptr_t>(q) % 8 == 0 && reinterpret_cast<uintptr_t>(k) % 8 == 0 &&
                        reinterpret_cast<uintptr_t>(k_cache) % 8 == 0 && p.head_dim % 2 == 0;
  return p.n_tokens >= kRopeManyTokens && seq_slots == 0 && (p.neox || aligned8) &&
         p.n_dims / 2 <= kAttentionMaxHeadDim / 2;
}
}  // namespace

bool rope_q_angles_apply(const float* q, const float* k, const void* k_cache, const RopeLaunch& p) {
  return token_kernel_applies(q, k, k_cache, p, 0);
}

void launch_rope_kv_store(float* q, float* k, const float* v, void* k_cache, void* v_cache, bool cache_f16, int n_head,
                          int n_head_kv, int64_t n_ctx, const int32_t* positions, const RopeLaunch& p,
                          cudaStream_t stream, int64_t seq_slots, float2* q_angles) {
  if (p.n_tokens <= 0) return;
  // Few tokens (decode): a block per head, to spread one token over many SMs. Many (prefill):
  // a block per token (angles once per token, pairs as float2), else 8 heads a block.
  const int heads = n_head + 2 * n_head_kv;
  if (token_kernel_applies(q, k, k_cache, p, seq_slots)) {
    launch_pdl(cache_f16 ? rope_kv_store_token_kernel<true> : rope_kv_store_token_kernel<false>,
               dim3(static_cast<unsigned>(p.n_tokens)), dim3(kThreads), 0, stream, q, k, v, k_cache, v_cache, n_head,
               n_head_kv, n_ctx, positions, p, q_angles);
    return;
  }
  const int heads_per_block = p.n_tokens >= kRopeManyTokens ? 8 : 1;
  const dim3 grid(static_cast<unsigned>((heads + heads_per_block - 1) / heads_per_block), static_cast<unsigned>(p.n_tokens));
  launch_pdl(cache_f16 ? rope_kv_store_kernel<true> : rope_kv_store_kernel<false>, grid, dim3(kRopeKvThreads), 0, stream,
             q, k, v, k_cache, v_cache, n_head, n_head_kv, n_ctx, positions, p, heads_per_block, seq_slots);
}

void launch_rms_norm(const float* x, const float* weight, float eps, int64_t d, int64_t n_tokens, float* out,
                     cudaStream_t stream) {
  if (n_tokens <= 0) return;
  launch_pdl(rms_norm_kernel<false>, dim3(static_cast<unsigned>(n_tokens)), dim3(kThreads), 0, stream, x, weight, eps, d,
             out);
}

void launch_add_rms_norm(const float* x, const float* weight, float eps, int64_t d, int64_t n_tokens, float* out,
                         cudaStream_t stream) {
  if (n_tokens <= 0) return;
  launch_pdl(rms_norm_kernel<true>, dim3(static_cast<unsigned>(n_tokens)), dim3(kThreads), 0, stream, x, weight, eps, d,
             out);
}

void launch_add(const float* a, const float* b, float* out, int64_t n, cudaStream_t stream) {
  if (n > 0) launch_pdl(add_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, stream, a, b, out, n);
}

void launch_silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
  if (n > 0) launch_pdl(silu_mul_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, stream, gate, up, out, n);
}

void launch_gelu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream) {
  if (n > 0) launch_pdl(gelu_mul_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, stream, gate, up, out, n);
}

void launch_scale(const float* x, float factor, float* out, int64_t n, cudaStream_t stream) {
  if (n > 0) launch_pdl(scale_kernel, dim3(blocks_for(n)), dim3(kThreads), 0, stream, x, factor, out, n);
}

void launch_rope(float* x, const int32_t* positions, const RopeLaunch& p, cudaStream_t stream) {
  const int64_t pairs = static_cast<int64_t>(p.n_dims / 2) * p.n_heads * p.n_tokens;
  if (pairs > 0) launch_pdl(rope_kernel, dim3(blocks_for(pairs)), dim3(kThreads), 0, stream, x, positions, p);
}

void launch_kv_store(const float* k, const float* v, void* k_cache, void* v_cache, bool cache_f16, int64_t kv_dim,
                     int64_t n_tokens, int64_t n_ctx, const int32_t* positions, cudaStream_t stream) {
  const int64_t n = kv_dim * n_tokens;
  if (n <= 0) return;
  launch_pdl(cache_f16 ? kv_store_kernel<true> : kv_store_kernel<false>, dim3(blocks_for(n)), dim3(kThreads), 0, stream,
             k, v, k_cache, v_cache, kv_dim, n_tokens, n_ctx, positions);
}

}  // namespace bl::cuda
