// GGUF block formats as bl<b>g32 (quant::blocks_to_bl) and the CPU backend's conversion at load.
//
// Each weight after conversion is compared with the format's own dequantization (dequantize_row):
// Q4_0 and Q5_0 must be bit-exact; Q4_1, Q5_1, Q4_K, Q5_K (s and z rounded to fp16) within
// 2^-10 (|w| + 2 |b|), b the group's offset (-m, or dmin m_j), twice the ~2^-11 the rounding
// allows. Edge groups: a zero scale with a nonzero offset (constant groups), and an offset so
// much larger than the scale that z leaves fp16's range.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/half.h"
#include "kernels/cpu/blocks_as_bl.h"
#include "quant/bl_group.h"
#include "quant/blocks.h"
#include "quant/quant.h"
#include "quant/quant_formats.h"

namespace bl {
namespace {

constexpr DType kFormats[] = {DType::Q4_0, DType::Q5_0, DType::Q4_1, DType::Q5_1, DType::Q4_K, DType::Q5_K};

bool exact(DType t) { return t == DType::Q4_0 || t == DType::Q5_0; }

// A matrix [rows][cols] in format t from Gaussian values (an offset per row, so the min terms
// are not all near 0).
std::vector<uint8_t> random_matrix(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(cols));
  std::vector<uint8_t> bytes(row_bytes(t, cols) * static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float offset = 0.5f * dist(rng);
    for (float& v : row) v = dist(rng) + offset;
    quantize_row(t, row.data(), bytes.data() + row_bytes(t, cols) * static_cast<size_t>(r), cols);
  }
  return bytes;
}

// |b| of the 32-weight group `g` of a row in format t (0 for Q4_0 / Q5_0).
float group_offset(DType t, const uint8_t* row, int64_t g) {
  switch (t) {
    case DType::Q4_1:
      return std::fabs(fp16_to_f32(reinterpret_cast<const BlockQ4_1*>(row)[g].m));
    case DType::Q5_1:
      return std::fabs(fp16_to_f32(reinterpret_cast<const BlockQ5_1*>(row)[g].m));
    case DType::Q4_K:
    case DType::Q5_K: {
      const size_t bytes = t == DType::Q4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ5_K);
      const auto* head = reinterpret_cast<const BlockQ4_K*>(row + bytes * static_cast<size_t>(g / 8));
      uint8_t sc, m;
      quant::get_scale_min_k4(static_cast<int>(g % 8), head->scales, &sc, &m);
      return std::fabs(fp16_to_f32(head->dmin) * m);
    }
    default:
      return 0.0f;
  }
}

// Converts `bytes` and checks every weight against dequantize_row; returns the largest error
// over its bound (0 for the exact formats).
double check_conversion(DType t, const std::vector<uint8_t>& bytes, int64_t rows, int64_t cols) {
  const DType to = *quant::bl_equivalent(t);
  std::vector<uint8_t> bl(row_bytes(to, cols) * static_cast<size_t>(rows));
  quant::blocks_to_bl(t, bytes.data(), bl.data(), rows, cols);
  std::vector<float> want(static_cast<size_t>(cols)), got(static_cast<size_t>(cols));
  double worst = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* row = bytes.data() + row_bytes(t, cols) * static_cast<size_t>(r);
    dequantize_row(t, row, want.data(), cols);
    quant::dequantize_bl_row(to, bl.data(), cols, r, got.data());
    for (int64_t j = 0; j < cols; ++j) {
      const float w = want[static_cast<size_t>(j)], v = got[static_cast<size_t>(j)];
      if (exact(t)) {
        EXPECT_EQ(std::memcmp(&w, &v, sizeof w), 0) << dtype_name(t) << " row " << r << " col " << j << ": " << v
                                                   << " instead of " << w;
        continue;
      }
      const double bound = std::ldexp(std::fabs(w) + 2.0 * group_offset(t, row, j / 32), -10);
      const double err = std::fabs(static_cast<double>(v) - w);
      EXPECT_TRUE(std::isfinite(v) && err <= bound)
          << dtype_name(t) << " row " << r << " col " << j << ": " << v << " instead of " << w << " (bound " << bound << ")";
      if (bound > 0.0) worst = std::max(worst, err / bound);
    }
  }
  return worst;
}

TEST(BlFromBlocks, EveryWeightAsTheFormatDequantizesIt) {
  for (DType t : kFormats) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    ASSERT_TRUE(quant::bl_equivalent(t).has_value());
    const int64_t rows = 32, cols = 512;
    const double worst = check_conversion(t, random_matrix(t, rows, cols, 7), rows, cols);
    std::printf("[ %s ] largest error / bound = %.3g\n", std::string(dtype_name(t)).c_str(), worst);
  }
  EXPECT_FALSE(quant::bl_equivalent(DType::Q8_0).has_value());
  EXPECT_FALSE(quant::bl_equivalent(DType::Q6_K).has_value());
}

// Groups whose scale is 0 but offset is not (every weight the offset), and groups whose offset is
// over 65504 times their scale (z past fp16).
TEST(BlFromBlocks, ConstantAndExtremeGroups) {
  const int64_t rows = 16, cols = 256;
  for (DType t : {DType::Q4_1, DType::Q5_1, DType::Q4_K, DType::Q5_K}) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    std::vector<uint8_t> bytes = random_matrix(t, rows, cols, 11);
    const size_t rb = row_bytes(t, cols);
    for (int64_t r = 0; r < rows; ++r) {
      uint8_t* row = bytes.data() + rb * static_cast<size_t>(r);
      // Row r: its first block gets scale 0 (even r) or the smallest subnormal scale (odd r).
      const uint16_t scale = r % 2 ? 0x0001 : 0x0000;
      if (t == DType::Q4_1) reinterpret_cast<BlockQ4_1*>(row)->d = scale;
      if (t == DType::Q5_1) reinterpret_cast<BlockQ5_1*>(row)->d = scale;
      if (t == DType::Q4_K || t == DType::Q5_K) {
        auto* head = reinterpret_cast<BlockQ4_K*>(row);
        head->d = scale;
        head->dmin = f32_to_fp16(0.25f);
      }
    }
    check_conversion(t, bytes, rows, cols);
  }
}

// The CPU backend converts at load where blocks_as_bl says so, and the product stays within
// the op tests' tolerance of the reference backend (which multiplies the original blocks).
TEST(BlFromBlocks, CpuBackendRunsConvertedWeights) {
  struct Mode {
    explicit Mode(cpu::BlocksAsBl m) { cpu::set_blocks_as_bl(m); }
    ~Mode() { cpu::set_blocks_as_bl(cpu::BlocksAsBl::automatic); }
  };
  auto cpu_backend = make_cpu_backend(2);
  for (DType t : kFormats) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    const int64_t rows = 48, cols = 512;
    std::vector<uint8_t> bytes = random_matrix(t, rows, cols, 13);
    const Tensor host = make_tensor_2d(bytes.data(), t, cols, rows);
    {
      const Mode never(cpu::BlocksAsBl::never);
      auto kept = cpu_backend->upload_weight(host);
      ASSERT_TRUE(kept.ok());
      EXPECT_EQ(kept->dtype, t);
      EXPECT_FALSE(cpu::blocks_as_bl(t, 40).has_value());
    }
    const Mode always(cpu::BlocksAsBl::always);
    EXPECT_FALSE(cpu::blocks_as_bl(t, 40).has_value()) << "40 rows are not whole 16-row tiles";
    auto w = cpu_backend->upload_weight(host);
    ASSERT_TRUE(w.ok());
    EXPECT_EQ(w->dtype, *quant::bl_equivalent(t));
    // x [cols, n] for 1 and 5 tokens, against the reference backend's product of the blocks.
    auto ref = make_reference_backend();
    std::mt19937 rng(17);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    for (int64_t n : {1, 5}) {
      std::vector<float> x(static_cast<size_t>(cols * n)), got(static_cast<size_t>(rows * n)), want(got.size());
      for (float& v : x) v = dist(rng);
      Tensor xt = make_tensor_2d(x.data(), DType::F32, cols, n);
      Tensor gt = make_tensor_2d(got.data(), DType::F32, rows, n), wt = make_tensor_2d(want.data(), DType::F32, rows, n);
      cpu_backend->matmul(*w, xt, gt, nullptr);
      ref->matmul(host, xt, wt, nullptr);
      // The op tests' bound: 1e-2 of sum_k |w_k x_k| per output.
      std::vector<float> wrow(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(t, bytes.data() + row_bytes(t, cols) * static_cast<size_t>(r), wrow.data(), cols);
        for (int64_t i = 0; i < n; ++i) {
          double terms = 0.0;
          for (int64_t k = 0; k < cols; ++k) terms += std::fabs(wrow[static_cast<size_t>(k)] * x[static_cast<size_t>(i * cols + k)]);
          const size_t o = static_cast<size_t>(i * rows + r);
          EXPECT_LE(std::fabs(got[o] - want[o]), 1e-2 * terms) << "row " << r << " token " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace bl
