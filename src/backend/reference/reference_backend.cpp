#include "backend/reference/reference_backend.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <numbers>
#include <vector>

#include "core/half.h"
#include "quant/quant.h"

namespace bl {
namespace {

// Reads element i of an F32 or F16 cache row.
float load_cache(const Tensor& cache, int64_t i) {
  if (cache.dtype == DType::F16) return fp16_to_f32(cache.as<const uint16_t>()[i]);
  return cache.as<const float>()[i];
}

void store_cache(Tensor& cache, int64_t i, float v) {
  if (cache.dtype == DType::F16) {
    cache.as<uint16_t>()[i] = f32_to_fp16(v);
  } else {
    cache.as<float>()[i] = v;
  }
}

}  // namespace

bool ReferenceBackend::supports(DType weight_type) const { return can_dequantize(weight_type); }

Expected<Tensor> ReferenceBackend::alloc(DType dtype, std::array<int64_t, 4> ne) {
  Tensor t = make_tensor(nullptr, dtype, ne);
  AlignedBuffer buffer;
  if (!buffer.resize(t.bytes()))
    return out_of_memory("reference backend: cannot allocate " + std::to_string(t.bytes()) + " bytes for " +
                         shape_string(t));
  t.data = buffer.data();
  buffers_.push_back(std::move(buffer));
  return t;
}

void ReferenceBackend::write(Tensor& dst, const void* src, size_t bytes, size_t offset_bytes) {
  assert(offset_bytes + bytes <= dst.bytes());
  std::memcpy(static_cast<char*>(dst.data) + offset_bytes, src, bytes);
}

void ReferenceBackend::read(const Tensor& src, void* dst, size_t bytes, size_t offset_bytes) {
  assert(offset_bytes + bytes <= src.bytes());
  std::memcpy(dst, static_cast<const char*>(src.data) + offset_bytes, bytes);
}

void ReferenceBackend::get_rows(const Tensor& table, const Tensor& ids, Tensor& out) {
  const int64_t d = table.cols();
  for (int64_t i = 0; i < ids.elements(); ++i) {
    const int32_t id = ids.as<const int32_t>()[i];
    assert(id >= 0 && id < table.rows());
    dequantize_matrix_row(table.dtype, table.data, d, id, out.as<float>() + i * d);
  }
}

void ReferenceBackend::rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& out) {
  const int64_t d = x.cols();
  for (int64_t t = 0; t < x.rows(); ++t) {
    const float* xr = x.as<const float>() + t * d;
    float* yr = out.as<float>() + t * d;
    double sum_sq = 0;
    for (int64_t i = 0; i < d; ++i) sum_sq += static_cast<double>(xr[i]) * xr[i];
    const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_sq / static_cast<double>(d) + eps));
    for (int64_t i = 0; i < d; ++i) yr[i] = xr[i] * inv_rms * weight.as<const float>()[i];
  }
}

void ReferenceBackend::matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias) {
  const int64_t cols = w.cols(), rows = w.rows(), n = x.rows();
  assert(x.cols() == cols && out.cols() == rows && out.rows() == n);
  std::vector<float> w_row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_matrix_row(w.dtype, w.data, cols, r, w_row.data());
    for (int64_t t = 0; t < n; ++t) {
      const float* xr = x.as<const float>() + t * cols;
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) acc += static_cast<double>(w_row[c]) * xr[c];
      if (bias) acc += bias->as<const float>()[r];
      out.as<float>()[t * rows + r] = static_cast<float>(acc);
    }
  }
}

void ReferenceBackend::add(const Tensor& a, const Tensor& b, Tensor& out) {
  for (int64_t i = 0; i < a.elements(); ++i) out.as<float>()[i] = a.as<const float>()[i] + b.as<const float>()[i];
}

void ReferenceBackend::silu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  for (int64_t i = 0; i < gate.elements(); ++i) {
    const float g = gate.as<const float>()[i];
    out.as<float>()[i] = g / (1.0f + std::exp(-g)) * up.as<const float>()[i];
  }
}

void ReferenceBackend::gelu_mul(const Tensor& gate, const Tensor& up, Tensor& out) {
  const double sqrt_2_over_pi = std::sqrt(2.0 / std::numbers::pi);
  for (int64_t i = 0; i < gate.elements(); ++i) {
    const double g = gate.as<const float>()[i];
    // g / 2 * (1 + tanh(u)) written as g / (1 + exp(-2u)): for g below ~ -5, 1 + tanh(u) cancels
    // to nothing even in double (tanh(-24.6) = -1 + 8e-22 at g = -8).
    const double u = sqrt_2_over_pi * (g + 0.044715 * g * g * g);
    const double gelu = g / (1.0 + std::exp(-2.0 * u));
    out.as<float>()[i] = static_cast<float>(gelu * up.as<const float>()[i]);
  }
}

void ReferenceBackend::scale(const Tensor& x, float factor, Tensor& out) {
  for (int64_t i = 0; i < x.elements(); ++i) out.as<float>()[i] = x.as<const float>()[i] * factor;
}

void ReferenceBackend::rope(Tensor& x, const Tensor& positions, const RopeParams& p) {
  const int64_t head_dim = x.ne[0], n_heads = x.ne[1], n = x.ne[2];
  const int half = p.n_dims / 2;
  for (int64_t t = 0; t < n; ++t) {
    const double pos = static_cast<double>(positions.as<const int32_t>()[t]) * p.freq_scale;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x.as<float>() + (t * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        // theta_i = pos * base^(-2i / n_dims), divided by the Llama 3 factor of pair i.
        double theta = pos * std::pow(static_cast<double>(p.freq_base), -2.0 * i / p.n_dims);
        if (p.freq_factors) theta /= p.freq_factors[i];
        const double c = std::cos(theta), s = std::sin(theta);
        const int i0 = p.neox ? i : 2 * i;
        const int i1 = p.neox ? i + half : 2 * i + 1;
        const double x0 = v[i0], x1 = v[i1];
        v[i0] = static_cast<float>(x0 * c - x1 * s);
        v[i1] = static_cast<float>(x0 * s + x1 * c);
      }
    }
  }
}

void ReferenceBackend::kv_store(const Tensor& k, const Tensor& v, Tensor& k_cache, Tensor& v_cache,
                                const Tensor& positions) {
  const int64_t row = k.ne[0] * k.ne[1];  // head_dim * n_head_kv
  for (int64_t t = 0; t < k.ne[2]; ++t) {
    const int64_t slot = positions.as<const int32_t>()[t];
    assert(slot >= 0 && slot < k_cache.ne[2]);
    for (int64_t i = 0; i < row; ++i) {
      store_cache(k_cache, slot * row + i, k.as<const float>()[t * row + i]);
      store_cache(v_cache, slot * row + i, v.as<const float>()[t * row + i]);
    }
  }
}

void ReferenceBackend::attention(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                 const Tensor& positions, const AttentionParams& p, Tensor& out) {
  const int64_t hd = p.head_dim, n = q.ne[2];
  const int64_t kv_row = hd * p.n_head_kv;  // one cache slot
  const int group = p.n_head / p.n_head_kv;
  std::vector<double> scores;
  for (int64_t t = 0; t < n; ++t) {
    // Slots [first, pos]: all of them, or the last p.window.
    const int64_t pos = positions.as<const int32_t>()[t];
    const int64_t first = p.window > 0 ? std::max<int64_t>(0, pos - p.window + 1) : 0;
    const int64_t n_keys = pos + 1 - first;
    scores.resize(static_cast<size_t>(n_keys));
    for (int h = 0; h < p.n_head; ++h) {
      const float* qv = q.as<const float>() + (t * p.n_head + h) * hd;
      const int64_t kv_head = h / group;
      double max_score = -INFINITY;
      for (int64_t j = 0; j < n_keys; ++j) {
        double dot = 0;
        for (int64_t i = 0; i < hd; ++i)
          dot += static_cast<double>(qv[i]) * load_cache(k_cache, (first + j) * kv_row + kv_head * hd + i);
        scores[j] = dot * p.scale;
        max_score = std::max(max_score, scores[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < n_keys; ++j) sum += (scores[j] = std::exp(scores[j] - max_score));
      float* o = out.as<float>() + (t * p.n_head + h) * hd;
      for (int64_t i = 0; i < hd; ++i) {
        double acc = 0;
        for (int64_t j = 0; j < n_keys; ++j) acc += scores[j] * load_cache(v_cache, (first + j) * kv_row + kv_head * hd + i);
        o[i] = static_cast<float>(acc / sum);
      }
    }
  }
}

std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace bl
