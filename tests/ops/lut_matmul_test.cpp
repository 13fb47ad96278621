// lut_matmul (bl<b>g<g> weights, lookup tables) at every ISA level, over every bit width, every
// group size and odd shapes; n <= 4 tokens is one tile-kernel call per tile, n > 4 several.
//
// Checks:
//  - the scalar level against the math (the dequantized weights times x, in double). The only
//    approximation is the int8 table: each entry is off by at most s_T / 2 and a row's group
//    sum adds (g / 4) quads x sum_p 2^p = (g / 4) (2^b - 1) entries, so per group
//    |err| <= |s| s_T (g / 8) (2^b - 1), plus 1e-5 * sum_j |w_j x_j| for fp32 arithmetic. A second check that a loose bound would not
//    catch: the RMS error over all outputs is no larger than that of int8 activations with one
//    scale per group (the usual dequantize-and-dot kernels' precision), with 10 % slack for the
//    randomness of small cases. (Rounding a quad's sum once instead of each of its 4 features
//    makes the tables the more precise of the two: per quad of b-bit codes the error variance
//    is sum_p 4^p vs sum_j q_j^2 units.)
//  - the SIMD levels against the scalar level: the same integers and the same fp32 operations
//    in the same order, so the outputs are equal bit for bit; and the table builders write the
//    same bytes.
//  - all of it with one table term (int8) and two (int8x2, the default: the residual table's
//    step is 1/254 of the first's, so the bound shrinks by 254 and the RMS check by 100).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/aligned_buffer.h"
#include "core/half.h"
#include "core/thread_pool.h"
#include "kernels/cpu/lut_matmul.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/lut_matmul_kernels.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rms_norm.h"
#include "quant/bl_group.h"
#include "quant/quant.h"

namespace bl::cpu {
namespace {

using quant::BlGroupShape;

struct Case {
  DType type;
  int64_t cols, rows, n;
};

struct Problem {
  std::vector<uint8_t> w;   // rows * row_bytes, in tiles
  std::vector<float> wf;    // dequantized [rows, cols]
  std::vector<float> x;     // [n, cols]
  std::vector<float> bias;  // [rows]
};

Problem make_problem(const Case& c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Problem p;
  std::vector<float> values(static_cast<size_t>(c.rows * c.cols));
  for (auto& v : values) v = dist(rng) * 0.05f;
  for (int64_t r = 3; r < c.rows; r += 5)  // one-signed rows: zero point far from the middle
    for (int64_t j = 0; j < c.cols; ++j) values[static_cast<size_t>(r * c.cols + j)] = std::fabs(values[static_cast<size_t>(r * c.cols + j)]);
  p.w.resize(row_bytes(c.type, c.cols) * static_cast<size_t>(c.rows));
  quantize_matrix(c.type, values.data(), p.w.data(), c.rows, c.cols);
  p.wf.resize(values.size());
  for (int64_t r = 0; r < c.rows; ++r) dequantize_matrix_row(c.type, p.w.data(), c.cols, r, p.wf.data() + r * c.cols);
  p.x.resize(static_cast<size_t>(c.cols * c.n));
  for (auto& v : p.x) v = dist(rng);
  if (c.n > 1) std::fill(p.x.begin(), p.x.begin() + c.cols, 0.0f);  // an all-zero token
  if (c.cols >= 64) p.x[static_cast<size_t>(c.cols / 2)] = 40.0f;   // an outlier feature, as LLMs have
  p.bias.resize(static_cast<size_t>(c.rows));
  for (auto& v : p.bias) v = dist(rng);
  return p;
}

std::vector<float> run(const Case& c, Problem& p, Isa isa, ActPrecision precision, bool with_bias, ThreadPool& pool) {
  Tensor w = make_tensor_2d(p.w.data(), c.type, c.cols, c.rows);
  Tensor x = make_tensor_2d(p.x.data(), DType::F32, c.cols, c.n);
  std::vector<float> out(static_cast<size_t>(c.rows * c.n), NAN);
  Tensor o = make_tensor_2d(out.data(), DType::F32, c.rows, c.n);
  Tensor b = make_tensor_2d(p.bias.data(), DType::F32, c.rows, 1);
  AlignedBuffer scratch;
  lut_matmul(w, x, o, with_bias ? &b : nullptr, pool, scratch, isa, precision);
  return out;
}

// s_T of each group of token t, as the builder defines it: max |entry| / 127, the largest
// entry of a quad being (|x0| + |x1| + |x2| + |x3|) / 2.
std::vector<double> table_scales(const float* xt, int64_t cols, int g) {
  std::vector<double> out;
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    double amax = 0;
    for (int q = 0; q < g / 4; ++q) {
      double abs_sum = 0;
      for (int m = 0; m < 4; ++m) abs_sum += std::fabs(static_cast<double>(xt[grp * g + 4 * q + m]));
      amax = std::max(amax, abs_sum / 2);
    }
    out.push_back(amax / 127.0 * (1 + 1e-6));
  }
  return out;
}

// The table rounding bound of row r for a token whose group scales are s_t (table_scales):
// per group |s| s_T (g / 8) (2^b - 1), shrunk by the residual table's step with two terms.
double table_error_bound(const Case& c, const Problem& p, const std::vector<double>& s_t, int64_t r, bool two_terms) {
  const BlGroupShape shape = *quant::bl_group_shape(c.type);
  const uint8_t* tile = p.w.data() + (r / 16) * 16 * row_bytes(c.type, c.cols);
  double bound = 0;
  for (int64_t grp = 0; grp < c.cols / shape.group_size; ++grp) {
    uint8_t codes[128];
    float s, z;
    quant::unpack_bl_codes(shape, tile + grp * shape.tile_group_bytes(), static_cast<int>(r % 16), codes, s, z);
    bound += std::fabs(s) * s_t[static_cast<size_t>(grp)] * (shape.group_size / 8.0) * ((1 << shape.bits) - 1);
  }
  // Two terms: the residual table's step is 1 / kLutResidualSteps of the first's.
  return two_terms ? bound * 1.01 / kLutResidualSteps : bound;
}

void check_case(const Case& c, uint32_t seed, ThreadPool& pool, ActPrecision precision) {
  const BlGroupShape shape = *quant::bl_group_shape(c.type);
  const int g = shape.group_size;
  Problem p = make_problem(c, seed);
  const bool with_bias = seed % 2 == 1;
  const bool two_terms = precision == ActPrecision::int8x2;
  const std::vector<float> scalar = run(c, p, Isa::scalar, precision, with_bias, pool);
  double err2 = 0, base_err2 = 0;
  for (int64_t t = 0; t < c.n; ++t) {
    const float* xt = p.x.data() + t * c.cols;
    const std::vector<double> s_t = table_scales(xt, c.cols, g);
    std::vector<double> x8(static_cast<size_t>(c.cols));  // xt as int8 per group, back in double
    for (int64_t grp = 0; grp < c.cols / g; ++grp) {
      double amax = 0;
      for (int j = 0; j < g; ++j) amax = std::max(amax, std::fabs(static_cast<double>(xt[grp * g + j])));
      for (int j = 0; j < g; ++j)
        x8[static_cast<size_t>(grp * g + j)] = amax > 0 ? std::nearbyint(xt[grp * g + j] * 127.0 / amax) * amax / 127.0 : 0.0;
    }
    for (int64_t r = 0; r < c.rows; ++r) {
      const float* wr = p.wf.data() + r * c.cols;
      double want = with_bias ? p.bias[static_cast<size_t>(r)] : 0.0, mag = 0, base = want;
      for (int64_t j = 0; j < c.cols; ++j) {
        want += static_cast<double>(wr[j]) * xt[j];
        base += static_cast<double>(wr[j]) * x8[static_cast<size_t>(j)];
        mag += std::fabs(static_cast<double>(wr[j]) * xt[j]);
      }
      const double table_err = table_error_bound(c, p, s_t, r, two_terms);
      const float got = scalar[static_cast<size_t>(t * c.rows + r)];
      ASSERT_LE(std::fabs(got - want), table_err + 1e-5 * mag + 1e-6)
          << dtype_name(c.type) << (two_terms ? " int8x2" : " int8") << " cols " << c.cols << " rows " << c.rows
          << " n " << c.n << " at [" << r << ", " << t << "]";
      err2 += (got - want) * (got - want);
      base_err2 += (base - want) * (base - want);
    }
  }
  if (c.rows * c.n >= 48) {  // enough outputs for an RMS; two terms: ~250x finer, checked at 1/50 of int8
    EXPECT_LE(std::sqrt(err2), (two_terms ? 0.02 : 2.0) * std::sqrt(base_err2) + 1e-6)
        << dtype_name(c.type) << (two_terms ? " int8x2" : " int8") << " cols " << c.cols << " n " << c.n;
  }
  for (Isa isa : {Isa::avx2, Isa::avx512}) {
    if (!isa_supported(isa)) continue;
    const std::vector<float> got = run(c, p, isa, precision, with_bias, pool);
    for (size_t i = 0; i < got.size(); ++i)
      ASSERT_EQ(got[i], scalar[i]) << isa_name(isa) << " " << dtype_name(c.type) << " cols " << c.cols << " rows "
                                   << c.rows << " n " << c.n << " at [" << i % c.rows << ", " << i / c.rows << "]";
  }
}

TEST(LutMatmul, EveryTypeOddShapesAllIsas) {
  ThreadPool pool(2);
  uint32_t seed = 1;
  for (int bits = 1; bits <= 8; ++bits)
    for (int g : {32, 64, 128}) {
      const DType t = *quant::bl_group_dtype(bits, g);
      for (int64_t groups : {1, 3})
        for (int64_t rows : {16, 48})
          for (int64_t n : {1, 3, 4, 5, 9})
            for (ActPrecision precision : {ActPrecision::int8, ActPrecision::int8x2})
              check_case({t, g * groups, rows, n}, seed++, pool, precision);
    }
}

TEST(LutMatmul, LargerShapesOneAndTwoThreads) {
  ThreadPool one(1), two(2);
  for (ActPrecision precision : {ActPrecision::int8, ActPrecision::int8x2}) {
    check_case({DType::BL2G128, 2048, 80, 1}, 5, two, precision);
    check_case({DType::BL3G64, 576, 144, 2}, 6, one, precision);
    check_case({DType::BL4G32, 1536, 48, 17}, 7, two, precision);
    check_case({DType::BL1G128, 1024, 32, 64}, 8, two, precision);
  }
}

// Decode runs several tiles per kernel call (four up to 4 bits, two above; the AVX-512 level eight
// at 3 and 4 bits, in two calls of four with two table terms), taken from equal parts of each
// thread's range, and the tiles left over one by one: 19 tiles give one thread parts of 2 and 3
// left over (S = 8), 4 and 3 (S = 4) or 9 and 1 (S = 2), and two threads 9 and 10 tiles.
TEST(LutMatmul, DecodeGroupsOfTilesEveryWidth) {
  ThreadPool one(1), two(2);
  uint32_t seed = 100;
  for (int bits = 1; bits <= 8; ++bits) {
    const DType t = *quant::bl_group_dtype(bits, 64);
    for (ActPrecision precision : {ActPrecision::int8, ActPrecision::int8x2}) {
      check_case({t, 256, 19 * 16, 1}, seed++, one, precision);
      check_case({t, 256, 19 * 16, 1}, seed++, two, precision);
    }
  }
}

// Every level's table builder writes the scalar builder's bytes (ties and an all-zero group
// included).
TEST(LutMatmul, TableBuildersMatchScalarExactly) {
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  for (int g : {32, 64, 128}) {
    const int64_t cols = 5 * g, groups = 5;
    std::vector<float> x(static_cast<size_t>(cols));
    for (auto& v : x) v = dist(rng);
    for (int64_t j = 0; j < g; ++j) x[static_cast<size_t>(j)] = static_cast<float>(j % 9) - 4.0f;  // ties
    for (int64_t j = g; j < 2 * g; ++j) x[static_cast<size_t>(j)] = 0.0f;
    std::vector<int8_t> ta(static_cast<size_t>(cols * 4)), tb(ta.size()), ra(ta.size()), rb(ta.size());
    std::vector<float> sa(groups), sb(groups), za(groups), zb(groups);
    lut_kernels_scalar().build(x.data(), cols, g, ta.data(), ra.data(), sa.data(), za.data());
    // Entry 15 of quad 0 is half the sum of its 4 features, in two terms of units s_T and
    // s_T / kLutResidualSteps (sa holds the latter); entry 0 is its negative (the mirror).
    const float entry15 = static_cast<float>(ta[15] * kLutResidualSteps + ra[15]) * sa[0];
    EXPECT_LE(std::fabs(entry15 - 0.5f * (x[0] + x[1] + x[2] + x[3])), 0.5f * sa[0] * 1.0001f);
    EXPECT_EQ(ta[0], -ta[15]);
    EXPECT_EQ(ra[0], -ra[15]);
    const BlGroupShape shape{4, g};
    auto check = [&](const LutKernels& k, const char* level) {
      k.build(x.data(), cols, g, tb.data(), rb.data(), sb.data(), zb.data());
      EXPECT_EQ(ta, tb) << level << " g " << g;
      EXPECT_EQ(ra, rb) << level << " g " << g;
      EXPECT_EQ(sa, sb) << level << " g " << g;
      EXPECT_EQ(za, zb) << level << " g " << g;
    };
    if (isa_supported(Isa::avx2)) check(*lut_kernels_avx2(shape), "avx2");
    if (isa_supported(Isa::avx512)) {
      if (const LutKernels* k = lut_kernels_avx512(shape)) check(*k, "avx512");
    }
  }
}

// One token with a DecodeFusion (matmul.h) against the plain product of x' computed apart:
//  - SwiGLU prologue and accumulate: x' = silu_mul(x, up) as the fusion makes it, so the tables
//    and sums are the same and the outputs equal the composition's bit for bit;
//  - norm prologue: the tables come from x * norm and the sums are scaled by 1 / rms after, so
//    the int8 entries may round differently from tables of rms_norm_row(x): the output is
//    checked against the math instead (x' and the dequantized weights in fp64), within
//    check_case's bound for x' (the table scales are those of x', by scale invariance).
// At every level, with one and two threads (5 groups: shares of 2 and 3), int8 and int8x2.
enum class FusionMode { norm, norm_bias, swiglu, add, swiglu_add };

void check_decode_fusion(const Case& c, FusionMode mode, Isa isa, ActPrecision precision, ThreadPool& pool,
                         uint32_t seed) {
  const BlGroupShape shape = *quant::bl_group_shape(c.type);
  Problem p = make_problem(c, seed);
  const bool norm = mode == FusionMode::norm || mode == FusionMode::norm_bias;
  const bool swiglu = mode == FusionMode::swiglu || mode == FusionMode::swiglu_add;
  const bool accumulate = mode == FusionMode::add || mode == FusionMode::swiglu_add;
  const bool with_bias = mode == FusionMode::norm_bias;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(0.5f, 1.5f);
  std::vector<float> aux(static_cast<size_t>(c.cols)), before(static_cast<size_t>(c.rows));
  for (auto& v : aux) v = dist(rng);  // the norm weight or up
  for (auto& v : before) v = dist(rng) - 1.0f;
  const float eps = 1e-5f;
  const DecodeFusion fusion{.norm = norm ? aux.data() : nullptr,
                            .eps = eps,
                            .up = swiglu ? aux.data() : nullptr,
                            .accumulate = accumulate};
  Tensor w = make_tensor_2d(p.w.data(), c.type, c.cols, c.rows);
  Tensor x = make_tensor_2d(p.x.data(), DType::F32, c.cols, 1);
  Tensor b = make_tensor_2d(p.bias.data(), DType::F32, c.rows, 1);
  std::vector<float> fused = accumulate ? before : std::vector<float>(before.size(), NAN);
  Tensor o = make_tensor_2d(fused.data(), DType::F32, c.rows, 1);
  AlignedBuffer scratch;
  lut_matmul(w, x, o, with_bias ? &b : nullptr, pool, scratch, isa, precision, fusion);

  if (!norm) {  // x' as the fusion makes it, then the plain product (and the add)
    std::vector<float> xp = p.x;
    if (swiglu) silu_mul(p.x.data(), aux.data(), xp.data(), c.cols);
    std::vector<float> plain(before.size(), NAN);
    Tensor xpt = make_tensor_2d(xp.data(), DType::F32, c.cols, 1);
    Tensor po = make_tensor_2d(plain.data(), DType::F32, c.rows, 1);
    lut_matmul(w, xpt, po, with_bias ? &b : nullptr, pool, scratch, isa, precision);
    for (int64_t r = 0; r < c.rows; ++r) ASSERT_EQ(fused[r], accumulate ? before[r] + plain[r] : plain[r]) << "row " << r;
    return;
  }
  // The norm: x' in fp64, then check_case's bound with the table scales of x'.
  double sum_sq = 0;
  for (float v : p.x) sum_sq += static_cast<double>(v) * v;
  const double inv_rms = 1.0 / std::sqrt(sum_sq / c.cols + eps);
  std::vector<float> xpf(static_cast<size_t>(c.cols));
  for (int64_t j = 0; j < c.cols; ++j) xpf[j] = static_cast<float>(p.x[j] * inv_rms * aux[j]);
  const std::vector<double> s_t = table_scales(xpf.data(), c.cols, shape.group_size);
  for (int64_t r = 0; r < c.rows; ++r) {
    double want = with_bias ? p.bias[r] : 0.0, mag = 0;
    for (int64_t j = 0; j < c.cols; ++j) {
      const double term = static_cast<double>(p.wf[r * c.cols + j]) * p.x[j] * inv_rms * aux[j];
      want += term;
      mag += std::fabs(term);
    }
    const double table_err = table_error_bound(c, p, s_t, r, precision == ActPrecision::int8x2);
    ASSERT_LE(std::fabs(fused[r] - want), table_err + 1e-5 * mag + 1e-6) << "row " << r;
  }
}

TEST(LutMatmul, DecodeFusionEveryLevel) {
  ThreadPool one(1), two(2);
  uint32_t seed = 200;
  for (DType t : {DType::BL2G128, DType::BL3G64, DType::BL4G128, DType::BL8G32})
    for (ThreadPool* pool : {&one, &two})
      for (ActPrecision precision : {ActPrecision::int8, ActPrecision::int8x2})
        for (FusionMode mode : {FusionMode::norm, FusionMode::norm_bias, FusionMode::swiglu, FusionMode::add,
                                FusionMode::swiglu_add})
          for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
            if (!isa_supported(isa)) continue;
            SCOPED_TRACE(std::string(dtype_name(t)) + " threads " + std::to_string(pool->size()) + " mode " +
                         std::to_string(static_cast<int>(mode)) + " " + std::string(isa_name(isa)) +
                         (precision == ActPrecision::int8x2 ? " int8x2" : " int8"));
            check_decode_fusion({t, 5 * quant::bl_group_shape(t)->group_size, 48, 1}, mode, isa, precision, *pool,
                                seed++);
          }
}

// The largest sums a tile can produce: every code byte 0xFF (all nibbles 15, codes 2^b - 1) or
// 0x77 (nibbles 7: columns 4q..4q+2 at 2^b - 1, column 4q + 3 at 0), s = 1, z = 0, and x all +1
// or all -1, so every looked-up entry is +-127 (nibble 15: half the quad's sum, the group's
// largest) or 64 with residual -127 (nibble 7). A level that keeps narrow partial sums (the
// AVX2 level adds int16 sums over several units before widening them) must still give the
// scalar level's outputs bit for bit; with two terms they are the exact product.
TEST(LutMatmul, LargestSumsEveryWidth) {
  ThreadPool pool(2);
  for (int bits = 1; bits <= 8; ++bits)
    for (int g : {32, 128})
      for (uint8_t pattern : {uint8_t{0xFF}, uint8_t{0x77}})
        for (float sign : {1.0f, -1.0f})
          for (int64_t n : {1, 2})
            for (ActPrecision precision : {ActPrecision::int8, ActPrecision::int8x2}) {
              const DType type = *quant::bl_group_dtype(bits, g);
              const BlGroupShape shape = *quant::bl_group_shape(type);
              const int64_t cols = 4 * g, rows = 48;
              std::vector<uint8_t> w(row_bytes(type, cols) * rows, pattern);
              for (size_t at = 0; at < w.size(); at += static_cast<size_t>(shape.tile_group_bytes())) {
                for (int r = 0; r < 16; ++r) {
                  const uint16_t one = 0x3C00, zero = 0;  // fp16 1.0 and 0.0
                  std::memcpy(&w[at + 2 * r], &one, 2);
                  std::memcpy(&w[at + 32 + 2 * r], &zero, 2);
                }
              }
              std::vector<float> x(static_cast<size_t>(cols * n), sign);
              const double code = (1 << bits) - 1;
              const double want = sign * code * static_cast<double>(cols) * (pattern == 0xFF ? 1.0 : 0.75);
              Tensor wt = make_tensor_2d(w.data(), type, cols, rows);
              Tensor xt = make_tensor_2d(x.data(), DType::F32, cols, n);
              std::vector<float> scalar;
              for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
                if (!isa_supported(isa)) continue;
                std::vector<float> out(static_cast<size_t>(rows * n), NAN);
                Tensor o = make_tensor_2d(out.data(), DType::F32, rows, n);
                AlignedBuffer scratch;
                lut_matmul(wt, xt, o, nullptr, pool, scratch, isa, precision);
                const std::string what = std::string(dtype_name(type)) + " " + std::string(isa_name(isa)) + " pattern " +
                                         std::to_string(pattern) + " sign " + std::to_string(sign) + " n " +
                                         std::to_string(n) + (precision == ActPrecision::int8x2 ? " int8x2" : " int8");
                if (isa == Isa::scalar) {
                  scalar = out;
                  if (precision == ActPrecision::int8x2) {
                    for (float v : out) ASSERT_NEAR(v, want, 1e-5 * std::fabs(want)) << what;
                  }
                } else {
                  ASSERT_EQ(out, scalar) << what;
                }
              }
            }
}

TEST(LutMatmul, ScratchSizeCoversTables) {
  EXPECT_GE(lut_matmul_scratch_bytes(DType::BL2G128, 2048, 3), 3u * (2 * 2048 * 4 + 2 * 16 * 4));  // two terms
  EXPECT_EQ(lut_matmul_scratch_bytes(DType::Q4_0, 2048, 3), 0u);
  EXPECT_TRUE(lut_matmul_supported(DType::BL5G64));
  EXPECT_FALSE(lut_matmul_supported(DType::Q4_K));
}

}  // namespace
}  // namespace bl::cpu
