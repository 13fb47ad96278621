// bitplane_matmul (bl<b>g<g> weights) at every ISA level against two references, over every
// bit width, every group size and odd shapes; n <= 4 runs the fused decode kernel, n > 4 the
// prefill path (rows unpacked once).
//
// Tolerances, per output element o = sum_j w_j x_j with w the dequantized weights:
//  - against the math (dequantize_row, then a dot product in double): the activations are
//    rounded to int8 with a scale d per group, |x_j - d q_j| <= d / 2, so
//    |err| <= sum_j |w_j| d_group(j) / 2 (exact bound), plus 1e-5 * sum_j |w_j x_j| for fp32
//    accumulation;
//  - SIMD levels against the scalar level (same integer sums, fp32 sums in another order):
//    |err| <= 1e-5 * sum_j |w_j x_j| + 1e-6.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "core/aligned_buffer.h"
#include "core/thread_pool.h"
#include "kernels/cpu/lut_bitplane.h"
#include "kernels/cpu/lut_bitplane_kernels.h"
#include "quant/bl_group.h"
#include "quant/quant.h"

namespace bl::cpu {
namespace {

struct Case {
  DType type;
  int64_t cols, rows, n;
};

struct Problem {
  std::vector<uint8_t> w;      // [rows] rows of row_bytes
  std::vector<float> wf;       // dequantized [rows, cols]
  std::vector<float> x;        // [n, cols]
  std::vector<float> bias;     // [rows]
};

Problem make_problem(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Problem p;
  const size_t rb = row_bytes(c.type, c.cols);
  p.w.resize(rb * static_cast<size_t>(c.rows));
  p.wf.resize(static_cast<size_t>(c.cols * c.rows));
  std::vector<float> row(static_cast<size_t>(c.cols));
  for (int64_t r = 0; r < c.rows; ++r) {
    for (auto& v : row) v = dist(rng) * 0.05f;
    if (r % 5 == 3) for (auto& v : row) v = std::fabs(v);  // one-signed rows: zero point far from the middle
    quantize_row(c.type, row.data(), p.w.data() + rb * static_cast<size_t>(r), c.cols);
    dequantize_row(c.type, p.w.data() + rb * static_cast<size_t>(r), p.wf.data() + r * c.cols, c.cols);
  }
  p.x.resize(static_cast<size_t>(c.cols * c.n));
  for (auto& v : p.x) v = dist(rng);
  if (c.n > 1) for (int64_t j = 0; j < c.cols; ++j) p.x[static_cast<size_t>(j)] = 0.0f;  // an all-zero token
  p.bias.resize(static_cast<size_t>(c.rows));
  for (auto& v : p.bias) v = dist(rng);
  return p;
}

std::vector<float> run(const Case& c, Problem& p, Isa isa, bool with_bias, ThreadPool& pool) {
  Tensor w = make_tensor_2d(p.w.data(), c.type, c.cols, c.rows);
  Tensor x = make_tensor_2d(p.x.data(), DType::F32, c.cols, c.n);
  std::vector<float> out(static_cast<size_t>(c.rows * c.n), NAN);
  Tensor o = make_tensor_2d(out.data(), DType::F32, c.rows, c.n);
  Tensor b = make_tensor_2d(p.bias.data(), DType::F32, c.rows, 1);
  AlignedBuffer scratch;
  bitplane_matmul(w, x, o, with_bias ? &b : nullptr, pool, scratch, isa);
  return out;
}

void check_case(const Case& c, uint32_t seed, ThreadPool& pool) {
  Problem p = make_problem(c, seed);
  const int g = quant::bl_group_shape(c.type)->group_size;
  const bool with_bias = seed % 2 == 1;
  const std::vector<float> scalar = run(c, p, Isa::scalar, with_bias, pool);
  for (int64_t t = 0; t < c.n; ++t) {
    const float* xt = p.x.data() + t * c.cols;
    std::vector<double> d(static_cast<size_t>(c.cols / g));  // activation scale per group
    for (int64_t grp = 0; grp < c.cols / g; ++grp) {
      double amax = 0;
      for (int j = 0; j < g; ++j) amax = std::max(amax, std::fabs(static_cast<double>(xt[grp * g + j])));
      d[static_cast<size_t>(grp)] = amax / 127.0;
    }
    for (int64_t r = 0; r < c.rows; ++r) {
      const float* wr = p.wf.data() + r * c.cols;
      double want = with_bias ? p.bias[static_cast<size_t>(r)] : 0.0, mag = 0, act_err = 0;
      for (int64_t j = 0; j < c.cols; ++j) {
        want += static_cast<double>(wr[j]) * xt[j];
        mag += std::fabs(static_cast<double>(wr[j]) * xt[j]);
        act_err += std::fabs(static_cast<double>(wr[j])) * d[static_cast<size_t>(j / g)] / 2;
      }
      const float got = scalar[static_cast<size_t>(t * c.rows + r)];
      ASSERT_LE(std::fabs(got - want), act_err + 1e-5 * mag + 1e-6)
          << dtype_name(c.type) << " cols " << c.cols << " rows " << c.rows << " n " << c.n << " at [" << r << ", "
          << t << "]";
    }
  }
  for (Isa isa : {Isa::avx2, Isa::avx512}) {
    if (!isa_supported(isa)) continue;
    const std::vector<float> got = run(c, p, isa, with_bias, pool);
    for (int64_t t = 0; t < c.n; ++t)
      for (int64_t r = 0; r < c.rows; ++r) {
        double mag = 0;
        for (int64_t j = 0; j < c.cols; ++j)
          mag += std::fabs(static_cast<double>(p.wf[static_cast<size_t>(r * c.cols + j)]) *
                           p.x[static_cast<size_t>(t * c.cols + j)]);
        const size_t i = static_cast<size_t>(t * c.rows + r);
        ASSERT_LE(std::fabs(got[i] - scalar[i]), 1e-5 * mag + 1e-6)
            << isa_name(isa) << " " << dtype_name(c.type) << " cols " << c.cols << " rows " << c.rows << " n " << c.n
            << " at [" << r << ", " << t << "]: " << got[i] << " vs scalar " << scalar[i];
      }
  }
}

TEST(LutBitplane, EveryTypeOddShapesAllIsas) {
  ThreadPool pool(2);
  uint32_t seed = 1;
  for (int bits = 1; bits <= 8; ++bits)
    for (int g : {32, 64, 128}) {
      const DType t = *quant::bl_group_dtype(bits, g);
      for (int64_t groups : {1, 3})
        for (int64_t rows : {1, 7, 33})
          for (int64_t n : {1, 3, 4, 5, 9}) check_case({t, g * groups, rows, n}, seed++, pool);
    }
}

TEST(LutBitplane, LargerShapesOneAndTwoThreads) {
  ThreadPool one(1), two(2);
  check_case({DType::BL2G128, 2048, 67, 1}, 5, two);
  check_case({DType::BL3G64, 576, 129, 2}, 6, one);
  check_case({DType::BL4G32, 1536, 40, 17}, 7, two);
  check_case({DType::BL1G128, 1024, 31, 64}, 8, two);
}

// The SIMD activation quantizer writes exactly the scalar one's bytes (ties included).
TEST(LutBitplane, ActivationQuantizerMatchesScalarExactly) {
  if (!isa_supported(Isa::avx2)) GTEST_SKIP() << "no AVX2";
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (int g : {32, 64, 128}) {
    const int64_t cols = 5 * g;
    std::vector<float> x(static_cast<size_t>(cols));
    for (auto& v : x) v = dist(rng);
    for (int64_t j = 0; j < g; ++j) x[static_cast<size_t>(j)] = static_cast<float>(j % 9) - 4.0f;  // x * 127/4: ties
    for (int64_t j = g; j < 2 * g; ++j) x[static_cast<size_t>(j)] = 0.0f;                        // an all-zero group
    std::vector<int8_t> qa(static_cast<size_t>(cols)), qb(static_cast<size_t>(cols));
    std::vector<float> da(5), db(5);
    std::vector<int32_t> sa(5), sb(5);
    bitplane_quantize_scalar(x.data(), cols, g, qa.data(), da.data(), sa.data());
    bitplane_quantize_avx2(x.data(), cols, g, qb.data(), db.data(), sb.data());
    EXPECT_EQ(qa, qb) << "g " << g;
    EXPECT_EQ(da, db) << "g " << g;
    EXPECT_EQ(sa, sb) << "g " << g;
  }
}

TEST(LutBitplane, ScratchSizeCoversColumns) {
  EXPECT_GE(bitplane_matmul_scratch_bytes(DType::BL2G128, 2048, 3), 3u * (2048 + 2 * 16 * 4));
  EXPECT_EQ(bitplane_matmul_scratch_bytes(DType::Q4_0, 2048, 3), 0u);
  EXPECT_TRUE(bitplane_matmul_supported(DType::BL5G64));
  EXPECT_FALSE(bitplane_matmul_supported(DType::Q4_K));
}

}  // namespace
}  // namespace bl::cpu
