// bl<b>g<g> reference quantizer: layout, exact cases and error bounds per bit width. Matrices of
// 16 rows (one tile) unless said otherwise.
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

constexpr int64_t kRows = quant::kBlTileRows;

// x [rows][cols] quantized to t, then every row dequantized back.
std::vector<float> round_trip(DType t, const std::vector<float>& x, int64_t rows, int64_t cols,
                              const float* importance = nullptr) {
  std::vector<uint8_t> q(row_bytes(t, cols) * static_cast<size_t>(rows));
  quantize_matrix(t, x.data(), q.data(), rows, cols, importance);
  std::vector<float> y(x.size());
  for (int64_t r = 0; r < rows; ++r) dequantize_matrix_row(t, q.data(), cols, r, y.data() + r * cols);
  return y;
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
    EXPECT_EQ(shape->tile_group_bytes() % 64, 0) << dtype_name(t);  // whole cache lines
    EXPECT_EQ(dtype_from_name(info->name), t);
    EXPECT_TRUE(can_quantize(t) && can_dequantize(t));
  }
  EXPECT_EQ(dtype_name(DType::BL3G128), "bl3g128");
  EXPECT_EQ(row_bytes(DType::BL2G64, 128), 2u * (4 + 16));
  EXPECT_EQ(dtype_info(DType::BL2G64)->tile_rows, 16);
  EXPECT_EQ(dtype_info(DType::Q4_0)->tile_rows, 1);
  EXPECT_FALSE(quant::bl_group_shape(DType::Q4_0));
  EXPECT_FALSE(quant::bl_group_dtype(9, 32));
  EXPECT_FALSE(quant::bl_group_dtype(4, 16));
}

// A hand-built bl3g32 tile (one tile group) decodes by the layout and formula of bl_group.h:
// scales, zeros, then nibble registers R_k, lane 4r + i = pair 4 (k % b) + i = quad * b + plane.
TEST(BlGroup, LayoutIsNibbleRegistersOf16Rows) {
  const int b = 3, g = 32;
  std::vector<uint8_t> tile(static_cast<size_t>(16 * (4 + b * g / 8)), 0);
  ASSERT_EQ(tile.size(), 64u + 2u * b * g);
  auto code = [](int r, int j) { return (j * 5 + r * 3) % 8; };
  for (int r = 0; r < 16; ++r) {
    const uint16_t s = f32_to_fp16(0.5f + r), z = f32_to_fp16(2.0f - 0.25f * r);
    std::memcpy(tile.data() + 2 * r, &s, 2);
    std::memcpy(tile.data() + 32 + 2 * r, &z, 2);
    for (int j = 0; j < g; ++j) {
      const int c = j / 16, q = (j % 16) / 4, m = j % 4;
      for (int p = 0; p < b; ++p) {
        if (!((code(r, j) >> p) & 1)) continue;
        const int pi = q * b + p, k = c * b + pi / 4, lane = 4 * r + pi % 4;
        tile[static_cast<size_t>(64 + 64 * (k / 2) + lane)] |= static_cast<uint8_t>(1u << (m + 4 * (k % 2)));
      }
    }
  }
  std::vector<float> y(g);
  for (int r = 0; r < 16; ++r) {
    dequantize_matrix_row(DType::BL3G32, tile.data(), g, r, y.data());
    for (int j = 0; j < g; ++j)
      EXPECT_EQ(y[j], (0.5f + r) * (static_cast<float>(code(r, j)) - (2.0f - 0.25f * r))) << "row " << r << " col " << j;
  }
}

// The quantizer fills a 2-tile matrix row by row in its tile: rows of the second tile decode
// to their own values, and a row's groups to their own columns.
TEST(BlGroup, RowsAndGroupsLandInTheirTiles) {
  const int64_t rows = 32, cols = 256;
  std::vector<float> x(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) x[static_cast<size_t>(r * cols + j)] = static_cast<float>((r * 7 + j / 32) % 16);
  // Per group of 32 a constant (exact), different for every (row, group).
  const std::vector<float> y = round_trip(DType::BL4G32, x, rows, cols);
  EXPECT_EQ(y, x);
}

TEST(BlGroup, ConstantAndZeroGroupsAreExact) {
  for (DType t : all_bl_types()) {
    const int g = quant::bl_group_shape(t)->group_size;
    std::vector<float> x(static_cast<size_t>(kRows * 3 * g), 0.0f);
    for (int64_t r = 0; r < kRows; ++r) {
      for (int j = g; j < 2 * g; ++j) x[static_cast<size_t>(r * 3 * g + j)] = 1.5f;
      for (int j = 2 * g; j < 3 * g; ++j) x[static_cast<size_t>(r * 3 * g + j)] = -0.25f * static_cast<float>(r + 1);
    }
    const std::vector<float> y = round_trip(t, x, kRows, 3 * g);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], x[i]) << dtype_name(t) << " element " << i;
  }
}

TEST(BlGroup, NeverWorseThanMinMaxRoundToNearest) {
  for (DType t : all_bl_types()) {
    const BlGroupShape shape = *quant::bl_group_shape(t);
    const int g = shape.group_size;
    for (uint32_t seed = 1; seed <= 6; ++seed) {
      auto x = gaussian(kRows * 4 * g, seed * 31 + static_cast<uint32_t>(t), seed % 2 ? 1.0f : 1e-3f);
      if (seed == 3) for (auto& v : x) v = std::fabs(v) + 0.5f;  // all positive
      std::vector<float> imp = gaussian(4 * g, seed, 1.0f);  // per column, shared by the rows
      for (auto& v : imp) v = v * v;
      const float* imp_or_null = seed % 2 ? imp.data() : nullptr;
      const std::vector<float> y = round_trip(t, x, kRows, 4 * g, imp_or_null);
      for (int grp = 0; grp < kRows * 4; ++grp) {
        std::vector<float> e(static_cast<size_t>(g));
        quant::bl_group_error_weights(x.data() + grp * g, imp_or_null ? imp.data() + (grp % 4) * g : nullptr, g, e.data());
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
    const int64_t n = kRows * 256;
    const auto x = gaussian(n, 7 + static_cast<uint32_t>(t), 0.02f);
    const std::vector<float> y = round_trip(t, x, kRows, 256);
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
    const int64_t cols = 512, n = kRows * cols;
    const auto x = gaussian(n, 99, 1.0f);
    std::vector<float> imp(static_cast<size_t>(cols), 0.01f);
    for (int64_t i = 0; i < cols; i += 7) imp[static_cast<size_t>(i)] = 100.0f;
    const std::vector<float> ya = round_trip(t, x, kRows, cols, imp.data());
    const std::vector<float> yu = round_trip(t, x, kRows, cols);
    double wa = 0, wu = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double e = imp[static_cast<size_t>(i % cols)];
      wa += e * (x[i] - ya[i]) * (x[i] - ya[i]);
      wu += e * (x[i] - yu[i]) * (x[i] - yu[i]);
    }
    EXPECT_LT(wa, 0.9 * wu) << dtype_name(t);
  }
}

}  // namespace
}  // namespace bl
