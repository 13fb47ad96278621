// Views of a LlamaForwardState's buffers for one forward call of n tokens: what the layers of
// LlamaModel::forward (and gemma3_layer) read and write. Tokens are the outermost dim of every
// activation buffer, so the first n tokens of a buffer are its first bytes.
#pragma once

#include "core/tensor.h"
#include "model/llama_config.h"
#include "model/llama_model.h"

namespace bl {

// A view of an activation buffer [.., max_tokens] with shape ne.
inline Tensor view(const Tensor& t, std::array<int64_t, 4> ne) {
  Tensor v = t;
  v.ne = ne;
  return v;
}

// A view of ne starting `floats` floats into an activation buffer.
inline Tensor view_at(const Tensor& t, int64_t floats, std::array<int64_t, 4> ne) {
  Tensor v = t;
  v.data = static_cast<float*>(t.data) + floats;
  v.ne = ne;
  return v;
}

// Slots [q * n_ctx, (q + 1) * n_ctx) of a cache [head_dim, n_head_kv, n_seq * n_ctx]: the
// cache of sequence q.
inline Tensor sequence_slots(const Tensor& cache, int q, int n_ctx) {
  Tensor v = cache;
  const size_t slot_bytes = cache.row_size() * static_cast<size_t>(cache.ne[1]);
  v.data = static_cast<char*>(cache.data) + slot_bytes * static_cast<size_t>(n_ctx) * static_cast<size_t>(q);
  v.ne = {cache.ne[0], cache.ne[1], n_ctx, 1};
  return v;
}

struct ForwardViews {
  Tensor pos;  // I32 [n]
  Tensor x;    // [d, n] residual stream
  // q, k, v, attn as matmul outputs [q_dim | kv_dim, n] and as heads [head_dim, n_heads, n];
  // q, k and v follow each other in s.qkv, so for one token they are the fused matmul's output.
  Tensor q, q_heads, k, k_heads, v, v_heads, attn, attn_heads;
  Tensor qkv;      // [q_dim + 2 kv_dim, 1]: one token's q, k, v
  Tensor gate, up;  // [n_ff, n] each
  Tensor gate_up;  // [2 n_ff, 1]: one token's gate, up
};

inline ForwardViews forward_views(const LlamaForwardState& s, const LlamaConfig& c, int n) {
  ForwardViews f;
  f.pos = view(s.positions, {n, 1, 1, 1});
  f.x = view(s.x, {c.n_embd, n, 1, 1});
  const int64_t k_at = c.q_dim() * n, v_at = (c.q_dim() + c.kv_dim()) * n;
  f.q = view(s.qkv, {c.q_dim(), n, 1, 1});
  f.q_heads = view(s.qkv, {c.head_dim, c.n_head, n, 1});
  f.k = view_at(s.qkv, k_at, {c.kv_dim(), n, 1, 1});
  f.k_heads = view_at(s.qkv, k_at, {c.head_dim, c.n_head_kv, n, 1});
  f.v = view_at(s.qkv, v_at, {c.kv_dim(), n, 1, 1});
  f.v_heads = view_at(s.qkv, v_at, {c.head_dim, c.n_head_kv, n, 1});
  f.qkv = view(s.qkv, {c.q_dim() + 2 * c.kv_dim(), 1, 1, 1});
  f.attn = view(s.attn, {c.q_dim(), n, 1, 1});
  f.attn_heads = view(s.attn, {c.head_dim, c.n_head, n, 1});
  f.gate = view(s.gate_up, {c.n_ff, n, 1, 1});
  f.up = view_at(s.gate_up, c.n_ff * n, {c.n_ff, n, 1, 1});
  f.gate_up = view(s.gate_up, {2 * c.n_ff, 1, 1, 1});
  return f;
}

}  // namespace bl
