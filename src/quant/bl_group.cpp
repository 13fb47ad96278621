// Reference quantize / dequantize of bl<b>g<g> (layout and formula in quant/bl_group.h).
#include "quant/bl_group.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/half.h"

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

void quantize_group(const BlGroupShape& shape, const float* x, const float* importance, uint8_t* dst) {
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
  } else {
    // Plain min/max round-to-nearest first: the search can only improve on it.
    const float s = (hi - lo) / static_cast<float>(nmax);
    requantize(x, imp, g, nmax, f32_to_fp16(s), f32_to_fp16(-lo / s), best);
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
  }
  std::memcpy(dst, &best.scale, 2);
  std::memcpy(dst + 2, &best.zero, 2);
  uint8_t* planes = dst + 4;
  std::memset(planes, 0, static_cast<size_t>(shape.bits * shape.plane_bytes()));
  for (int k = 0; k < shape.bits; ++k) {
    uint8_t* plane = planes + k * shape.plane_bytes();
    for (int j = 0; j < g; ++j) plane[j / 8] |= static_cast<uint8_t>(((best.q[j] >> k) & 1) << (j % 8));
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

void unpack_bl_group_codes(const BlGroupShape& shape, const uint8_t* group, uint8_t* codes) {
  const uint8_t* planes = group + 4;
  for (int j = 0; j < shape.group_size; ++j) {
    int q = 0;
    for (int k = 0; k < shape.bits; ++k) q |= ((planes[k * shape.plane_bytes() + j / 8] >> (j % 8)) & 1) << k;
    codes[j] = static_cast<uint8_t>(q);
  }
}

void quantize_bl_group(DType t, const float* x, void* dst, int64_t n, const float* importance) {
  const std::optional<BlGroupShape> shape = bl_group_shape(t);
  assert(shape && n % shape->group_size == 0);
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t i = 0; i < n; i += shape->group_size, out += shape->group_bytes())
    quantize_group(*shape, x + i, importance ? importance + i : nullptr, out);
}

void dequantize_bl_group(DType t, const void* src, float* y, int64_t n) {
  const std::optional<BlGroupShape> shape = bl_group_shape(t);
  assert(shape && n % shape->group_size == 0);
  const auto* group = static_cast<const uint8_t*>(src);
  uint8_t codes[kMaxGroup];
  for (int64_t i = 0; i < n; i += shape->group_size, group += shape->group_bytes()) {
    uint16_t s16, z16;
    std::memcpy(&s16, group, 2);
    std::memcpy(&z16, group + 2, 2);
    const float s = fp16_to_f32(s16), z = fp16_to_f32(z16);
    unpack_bl_group_codes(*shape, group, codes);
    for (int j = 0; j < shape->group_size; ++j) y[i + j] = s * (static_cast<float>(codes[j]) - z);
  }
}

}  // namespace bl::quant
