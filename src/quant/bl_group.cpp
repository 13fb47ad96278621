// Reference quantize / dequantize of bl<b>g<g> (layout and formula in quant/bl_group.h).
#include "quant/bl_group.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/half.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace bl::quant {
namespace {

constexpr int kGroupSizes[] = {32, 64, 128};
constexpr int kMaxGroup = 128;

// Candidate clipping ranges per group. The "anchored" family (as ggml's make_qkx2_quants) maps
// [min, max] onto nmax - 1 .. nmax + 1 code levels, anchored at min (so values past the new
// top clip); the
// "shrunk" family clips both ends toward the centre by up to 40 %.
constexpr int kAnchoredSteps = 10;  // iscale offsets -1.0 .. +1.0 in steps of 0.2 (both ways)
constexpr int kShrinkSteps = 8;     // range factors 1.0, 0.95 .. 0.65

struct Fit {
  uint16_t scale = 0, zero = 0;  // fp16 as stored
  double err = std::numeric_limits<double>::infinity();
  uint8_t q[kMaxGroup];
};

int nearest(float v) { return static_cast<int>(std::lrintf(v)); }

// Codes for stored (fp16) s and z by round-to-nearest, and their weighted squared error.
void requantize(const float* x, const float* imp, int g, int nmax, uint16_t s16, uint16_t z16, Fit& out) {
  const float s = fp16_to_f32(s16), z = fp16_to_f32(z16);
  if (!std::isfinite(s) || !std::isfinite(z)) return;
  const float inv = s != 0.0f ? 1.0f / s : 0.0f;
  double err = 0.0;
  uint8_t q[kMaxGroup];
  for (int j = 0; j < g; ++j) {
    const int l = std::clamp(nearest(x[j] * inv + z), 0, nmax);
    q[j] = static_cast<uint8_t>(l);
    const double d = static_cast<double>(x[j]) - static_cast<double>(s) * (l - static_cast<double>(z));
    err += (imp ? imp[j] : 1.0) * d * d;
  }
  if (err < out.err) {
    out.err = err;
    out.scale = s16;
    out.zero = z16;
    std::memcpy(out.q, q, static_cast<size_t>(g));
  }
}

// Weighted least-squares x ~ S * L + M for the codes L of candidate range [lo, hi], then the
// stored (fp16) s = S, z = -M / S requantized.
void try_range(const float* x, const float* imp, int g, int nmax, float lo, float hi, Fit& best) {
  if (!(hi > lo)) return;
  const float iscale = static_cast<float>(nmax) / (hi - lo);
  double sw = 0, swl = 0, swll = 0, swx = 0, swlx = 0;
  for (int j = 0; j < g; ++j) {
    const double l = std::clamp(nearest((x[j] - lo) * iscale), 0, nmax);
    const double w = imp ? imp[j] : 1.0;
    sw += w;
    swl += w * l;
    swll += w * l * l;
    swx += w * x[j];
    swlx += w * l * x[j];
  }
  const double det = sw * swll - swl * swl;
  if (det <= 0.0) return;
  const double S = (sw * swlx - swl * swx) / det;
  const double M = (swll * swx - swl * swlx) / det;
  if (S == 0.0 || !std::isfinite(S)) return;
  const double z = -M / S;
  if (std::fabs(z) > 60000.0) return;  // not representable in fp16
  requantize(x, imp, g, nmax, f32_to_fp16(static_cast<float>(S)), f32_to_fp16(static_cast<float>(z)), best);
}

// The best fit (s, z and codes) of one group of g values; without search, the plain min/max
// round-to-nearest fit alone.
Fit quantize_group(const BlGroupShape& shape, const float* x, const float* importance, bool search) {
  const int g = shape.group_size, nmax = (1 << shape.bits) - 1;
  float imp[kMaxGroup];
  bl_group_error_weights(x, importance, g, imp);
  float lo = x[0], hi = x[0];
  for (int j = 1; j < g; ++j) {
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  Fit best;
  if (hi == lo) {
    // A constant group c: q = 0, s = |c|, z = -c / s = -1 or +1 (s = z = 0 when c = 0).
    const float s = lo == 0.0f ? 0.0f : std::fabs(lo);
    best.scale = f32_to_fp16(s);
    best.zero = f32_to_fp16(lo == 0.0f ? 0.0f : (lo > 0.0f ? -1.0f : 1.0f));
    std::memset(best.q, 0, static_cast<size_t>(g));
    return best;
  }
  // Plain min/max round-to-nearest first: the search can only improve on it.
  const float s = (hi - lo) / static_cast<float>(nmax);
  requantize(x, imp, g, nmax, f32_to_fp16(s), f32_to_fp16(-lo / s), best);
  if (!search) return best;
  for (int is = -kAnchoredSteps; is <= kAnchoredSteps; ++is) {
    const float levels = static_cast<float>(nmax) + 0.1f * static_cast<float>(is);
    if (levels <= 0.0f) continue;
    try_range(x, imp, g, nmax, lo, lo + (hi - lo) * static_cast<float>(nmax) / levels, best);
  }
  const float mid = 0.5f * (lo + hi), half = 0.5f * (hi - lo);
  for (int is = 0; is < kShrinkSteps; ++is) {
    const float t = 1.0f - 0.05f * static_cast<float>(is);
    try_range(x, imp, g, nmax, mid - t * half, mid + t * half, best);
  }
  return best;
}

// Writes row r's scale, zero and codes into one tile group (whose code bytes start zeroed).
void pack_row(const BlGroupShape& shape, const Fit& fit, int r, uint8_t* tile_group) {
  std::memcpy(tile_group + 2 * r, &fit.scale, 2);
  std::memcpy(tile_group + 32 + 2 * r, &fit.zero, 2);
  for (int c = 0; c < shape.chunks(); ++c)
    for (int q = 0; q < 4; ++q)
      for (int p = 0; p < shape.bits; ++p) {
        int nibble = 0;
        for (int m = 0; m < 4; ++m) nibble |= ((fit.q[16 * c + 4 * q + m] >> p) & 1) << m;
        const NibblePlace at = bl_nibble_place(shape, r, c, q, p);
        tile_group[at.byte] |= static_cast<uint8_t>(nibble << at.shift);
      }
}

}  // namespace

void bl_group_error_weights(const float* x, const float* importance, int g, float* out) {
  (void)x;
  // All-zero importance would make every candidate equal: fall back to uniform weights.
  const bool use_imp = importance && std::any_of(importance, importance + g, [](float v) { return v > 0.0f; });
  for (int j = 0; j < g; ++j) out[j] = use_imp ? std::max(importance[j], 0.0f) : 1.0f;
}

std::optional<BlGroupShape> bl_group_shape(DType t) {
  const auto id = static_cast<uint32_t>(t);
  if (id < 1010 || id > 1082) return std::nullopt;
  const int bits = static_cast<int>((id - 1000) / 10), gi = static_cast<int>((id - 1000) % 10);
  if (bits < 1 || bits > 8 || gi > 2) return std::nullopt;
  return BlGroupShape{bits, kGroupSizes[gi]};
}

std::optional<DType> bl_group_dtype(int bits, int group_size) {
  if (bits < 1 || bits > 8) return std::nullopt;
  for (int gi = 0; gi < 3; ++gi)
    if (kGroupSizes[gi] == group_size) return static_cast<DType>(1000 + 10 * bits + gi);
  return std::nullopt;
}

NibblePlace bl_nibble_place(const BlGroupShape& shape, int r, int c, int q, int p) {
  const int pi = q * shape.bits + p;
  const int k = c * shape.bits + pi / 4;  // nibble register
  return {64 + 64 * (k / 2) + 4 * r + pi % 4, 4 * (k % 2)};
}

void unpack_bl_codes(const BlGroupShape& shape, const uint8_t* tile_group, int r, uint8_t* codes, float& s,
                     float& z) {
  uint16_t s16, z16;
  std::memcpy(&s16, tile_group + 2 * r, 2);
  std::memcpy(&z16, tile_group + 32 + 2 * r, 2);
  s = fp16_to_f32(s16);
  z = fp16_to_f32(z16);
  std::memset(codes, 0, static_cast<size_t>(shape.group_size));
  for (int c = 0; c < shape.chunks(); ++c)
    for (int q = 0; q < 4; ++q)
      for (int p = 0; p < shape.bits; ++p) {
        const NibblePlace at = bl_nibble_place(shape, r, c, q, p);
        const int nibble = (tile_group[at.byte] >> at.shift) & 15;
        for (int m = 0; m < 4; ++m) codes[16 * c + 4 * q + m] |= static_cast<uint8_t>(((nibble >> m) & 1) << p);
      }
}

namespace {

void quantize_matrix_groups(DType t, const float* x, void* dst, int64_t rows, int64_t cols, const float* importance,
                            bool search) {
  const std::optional<BlGroupShape> shape = bl_group_shape(t);
  assert(shape && rows % kBlTileRows == 0 && cols % shape->group_size == 0);
  const int g = shape->group_size;
  const int64_t groups = cols / g;
  auto* out = static_cast<uint8_t*>(dst);
  std::memset(out, 0, static_cast<size_t>(rows * groups * shape->group_bytes()));
  for (int64_t row = 0; row < rows; ++row) {
    uint8_t* tile = out + (row / kBlTileRows) * groups * shape->tile_group_bytes();
    for (int64_t grp = 0; grp < groups; ++grp) {
      const Fit fit =
          quantize_group(*shape, x + row * cols + grp * g, importance ? importance + grp * g : nullptr, search);
      pack_row(*shape, fit, static_cast<int>(row % kBlTileRows), tile + grp * shape->tile_group_bytes());
    }
  }
}

}  // namespace

void quantize_bl_matrix(DType t, const float* x, void* dst, int64_t rows, int64_t cols, const float* importance) {
  quantize_matrix_groups(t, x, dst, rows, cols, importance, true);
}

void quantize_bl_matrix_nearest(DType t, const float* x, void* dst, int64_t rows, int64_t cols) {
  quantize_matrix_groups(t, x, dst, rows, cols, nullptr, false);
}

void ternary_to_bl2(DType from, const void* src, void* dst, int64_t rows, int64_t cols) {
  assert((from == DType::TQ1_0 || from == DType::TQ2_0) && rows % kBlTileRows == 0 && cols % kQKK == 0);
  const BlGroupShape shape{2, 128};
  const int64_t groups = cols / shape.group_size;
  const size_t in_row = row_bytes(from, cols), block_bytes = row_bytes(from, kQKK);
  auto* out = static_cast<uint8_t*>(dst);
  std::memset(out, 0, static_cast<size_t>(rows * groups * shape.group_bytes()));
  std::vector<float> values(static_cast<size_t>(cols));
  const uint16_t one = f32_to_fp16(1.0f);
  for (int64_t row = 0; row < rows; ++row) {
    const auto* in = static_cast<const uint8_t*>(src) + in_row * static_cast<size_t>(row);
    dequantize_row(from, in, values.data(), cols);
    uint8_t* tile = out + (row / kBlTileRows) * groups * shape.tile_group_bytes();
    for (int64_t grp = 0; grp < groups; ++grp) {
      // d is the last field of both block types (quant/blocks.h).
      uint16_t d16;
      std::memcpy(&d16, in + block_bytes * static_cast<size_t>(grp / 2) + block_bytes - 2, 2);
      const float d = fp16_to_f32(d16);
      Fit fit;
      fit.scale = d16;
      fit.zero = one;
      for (int j = 0; j < shape.group_size; ++j) {
        const float v = values[static_cast<size_t>(grp * shape.group_size + j)];
        fit.q[j] = static_cast<uint8_t>(d != 0.0f ? std::lrintf(v / d) + 1 : 1);
      }
      pack_row(shape, fit, static_cast<int>(row % kBlTileRows), tile + grp * shape.tile_group_bytes());
    }
  }
}

void dequantize_bl_row(DType t, const void* matrix, int64_t cols, int64_t row, float* y) {
  const std::optional<BlGroupShape> shape = bl_group_shape(t);
  assert(shape && cols % shape->group_size == 0);
  const int g = shape->group_size;
  const int64_t groups = cols / g;
  const uint8_t* tile = static_cast<const uint8_t*>(matrix) + (row / kBlTileRows) * groups * shape->tile_group_bytes();
  uint8_t codes[kMaxGroup];
  for (int64_t grp = 0; grp < groups; ++grp) {
    float s, z;
    unpack_bl_codes(*shape, tile + grp * shape->tile_group_bytes(), static_cast<int>(row % kBlTileRows), codes, s, z);
    for (int j = 0; j < g; ++j) y[grp * g + j] = s * (static_cast<float>(codes[j]) - z);
  }
}

}  // namespace bl::quant
