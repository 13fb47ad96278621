// bl<b>g<g> reference quantizer: layout, exact cases and error bounds per bit width.
//
// Bounds:
//  - per group, the squared error weighted by bl_group_error_weights is never above plain
//    min/max round-to-nearest with the same fp16 scale/zero rounding (the clipping search starts
//    from it and only keeps improvements), checked exactly up to 1e-9 relative;
//  - relative RMS error over Gaussian rows, 1.2-1.4x above what the quantizer reaches at
//    g = 128 (measured: b=1 0.60, 2 0.345, 3 0.180, 4 0.091, 5 0.046, 6 0.022, 7 0.011,
//    8 0.0053; about halving per added bit, as uniform quantization should);
//  - constant and all-zero groups reconstruct exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/half.h"
#include "quant/bl_group.h"
#include "quant/quant.h"

namespace bl {
namespace {

using quant::BlGroupShape;

std::vector<float> gaussian(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = dist(rng);
  return x;
}

std::vector<DType> all_bl_types() {
  std::vector<DType> out;
  for (int b = 1; b <= 8; ++b)
    for (int g : {32, 64, 128}) out.push_back(*quant::bl_group_dtype(b, g));
  return out;
}

// Squared error of plain min/max round-to-nearest on one group, with fp16 s and z as stored.
double minmax_rtn_error(const float* x, const float* imp, int g, int bits) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < g; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
  if (hi == lo) return 0.0;
  const int nmax = (1 << bits) - 1;
  const float s0 = (hi - lo) / static_cast<float>(nmax);
  const float s = fp16_to_f32(f32_to_fp16(s0)), z = fp16_to_f32(f32_to_fp16(-lo / s0));
  double err = 0;
  for (int j = 0; j < g; ++j) {
    const int l = std::clamp(static_cast<int>(std::lrintf(x[j] * (1.0f / s) + z)), 0, nmax);
    const double d = static_cast<double>(x[j]) - static_cast<double>(s) * (l - static_cast<double>(z));
    err += (imp ? imp[j] : 1.0) * d * d;
  }
  return err;
}

TEST(BlGroup, DTypeTableMatchesShape) {
  for (DType t : all_bl_types()) {
    const auto shape = quant::bl_group_shape(t);
    ASSERT_TRUE(shape);
    const DTypeInfo* info = dtype_info(t);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->block_elems, shape->group_size);
    EXPECT_EQ(info->block_bytes, shape->group_bytes());
    EXPECT_EQ(dtype_from_name(info->name), t);
    EXPECT_TRUE(can_quantize(t) && can_dequantize(t));
  }
  EXPECT_EQ(dtype_name(DType::BL3G128), "bl3g128");
  EXPECT_EQ(row_bytes(DType::BL2G64, 128), 2u * (4 + 16));
  EXPECT_FALSE(quant::bl_group_shape(DType::Q4_0));
  EXPECT_FALSE(quant::bl_group_dtype(9, 32));
  EXPECT_FALSE(quant::bl_group_dtype(4, 16));
}

// A hand-built bl3g32 group decodes by the formula of bl_group.h.
TEST(BlGroup, LayoutIsBitPlanesLsbFirst) {
  const BlGroupShape shape{3, 32};
  std::vector<uint8_t> group(static_cast<size_t>(shape.group_bytes()), 0);
  const uint16_t s = f32_to_fp16(0.5f), z = f32_to_fp16(2.0f);
  std::memcpy(group.data(), &s, 2);
  std::memcpy(group.data() + 2, &z, 2);
  for (int j = 0; j < 32; ++j) {
    const int q = (j * 5) % 8;
    for (int k = 0; k < 3; ++k)
      if ((q >> k) & 1) group[4 + k * 4 + j / 8] |= static_cast<uint8_t>(1u << (j % 8));
  }
  std::vector<float> y(32);
  dequantize_row(DType::BL3G32, group.data(), y.data(), 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.5f * (static_cast<float>((j * 5) % 8) - 2.0f)) << j;
}

TEST(BlGroup, ConstantAndZeroGroupsAreExact) {
  for (DType t : all_bl_types()) {
    const int g = quant::bl_group_shape(t)->group_size;
    std::vector<float> x(static_cast<size_t>(3 * g), 0.0f);
    for (int j = g; j < 2 * g; ++j) x[static_cast<size_t>(j)] = 1.5f;
    for (int j = 2 * g; j < 3 * g; ++j) x[static_cast<size_t>(j)] = -0.25f;
    std::vector<uint8_t> q(row_bytes(t, 3 * g));
    quantize_row(t, x.data(), q.data(), 3 * g);
    std::vector<float> y(x.size());
    dequantize_row(t, q.data(), y.data(), 3 * g);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], x[i]) << dtype_name(t) << " element " << i;
  }
}

TEST(BlGroup, NeverWorseThanMinMaxRoundToNearest) {
  for (DType t : all_bl_types()) {
    const BlGroupShape shape = *quant::bl_group_shape(t);
    const int g = shape.group_size;
    for (uint32_t seed = 1; seed <= 6; ++seed) {
      auto x = gaussian(4 * g, seed * 31 + static_cast<uint32_t>(t), seed % 2 ? 1.0f : 1e-3f);
      if (seed == 3) for (auto& v : x) v = std::fabs(v) + 0.5f;  // all positive
      std::vector<float> imp = gaussian(4 * g, seed, 1.0f);
      for (auto& v : imp) v = v * v;
      const float* imp_or_null = seed % 2 ? imp.data() : nullptr;
      std::vector<uint8_t> q(row_bytes(t, 4 * g));
      quant::quantize_bl_group(t, x.data(), q.data(), 4 * g, imp_or_null);
      std::vector<float> y(x.size());
      dequantize_row(t, q.data(), y.data(), 4 * g);
      for (int grp = 0; grp < 4; ++grp) {
        std::vector<float> e(static_cast<size_t>(g));
        quant::bl_group_error_weights(x.data() + grp * g, imp_or_null ? imp.data() + grp * g : nullptr, g, e.data());
        double err = 0;
        for (int j = 0; j < g; ++j) {
          const double d = static_cast<double>(x[static_cast<size_t>(grp * g + j)]) - y[static_cast<size_t>(grp * g + j)];
          err += e[static_cast<size_t>(j)] * d * d;
        }
        const double base = minmax_rtn_error(x.data() + grp * g, e.data(), g, shape.bits);
        EXPECT_LE(err, base * (1 + 1e-9) + 1e-30) << dtype_name(t) << " seed " << seed << " group " << grp;
      }
    }
  }
}

TEST(BlGroup, RelativeRmsErrorPerBitWidth) {
  const double bound[9] = {0, 0.80, 0.43, 0.22, 0.11, 0.055, 0.028, 0.015, 0.007};
  for (DType t : all_bl_types()) {
    const BlGroupShape shape = *quant::bl_group_shape(t);
    const int64_t n = 4096;
    const auto x = gaussian(n, 7 + static_cast<uint32_t>(t), 0.02f);
    std::vector<uint8_t> q(row_bytes(t, n));
    quantize_row(t, x.data(), q.data(), n);
    std::vector<float> y(static_cast<size_t>(n));
    dequantize_row(t, q.data(), y.data(), n);
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; ++i) {
      num += (x[i] - y[i]) * (x[i] - y[i]);
      den += x[i] * x[i];
    }
    const double rel = std::sqrt(num / den);
    // Smaller groups fit better, so the g = 128 bound holds for all g.
    EXPECT_LT(rel, bound[shape.bits]) << dtype_name(t);
    if (shape.group_size == 128) std::printf("%s rel rms %.4f\n", std::string(dtype_name(t)).c_str(), rel);
  }
}

// Activation-aware mode: with large importance on a few elements, their error shrinks.
TEST(BlGroup, ImportanceLowersWeightedError) {
  for (DType t : {DType::BL2G128, DType::BL3G64, DType::BL4G32}) {
    const int64_t n = 2048;
    const auto x = gaussian(n, 99, 1.0f);
    std::vector<float> imp(static_cast<size_t>(n), 0.01f);
    for (int64_t i = 0; i < n; i += 7) imp[static_cast<size_t>(i)] = 100.0f;
    std::vector<uint8_t> qa(row_bytes(t, n)), qu(row_bytes(t, n));
    quant::quantize_bl_group(t, x.data(), qa.data(), n, imp.data());
    quant::quantize_bl_group(t, x.data(), qu.data(), n, nullptr);
    std::vector<float> ya(static_cast<size_t>(n)), yu(static_cast<size_t>(n));
    dequantize_row(t, qa.data(), ya.data(), n);
    dequantize_row(t, qu.data(), yu.data(), n);
    double wa = 0, wu = 0;
    for (int64_t i = 0; i < n; ++i) {
      wa += imp[i] * (x[i] - ya[i]) * (x[i] - ya[i]);
      wu += imp[i] * (x[i] - yu[i]) * (x[i] - yu[i]);
    }
    EXPECT_LT(wa, 0.9 * wu) << dtype_name(t);
  }
}

}  // namespace
}  // namespace bl
