// Round trip quantize_row -> dequantize_row for every format, with an error bound per format.
//
// Legacy formats have analytic per-block bounds (in units of the block's max |x| or range):
//   Q8_0: |err| <= d/2 + 127 * fp16 rounding of d          = amax * (0.5/127 + 2^-11)
//   Q4_0 / Q5_0: the level grid is [-8, 7] * d with d = max / -8 (Q5: [-16, 15], d = max / -16);
//     the element of opposite sign to max can land one step short, so |err| <= |d| (+ fp16).
//   Q4_1 / Q5_1: |err| <= d/2 + fp16 rounding of d (times 15 / 31 levels) and of the min.
//   Plus an absolute 127 * 2^-25 for blocks so small that the fp16 scale is subnormal.
// K-quants fit sub-block scales by least squares, so the bound is on the relative RMS error
// over a row of Gaussian data, set about 1.5x above what the reference quantizers reach
// (Q2_K ~0.3, Q3_K ~0.17, Q4_K ~0.08, Q5_K ~0.04, Q6_K ~0.02).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/half.h"
#include "quant/quant.h"

namespace bl {
namespace {

std::vector<float> gaussian(int64_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> x(n);
  for (auto& v : x) v = dist(rng);
  return x;
}

std::vector<float> round_trip(DType t, const std::vector<float>& x) {
  std::vector<uint8_t> q(row_bytes(t, static_cast<int64_t>(x.size())));
  quantize_row(t, x.data(), q.data(), static_cast<int64_t>(x.size()));
  std::vector<float> y(x.size());
  dequantize_row(t, q.data(), y.data(), static_cast<int64_t>(x.size()));
  return y;
}

// Per-block bound as a function of the block's amax, min and max.
using BlockBound = double (*)(double amax, double min, double max);

void expect_block_bound(DType t, BlockBound bound) {
  for (uint32_t seed = 1; seed <= 20; ++seed) {
    const int64_t n = 32 * (1 + seed % 7);
    auto x = gaussian(n, seed, seed % 3 == 0 ? 1e-3f : 2.0f);
    if (seed % 5 == 0) std::fill(x.begin(), x.begin() + 32, 0.0f);  // an all-zero block
    if (seed % 4 == 0) for (auto& v : x) v = std::fabs(v) + 0.5f;   // all positive (min > 0)
    const auto y = round_trip(t, x);
    for (int64_t b = 0; b < n / 32; ++b) {
      double amax = 0, mn = x[b * 32], mx = x[b * 32];
      for (int j = 0; j < 32; ++j) {
        amax = std::max(amax, std::fabs(static_cast<double>(x[b * 32 + j])));
        mn = std::min<double>(mn, x[b * 32 + j]);
        mx = std::max<double>(mx, x[b * 32 + j]);
      }
      // Absolute floor: a tiny block's scale is an fp16 subnormal, stepped by 2^-24, and the
      // step error is multiplied by up to 127 levels.
      const double tol = bound(amax, mn, mx) + 127.0 * std::ldexp(1.0, -25);
      for (int j = 0; j < 32; ++j)
        ASSERT_LE(std::fabs(static_cast<double>(y[b * 32 + j]) - x[b * 32 + j]), tol)
            << dtype_name(t) << " seed " << seed << " block " << b << " elem " << j;
    }
  }
}

constexpr double kFp16 = 1.0 / 2048;

TEST(QuantRoundTrip, Q8_0) {
  expect_block_bound(DType::Q8_0, [](double amax, double, double) { return amax * (0.5 / 127 + kFp16) + 1e-12; });
}
TEST(QuantRoundTrip, Q8_1) {
  expect_block_bound(DType::Q8_1, [](double amax, double, double) { return amax * (0.5 / 127 + kFp16) + 1e-12; });
}
TEST(QuantRoundTrip, Q4_0) {
  expect_block_bound(DType::Q4_0, [](double amax, double, double) { return amax * (1.0 / 8) * (1 + 16 * kFp16) + 1e-12; });
}
TEST(QuantRoundTrip, Q5_0) {
  expect_block_bound(DType::Q5_0, [](double amax, double, double) { return amax * (1.0 / 16) * (1 + 32 * kFp16) + 1e-12; });
}
TEST(QuantRoundTrip, Q4_1) {
  expect_block_bound(DType::Q4_1, [](double amax, double mn, double mx) {
    return (mx - mn) * (0.5 / 15 + kFp16) + std::fabs(mn) * kFp16 + 1e-12;
  });
}
TEST(QuantRoundTrip, Q5_1) {
  expect_block_bound(DType::Q5_1, [](double amax, double mn, double mx) {
    return (mx - mn) * (0.5 / 31 + kFp16) + std::fabs(mn) * kFp16 + 1e-12;
  });
}

double relative_rms_error(DType t, int64_t n, uint32_t seed) {
  const auto x = gaussian(n, seed);
  const auto y = round_trip(t, x);
  double err2 = 0, ref2 = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err2 += (static_cast<double>(y[i]) - x[i]) * (static_cast<double>(y[i]) - x[i]);
    ref2 += static_cast<double>(x[i]) * x[i];
  }
  return std::sqrt(err2 / ref2);
}

TEST(QuantRoundTrip, KQuantsRelativeRms) {
  const struct {
    DType t;
    double max_rel_rms;
  } cases[] = {{DType::Q2_K, 0.45}, {DType::Q3_K, 0.25}, {DType::Q4_K, 0.12}, {DType::Q5_K, 0.06},
               {DType::Q6_K, 0.03}, {DType::Q8_K, 0.01}};
  for (const auto& c : cases) {
    for (uint32_t seed = 1; seed <= 4; ++seed) {
      const double e = relative_rms_error(c.t, 256 * (1 + seed), seed);
      EXPECT_LE(e, c.max_rel_rms) << dtype_name(c.t) << " seed " << seed;
      EXPECT_GT(e, 0.0) << dtype_name(c.t) << ": a lossy format cannot be exact on Gaussian data";
    }
  }
}

TEST(QuantRoundTrip, KQuantsZeroRowStaysZero) {
  for (DType t : {DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q8_K, DType::TQ1_0,
                  DType::TQ2_0}) {
    const std::vector<float> x(512, 0.0f);
    for (float v : round_trip(t, x)) ASSERT_EQ(v, 0.0f) << dtype_name(t);
  }
}

// Ternary values times an fp16-exact scale are representable exactly.
TEST(QuantRoundTrip, TernaryExact) {
  for (DType t : {DType::TQ1_0, DType::TQ2_0}) {
    std::mt19937 rng(7);
    std::vector<float> x(256 * 3);
    for (size_t i = 0; i < x.size(); ++i) x[i] = 0.375f * static_cast<float>(static_cast<int>(rng() % 3) - 1);
    for (size_t b = 0; b < 3; ++b) x[b * 256 + 5] = 0.375f;  // every block reaches the scale
    const auto y = round_trip(t, x);
    for (size_t i = 0; i < x.size(); ++i) ASSERT_EQ(y[i], x[i]) << dtype_name(t) << " elem " << i;
  }
}

TEST(QuantRoundTrip, HalfFormats) {
  const auto x = gaussian(1000 * 2, 3, 10.0f);
  const auto y16 = round_trip(DType::F16, x);
  const auto ybf = round_trip(DType::BF16, x);
  const auto y32 = round_trip(DType::F32, x);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_LE(std::fabs(y16[i] - x[i]), std::fabs(x[i]) * kFp16 + 6e-8);
    EXPECT_LE(std::fabs(ybf[i] - x[i]), std::fabs(x[i]) / 256);
    EXPECT_EQ(y32[i], x[i]);
  }
}

}  // namespace
}  // namespace bl
