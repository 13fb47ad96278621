// Defaults of the fused Backend ops and of token picking (backend.h): the plain ops in order. Host-memory backends
// (CPU, reference) use these as they are; the CUDA backend overrides them with fused kernels and
// falls back to these where it has none (other formats, larger batches).
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

void Backend::rope_kv_store(Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                            const Tensor& positions, const RopeParams& p) {
  rope(q, positions, p);
  rope(k, positions, p);
  kv_store(k, v, k_cache, v_cache, positions);
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
