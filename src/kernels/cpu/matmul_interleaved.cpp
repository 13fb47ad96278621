// The driver of the tiles16 matmul and its portable kernels.
#include "kernels/cpu/matmul_interleaved.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>

#include "core/env_switch.h"
#include "core/half.h"
#include "kernels/cpu/interleaved_rows.h"
#include "quant/blocks.h"
#include "quant/quant_formats.h"

namespace bl::cpu {
namespace {

constexpr size_t kPad = 64;
size_t pad64(size_t bytes) { return (bytes + kPad - 1) / kPad * kPad; }

// Tokens per pass over the weights in prefill: 64 tokens' activations (two terms of up to 8192
// int8 + scales, ~1 MiB) stay in L2 while every tile of the thread's rows is multiplied with them.
constexpr int64_t kTokenChunk = 64;

void quantize_token_scalar(const float* x, DType type, const TokenActsLayout& layout, void* token) {
  const float factor = interleaved_offset_factor(type);
  float* offset = layout.offset(token);
  for (int64_t b = 0; b < layout.nb; ++b) {
    float residual[kQK];
    std::memcpy(residual, x + b * kQK, sizeof(residual));
    float sum_s = 0.0f;
    for (int term = 0; term < layout.terms; ++term) {
      float amax = 0.0f;
      for (float v : residual) amax = std::max(amax, std::fabs(v));
      const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
      int8_t* q = layout.q(token, term) + b * kQK;
      int sum = 0;
      for (int k = 0; k < kQK; ++k) {
        q[k] = static_cast<int8_t>(std::nearbyint(residual[k] * id));  // ties to even, as vcvtps2dq
        sum += q[k];
        residual[k] -= d * static_cast<float>(q[k]);
      }
      layout.d(token, term)[b] = d;
      sum_s += d * static_cast<float>(sum);
    }
    offset[b] = factor * sum_s;
  }
}

// Sum over the 4 bytes of group g of row r times the 4 activations at y.
inline int32_t dot4(const uint8_t* w4, const int8_t* y) {
  int32_t s = 0;
  for (int i = 0; i < 4; ++i) s += static_cast<int32_t>(w4[i]) * y[i];
  return s;
}

// Q4_K: per super-block, out += d * sum_s sc_s * (sum over terms of d_x * sum(q q_x)) - dmin *
// sum_s m_s * offset (offset = sum over terms of d_x * sum(q_x) of the sub-block's 32 weights).
void tiles_scalar_q4_k(const InterleavedMatmul& m, int64_t tile0, int64_t tile1, int64_t t0, int64_t t1) {
  const int64_t nbk = m.cols / kQKK;
  const TileOffsets o = tile_offsets(m.type, nbk);
  const TokenActsLayout& layout = m.layout;
  for (int64_t tile = tile0; tile < tile1; ++tile) {
    const uint8_t* base = m.w + o.tile_bytes * static_cast<size_t>(tile);
    for (int64_t t = t0; t < t1; ++t) {
      void* token = const_cast<char*>(m.acts) + layout.token_bytes * static_cast<size_t>(t);
      float out[kTileRows] = {};
      for (int64_t b = 0; b < nbk; ++b) {
        const uint8_t* quants = base + o.quant_bytes * static_cast<size_t>(b);
        const uint8_t* header = base + o.d_offset + kQ4KHeaderBytes * static_cast<size_t>(b);
        for (int r = 0; r < kTileRows; ++r) {
          uint8_t scales[kScaleBytesK];
          for (int k = 0; k < kScaleBytesK; ++k) scales[k] = header[64 + 16 * k + r];
          float total = 0.0f, total_min = 0.0f;
          for (int sub = 0; sub < 8; ++sub) {
            const int j = sub / 2, shift = 4 * (sub % 2);
            const int64_t blk = b * 8 + sub;  // 32-element activation block
            float s = 0.0f;
            for (int term = 0; term < layout.terms; ++term) {
              const int8_t* y = layout.q(token, term) + blk * kQK;
              int32_t sum = 0;
              for (int g = 0; g < 8; ++g)
                for (int i = 0; i < 4; ++i)
                  sum += ((quants[64 * (8 * j + g) + 4 * r + i] >> shift) & 15) * y[4 * g + i];
              s += static_cast<float>(sum) * layout.d(token, term)[blk];
            }
            uint8_t sc, mn;
            quant::get_scale_min_k4(sub, scales, &sc, &mn);
            total += static_cast<float>(sc) * s;
            total_min += static_cast<float>(mn) * layout.offset(token)[blk];
          }
          out[r] += fp16_to_f32(reinterpret_cast<const uint16_t*>(header)[r]) * total -
                    fp16_to_f32(reinterpret_cast<const uint16_t*>(header + 32)[r]) * total_min;
        }
      }
      float* dst = m.out + t * m.rows + tile * kTileRows;
      for (int r = 0; r < kTileRows; ++r) dst[r] = out[r] + (m.bias ? m.bias[tile * kTileRows + r] : 0.0f);
    }
  }
}

void tiles_scalar(const InterleavedMatmul& m, int64_t tile0, int64_t tile1, int64_t t0, int64_t t1) {
  if (m.type == DType::Q4_K) return tiles_scalar_q4_k(m, tile0, tile1, t0, t1);
  const int64_t nb = m.cols / kQK;
  const TileOffsets o = tile_offsets(m.type, nb);
  const int groups = interleaved_groups(m.type);
  const TokenActsLayout& layout = m.layout;
  for (int64_t tile = tile0; tile < tile1; ++tile) {
    const uint8_t* base = m.w + o.tile_bytes * static_cast<size_t>(tile);
    const auto* d = reinterpret_cast<const uint16_t*>(base + o.d_offset);
    const auto* mins = reinterpret_cast<const uint16_t*>(base + o.m_offset);
    for (int64_t t = t0; t < t1; ++t) {
      void* token = const_cast<char*>(m.acts) + layout.token_bytes * static_cast<size_t>(t);
      float out[kTileRows] = {};
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* quants = base + o.quant_bytes * static_cast<size_t>(b);
        const float offset = layout.offset(token)[b];
        for (int r = 0; r < kTileRows; ++r) {
          float s = m.type == DType::Q4_1 ? 0.0f : offset;
          for (int term = 0; term < layout.terms; ++term) {
            const int8_t* y = layout.q(token, term) + b * kQK;
            int32_t sum = 0;
            for (int g = 0; g < groups; ++g) {
              const uint8_t* w4 = quants + 64 * g + 4 * r;
              if (m.type == DType::Q8_0) {
                sum += dot4(w4, y + 4 * g);
              } else {
                const uint8_t lo[4] = {static_cast<uint8_t>(w4[0] & 15), static_cast<uint8_t>(w4[1] & 15),
                                       static_cast<uint8_t>(w4[2] & 15), static_cast<uint8_t>(w4[3] & 15)};
                const uint8_t hi[4] = {static_cast<uint8_t>(w4[0] >> 4), static_cast<uint8_t>(w4[1] >> 4),
                                       static_cast<uint8_t>(w4[2] >> 4), static_cast<uint8_t>(w4[3] >> 4)};
                sum += dot4(lo, y + 4 * g) + dot4(hi, y + 16 + 4 * g);
              }
            }
            s += static_cast<float>(sum) * layout.d(token, term)[b];
          }
          out[r] += fp16_to_f32(d[b * kTileRows + r]) * s;
          if (m.type == DType::Q4_1) out[r] += fp16_to_f32(mins[b * kTileRows + r]) * offset;
        }
      }
      float* dst = m.out + t * m.rows + tile * kTileRows;
      for (int r = 0; r < kTileRows; ++r) dst[r] = out[r] + (m.bias ? m.bias[tile * kTileRows + r] : 0.0f);
    }
  }
}

}  // namespace

TokenActsLayout::TokenActsLayout(int64_t cols_, int terms_) : cols(cols_), nb(cols_ / kQK), terms(terms_) {
  q_bytes = pad64(static_cast<size_t>(cols));
  d_bytes = pad64(static_cast<size_t>(nb) * sizeof(float));
  token_bytes = static_cast<size_t>(terms) * (q_bytes + d_bytes) + d_bytes;
}

const InterleavedKernels& interleaved_kernels_scalar() {
  static constexpr InterleavedKernels kernels{quantize_token_scalar, tiles_scalar};
  return kernels;
}

bool interleave_at_load() {
  static const bool on = [] {
    const bool wanted = env_choice("BITLIGHT_CPU_INTERLEAVE", {"0", "1"}) != "0";
    return wanted && active_isa() >= Isa::avx512 && interleaved_kernels_avx512() != nullptr;
  }();
  return on;
}

size_t interleaved_matmul_scratch_bytes(int64_t cols, int64_t n) {
  return TokenActsLayout(cols, 2).token_bytes * static_cast<size_t>(n);
}

void interleaved_matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
                        AlignedBuffer& scratch, Isa isa, ActPrecision precision) {
  assert(w.layout == Layout::tiles16 && can_interleave(w.dtype, w.rows()));
  const InterleavedKernels* vector = isa >= Isa::avx512 ? interleaved_kernels_avx512() : nullptr;
  const InterleavedKernels& k = vector ? *vector : interleaved_kernels_scalar();
  const int64_t cols = w.cols(), n = x.rows();
  const TokenActsLayout layout(cols, precision == ActPrecision::int8x2 ? 2 : 1);
  const size_t need = layout.token_bytes * static_cast<size_t>(n);
  if (scratch.bytes() < need && !scratch.resize(need)) {
    assert(!"interleaved_matmul: cannot allocate activation scratch");
    return;
  }
  char* acts = scratch.as<char>();
  const float* xf = x.as<const float>();
  pool.parallel_for(n, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t)
      k.quantize_token(xf + t * cols, w.dtype, layout, acts + layout.token_bytes * static_cast<size_t>(t));
  });
  const InterleavedMatmul m{w.dtype, static_cast<const uint8_t*>(w.data), cols, w.rows(), acts, layout, n,
                            bias ? bias->as<const float>() : nullptr, out.as<float>()};
  for (int64_t c0 = 0; c0 < n; c0 += kTokenChunk) {
    const int64_t c1 = std::min(n, c0 + kTokenChunk);
    pool.parallel_for(w.rows() / kTileRows, 1, [&](int64_t tile0, int64_t tile1) { k.tiles(m, tile0, tile1, c0, c1); });
  }
}

}  // namespace bl::cpu
