// Defaults of the fused Backend ops and of token picking (backend.h): the plain ops in order. The
// reference backend uses these as they are; the CPU backend overrides fused_matmul for one token
// with bl<b>g<g> weights and argmax; the CUDA backend overrides them with fused kernels. Both fall
// back to these where they have none (other formats, larger batches).
#include <cmath>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "kernels/cpu/top_k_draw.h"

namespace bl {
namespace {

// The F32 [ne] view `floats_in` floats into a scratch buffer.
Tensor scratch_view(const Tensor& scratch, int64_t floats_in, std::array<int64_t, 4> ne) {
  Tensor v = scratch;
  v.dtype = DType::F32;
  v.data = static_cast<float*>(scratch.data) + floats_in;
  v.ne = ne;
  return v;
}

}  // namespace

void Backend::fused_matmul(const Tensor& w, const Tensor& x, Tensor& out, const MatmulFusion& f, const Tensor* bias) {
  const int64_t cols = w.ne[0], rows = w.rows(), n = x.rows();
  const int64_t x_floats = f.norm || f.up ? cols * n : 0;
  const int64_t needed = x_floats + (f.accumulate ? rows * n : 0);
  if (needed > 0 && (!f.scratch || f.scratch->dtype != DType::F32 || f.scratch->elements() < needed)) {
    // Reported through the op the backend checks anyway: an empty x makes matmul's shape check fail.
    Tensor empty = x;
    empty.ne = {0, 0, 0, 0};
    matmul(w, empty, out, bias);
    return;
  }
  Tensor xin = x;
  if (f.norm || f.up) {
    xin = scratch_view(*f.scratch, 0, {cols, n, 1, 1});
    if (f.norm)
      rms_norm(x, *f.norm, f.eps, xin);
    else
      silu_mul(x, *f.up, xin);
  }
  if (!f.accumulate) {
    matmul(w, xin, out, bias);
    return;
  }
  Tensor product = scratch_view(*f.scratch, x_floats, {rows, n, 1, 1});
  matmul(w, xin, product, bias);
  add(out, product, out);
}

void Backend::fused_matmul_same_input(std::span<const MatmulOutput> outputs, const Tensor& x, const MatmulFusion& f) {
  for (const MatmulOutput& o : outputs) fused_matmul(*o.w, x, *o.out, f, o.bias);
}

void Backend::fused_ffn(Tensor& x, const FfnBlock& f) {
  const MatmulOutput gate_up[] = {{f.w_gate, f.gate}, {f.w_up, f.up}};
  fused_matmul_same_input(gate_up, x, MatmulFusion{.norm = f.norm, .eps = f.eps, .scratch = f.scratch});
  fused_matmul(*f.w_down, *f.gate, x, MatmulFusion{.up = f.up, .accumulate = true, .scratch = f.scratch});
}

void Backend::add_rms_norm(Tensor& x, Tensor& s, const Tensor& weight, float eps) {
  rms_norm(s, weight, eps, s);
  add(x, s, x);
}

void Backend::rope_kv_store(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                            const Tensor& positions, const RopeParams& p) {
  rope(q, positions, p);
  rope(k, positions, p);
  kv_store(k, v, k_cache, v_cache, positions);
}

void Backend::rope_kv_store_attention(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                                      const Tensor& positions, const RopeParams& rope, const AttentionParams& attn,
                                      Tensor& out) {
  rope_kv_store(q, k, v, k_cache, v_cache, positions, rope);
  attention(q, k_cache, v_cache, positions, attn, out);
}

namespace {

// Token i of x [ne0, ne1, n] as [ne0, ne1, 1] (any 4-byte element type).
Tensor token_of(const Tensor& x, int64_t i) {
  Tensor v = x;
  v.data = static_cast<char*>(x.data) + static_cast<size_t>(i) * x.row_size() * static_cast<size_t>(x.ne[1]);
  v.ne = {x.ne[0], x.ne[1], 1, 1};
  return v;
}

// Slots [i * seq_slots, (i + 1) * seq_slots) of a cache [head_dim, n_head_kv, ..]: sequence i's.
Tensor sequence_cache(const Tensor& cache, int64_t i, int64_t seq_slots) {
  Tensor v = cache;
  const size_t slot_bytes = cache.row_size() * static_cast<size_t>(cache.ne[1]);
  v.data = static_cast<char*>(cache.data) + slot_bytes * static_cast<size_t>(seq_slots * i);
  v.ne = {cache.ne[0], cache.ne[1], seq_slots, 1};
  return v;
}

Tensor position_of(const Tensor& positions, int64_t i) {
  Tensor v = positions;
  v.data = positions.as<int32_t>() + i;
  v.ne = {1, 1, 1, 1};
  return v;
}

}  // namespace

void Backend::rope_kv_store_each_sequence(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                                          const Tensor& positions, const RopeParams& p, int64_t seq_slots) {
  const int64_t n = q.ne[2] * q.ne[3];
  for (int64_t i = 0; i < n; ++i) {
    Tensor q_i = token_of(q, i), k_i = token_of(k, i);
    Tensor kc = sequence_cache(k_cache, i, seq_slots), vc = sequence_cache(v_cache, i, seq_slots);
    rope_kv_store(q_i, k_i, token_of(v, i), kc, vc, position_of(positions, i), p);
  }
}

void Backend::attention_each_sequence(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                      const Tensor& positions, const AttentionParams& p, int64_t seq_slots,
                                      Tensor& out) {
  const int64_t n = q.ne[2] * q.ne[3];
  for (int64_t i = 0; i < n; ++i) {
    Tensor out_i = token_of(out, i);
    attention(token_of(q, i), sequence_cache(k_cache, i, seq_slots), sequence_cache(v_cache, i, seq_slots),
              position_of(positions, i), p, out_i);
  }
}

void Backend::argmax(const Tensor& logits, Tensor& ids) {
  const int64_t n_vocab = logits.ne[0], n = logits.rows();
  if (logits.dtype != DType::F32 || ids.dtype != DType::I32 || ids.elements() != n) return;
  std::vector<float> l(static_cast<size_t>(n_vocab * n));
  read(logits, l.data(), l.size() * sizeof(float));
  std::vector<int32_t> best(static_cast<size_t>(n), 0);
  for (int64_t t = 0; t < n; ++t) {
    const float* row = l.data() + t * n_vocab;
    int64_t b = -1;
    for (int64_t i = 0; i < n_vocab; ++i)
      if (!std::isnan(row[i]) && (b < 0 || row[i] > row[b])) b = i;
    best[static_cast<size_t>(t)] = static_cast<int32_t>(std::max<int64_t>(b, 0));
  }
  write(ids, best.data(), best.size() * sizeof(int32_t));
}

void Backend::sample_top_k(const Tensor& logits, const Tensor& draws, Tensor& ids) {
  const int64_t n_vocab = logits.ne[0], n = logits.rows();
  if (logits.dtype != DType::F32 || ids.dtype != DType::I32 || ids.elements() != n ||
      draws.bytes() < static_cast<size_t>(n) * sizeof(cpu::TopKDraw))
    return;
  std::vector<float> l(static_cast<size_t>(n_vocab * n));
  read(logits, l.data(), l.size() * sizeof(float));
  std::vector<cpu::TopKDraw> d(static_cast<size_t>(n));
  read(draws, d.data(), d.size() * sizeof(cpu::TopKDraw));
  std::vector<int32_t> picked(static_cast<size_t>(n));
  for (int64_t t = 0; t < n; ++t)
    picked[static_cast<size_t>(t)] =
        cpu::draw_from_top_k(std::span<const float>(l.data() + t * n_vocab, static_cast<size_t>(n_vocab)),
                             d[static_cast<size_t>(t)]);
  write(ids, picked.data(), picked.size() * sizeof(int32_t));
}

}  // namespace bl
