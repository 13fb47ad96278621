// cpu::matmul for every weight format x every ISA level this CPU has x many shapes, against
// fp64 references built from the scalar reference dequantizer. Fresh random inputs per case.
//
// Two checks per output element:
//  1. Kernel only. The reference multiplies dequant(W) with the very activation blocks the
//     kernel used (its own quantize_act), dequantized, in fp64 (one int8 term, or two when
//     matmul also quantizes the residual x - dequant(q1); either is accepted). Integer block sums are exact,
//     so what remains is fp32 rounding of the per-block scale products and the fp32
//     accumulation: tol = 1e-5 * sum_k |w_k x_k| (+ for the scalar kernels' Q8_1 activations
//     the fp16 rounding of s = d * sum(q): sum_b |m_b| * |s_b - d_b sum q_b|; the x86
//     kernels keep s in fp32). A misplaced nibble or scale
//     shows up as an error of the order of one block's contribution, far above this.
//  2. End to end, against dequant(W) times the fp32 x. The activation quantizer rounds each
//     x_k to a step d_b = amax_b / 127 of its block (32 or 256 elements), off by at most
//     d_b / 2 plus 127 * d_b * 2^-11 from storing d_b in fp16 (Q8_0 / Q8_1), so
//     |err| <= sum_k |w_k| * 0.57 * amax_b(k) / 127 + the check-1 terms. This worst case is
//     rigorous; typical errors are ~sqrt(cols) times smaller.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/half.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/matmul.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace bl::cpu {
namespace {

const DType kFormats[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                          DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};

std::vector<Isa> levels() {
  std::vector<Isa> out;
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
    if (isa_supported(isa)) out.push_back(isa);
  return out;
}

struct Case {
  DType w;
  Isa isa;
  int64_t cols, rows, n;
  bool bias;
  uint32_t seed;
};

void run_case(const Case& tc, ThreadPool& pool, AlignedBuffer& scratch) {
  SCOPED_TRACE(::testing::Message() << dtype_name(tc.w) << " isa=" << isa_name(tc.isa) << " cols=" << tc.cols
                                    << " rows=" << tc.rows << " n=" << tc.n << " bias=" << tc.bias
                                    << " seed=" << tc.seed);
  std::mt19937 rng(tc.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t cols = tc.cols, rows = tc.rows, n = tc.n;

  // W: Gaussian rows through the reference quantizer; wd: what the format actually holds.
  std::vector<uint8_t> w_bytes(row_bytes(tc.w, cols) * rows);
  std::vector<float> wd(cols * rows), tmp(cols);
  for (int64_t r = 0; r < rows; ++r) {
    for (auto& v : tmp) v = normal(rng);
    quantize_row(tc.w, tmp.data(), w_bytes.data() + row_bytes(tc.w, cols) * r, cols);
    dequantize_row(tc.w, w_bytes.data() + row_bytes(tc.w, cols) * r, wd.data() + cols * r, cols);
  }
  std::vector<float> x(cols * n), bias(rows), out(rows * n, NAN);
  for (auto& v : x) v = normal(rng);
  for (auto& v : bias) v = normal(rng);

  Tensor wt = make_tensor_2d(w_bytes.data(), tc.w, cols, rows);
  Tensor xt = make_tensor_2d(x.data(), DType::F32, cols, n);
  Tensor ot = make_tensor_2d(out.data(), DType::F32, rows, n);
  Tensor bt = make_tensor_2d(bias.data(), DType::F32, rows, 1);
  ASSERT_TRUE(check_matmul(wt, xt, ot, tc.bias ? &bt : nullptr).ok());
  matmul(wt, xt, ot, tc.bias ? &bt : nullptr, pool, scratch, tc.isa);

  // The activations as the kernel saw them (same quantizer, so the same blocks): xd1. When
  // the activations are taken as two int8 terms (a second quantization of the residual
  // x - xd1, for precision), the kernel sums both: xd1 + xd2. Either form is accepted.
  const DotKernel& k = *find_dot_kernel(tc.w, tc.isa);
  std::vector<float> xd1(x), xd2(x.size(), 0.0f);
  std::vector<uint8_t> xq1, xq2;
  int64_t act_block = 1;
  const size_t column_bytes = act_column_bytes(k, cols);
  if (k.act != DType::F32) {
    act_block = dtype_info(k.act)->block_elems;
    xq1.resize(column_bytes * n);
    xq2.resize(column_bytes * n);
    auto quantize = [&](const float* src, uint8_t* q, float* deq) {
      k.quantize_act(src, q, cols);
      if (k.dequantize_act)
        k.dequantize_act(q, deq, cols);
      else
        dequantize_row(k.act, q, deq, cols);
    };
    std::vector<float> residual(cols);
    for (int64_t c = 0; c < n; ++c) {
      quantize(x.data() + c * cols, xq1.data() + column_bytes * c, xd1.data() + c * cols);
      for (int64_t i = 0; i < cols; ++i) residual[i] = x[c * cols + i] - xd1[c * cols + i];
      quantize(residual.data(), xq2.data() + column_bytes * c, xd2.data() + c * cols);
    }
  }

  // For the scalar kernels' Q8_1 activations: sum_b |m_b| * |s_b - d_b sum q_b| of one term.
  auto q8_1_s_error = [&](const std::vector<uint8_t>& xq, int64_t c, int64_t r) {
    if (k.act != DType::Q8_1) return 0.0;  // weights with a min: Q4_1 / Q5_1 store d, m first
    const auto* xb = reinterpret_cast<const BlockQ8_1*>(xq.data() + column_bytes * c);
    const uint8_t* wrow = w_bytes.data() + row_bytes(tc.w, cols) * r;
    const size_t wblock = static_cast<size_t>(dtype_info(tc.w)->block_bytes);
    double err = 0;
    for (int64_t b = 0; b < cols / kQK; ++b) {
      uint16_t m;
      std::memcpy(&m, wrow + wblock * b + 2, sizeof(m));
      int sum = 0;
      for (int j = 0; j < kQK; ++j) sum += xb[b].qs[j];
      err += std::fabs(fp16_to_f32(m)) *
             std::fabs(static_cast<double>(fp16_to_f32(xb[b].s)) - static_cast<double>(fp16_to_f32(xb[b].d)) * sum);
    }
    return err;
  };

  for (int64_t c = 0; c < n; ++c) {
    const float* xc = x.data() + c * cols;
    const float* x1 = xd1.data() + c * cols;
    const float* x2 = xd2.data() + c * cols;
    for (int64_t r = 0; r < rows; ++r) {
      const float* wr = wd.data() + r * cols;
      double ref1 = 0, ref2 = 0, ref_exact = 0, abs1 = 0, abs2 = 0, act_err = 0;
      for (int64_t b = 0; b < cols; b += act_block) {
        double amax = 0;
        for (int64_t j = b; j < b + act_block; ++j) amax = std::max(amax, std::fabs(static_cast<double>(xc[j])));
        for (int64_t j = b; j < b + act_block; ++j) {
          const double wj = wr[j];
          ref1 += wj * x1[j];
          ref2 += wj * x2[j];
          ref_exact += wj * xc[j];
          abs1 += std::fabs(wj * xc[j]) + std::fabs(wj * x1[j]);
          abs2 += std::fabs(wj * x2[j]);
          if (act_block > 1) act_err += std::fabs(wj) * 0.57 * amax / 127;
        }
      }
      const double add = tc.bias ? bias[r] : 0.0;
      const double got = out[c * rows + r];
      const double s_err1 = q8_1_s_error(xq1, c, r);
      const double tol1 = 1e-5 * abs1 + s_err1 + 1e-6;
      const double tol2 = 1e-5 * (abs1 + abs2) + s_err1 + q8_1_s_error(xq2, c, r) + 1e-6;
      const bool one_term = std::fabs(got - (ref1 + add)) <= tol1;
      const bool two_terms = act_block > 1 && std::fabs(got - (ref1 + ref2 + add)) <= tol2;
      ASSERT_TRUE(one_term || two_terms)
          << "kernel check, out[" << c << ", " << r << "] = " << got << ", want " << ref1 + add << " (+-" << tol1
          << ") or with the residual term " << ref1 + ref2 + add << " (+-" << tol2 << ")";
      ASSERT_NEAR(got, ref_exact + add, tol2 + act_err) << "end-to-end check, out[" << c << ", " << r << "]";
    }
  }
}

TEST(MatmulFormats, EveryFormatIsaAndShapeMatchesReference) {
  ThreadPool pool(2);
  AlignedBuffer scratch;
  uint32_t seed = 1;
  int cases = 0;
  for (DType w : kFormats) {
    ASSERT_TRUE(matmul_supported(w)) << dtype_name(w);
    const bool k_quant = dtype_info(w)->block_elems == kQKK;
    const std::vector<int64_t> col_choices =
        k_quant ? std::vector<int64_t>{256, 512, 1280} : std::vector<int64_t>{32, 96, 256, 1280};
    for (Isa isa : levels())
      for (int64_t cols : col_choices)
        for (int64_t rows : {1, 3, 17, 129})
          for (int64_t n : {1, 2, 5, 16}) {
            run_case({w, isa, cols, rows, n, (seed % 2) == 0, seed++}, pool, scratch);
            if (HasFatalFailure()) return;
            ++cases;
          }
  }
  EXPECT_GT(cases, 1000);
}

// Plain float formats also take cols that are not a multiple of 8 / 16 (vector tails).
TEST(MatmulFormats, FloatWeightsWithOddCols) {
  ThreadPool pool(2);
  AlignedBuffer scratch;
  uint32_t seed = 50000;
  for (DType w : {DType::F32, DType::F16, DType::BF16})
    for (Isa isa : levels())
      for (int64_t cols : {1, 7, 33, 100})
        for (int64_t n : {1, 3, 6}) {
          run_case({w, isa, cols, 5, n, true, seed++}, pool, scratch);
          if (HasFatalFailure()) return;
        }
}

// The VNNI variants form the same int32 lane sums as maddubs + madd (no saturation at these
// magnitudes) and then the same fp32 operations, so their outputs are bit-identical.
TEST(MatmulFormats, VnniKernelsMatchTheDefaultAvx512KernelsExactly) {
  if (!dot_kernel_avx512_vnni(DType::Q4_0)) GTEST_SKIP() << "no AVX512-VNNI on this CPU";
  std::mt19937 rng(77);
  std::normal_distribution<float> normal;
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q8_0}) {
    const DotKernel& vnni = *dot_kernel_avx512_vnni(t);
    const DotKernel& plain = *dot_kernel_avx512(t);
    ASSERT_EQ(vnni.layout, plain.layout);
    for (int64_t cols : {32, 96, 4096 + 32}) {
      std::vector<float> w(cols), x(cols * kMaxDotCols);
      for (auto& v : w) v = normal(rng);
      for (auto& v : x) v = normal(rng);
      std::vector<uint8_t> wq(row_bytes(t, cols));
      quantize_row(t, w.data(), wq.data(), cols);
      const size_t stride = act_column_bytes(plain, cols);
      AlignedBuffer act(stride * kMaxDotCols);
      for (int c = 0; c < kMaxDotCols; ++c) plain.quantize_act(x.data() + c * cols, act.as<char>() + stride * c, cols);
      for (int nc = 1; nc <= kMaxDotCols; ++nc) {
        float a[kMaxDotCols], b[kMaxDotCols];
        vnni.dot(cols, wq.data(), act.data(), stride, nc, a);
        plain.dot(cols, wq.data(), act.data(), stride, nc, b);
        for (int c = 0; c < nc; ++c) EXPECT_EQ(a[c], b[c]) << dtype_name(t) << " cols " << cols << " nc " << nc;
      }
    }
  }
}

TEST(MatmulFormats, ScratchIsReusedOnceLargeEnough) {
  ThreadPool pool(2);
  AlignedBuffer scratch;
  const int64_t cols = 256, rows = 8, n = 4;
  std::vector<uint8_t> w(row_bytes(DType::Q4_0, cols) * rows, 0x88);
  std::vector<float> x(cols * n, 1.0f), out(rows * n);
  Tensor wt = make_tensor_2d(w.data(), DType::Q4_0, cols, rows);
  Tensor xt = make_tensor_2d(x.data(), DType::F32, cols, n);
  Tensor ot = make_tensor_2d(out.data(), DType::F32, rows, n);
  ASSERT_TRUE(scratch.resize(matmul_scratch_bytes(DType::Q4_0, cols, n)));
  const void* before = scratch.data();
  matmul(wt, xt, ot, nullptr, pool, scratch);
  matmul(wt, xt, ot, nullptr, pool, scratch);
  EXPECT_EQ(scratch.data(), before) << "matmul reallocated a scratch buffer that was large enough";
}

TEST(MatmulFormats, CheckRejectsBadOperands) {
  std::vector<float> buf(4096);
  Tensor w = make_tensor_2d(buf.data(), DType::Q4_0, 64, 4);
  Tensor x = make_tensor_2d(buf.data(), DType::F32, 64, 2);
  Tensor out = make_tensor_2d(buf.data(), DType::F32, 4, 2);
  EXPECT_TRUE(check_matmul(w, x, out, nullptr).ok());
  Tensor x_bad = make_tensor_2d(buf.data(), DType::F32, 32, 2);
  EXPECT_EQ(check_matmul(w, x_bad, out, nullptr).code(), StatusCode::invalid_argument);
  Tensor out_bad = make_tensor_2d(buf.data(), DType::F32, 5, 2);
  EXPECT_EQ(check_matmul(w, x, out_bad, nullptr).code(), StatusCode::invalid_argument);
  Tensor w_odd = make_tensor_2d(buf.data(), DType::Q4_0, 48, 4);
  Tensor x_odd = make_tensor_2d(buf.data(), DType::F32, 48, 2);
  EXPECT_EQ(check_matmul(w_odd, x_odd, out, nullptr).code(), StatusCode::invalid_argument);
  Tensor w_tq = make_tensor_2d(buf.data(), DType::TQ2_0, 256, 4);
  Tensor x_tq = make_tensor_2d(buf.data(), DType::F32, 256, 2);
  EXPECT_EQ(check_matmul(w_tq, x_tq, out, nullptr).code(), StatusCode::unsupported);
  Tensor bias = make_tensor_2d(buf.data(), DType::F32, 3, 1);
  EXPECT_EQ(check_matmul(w, x, out, &bias).code(), StatusCode::invalid_argument);
}

TEST(GetRows, MatchesReferenceDequantizeForEveryFormat) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                  DType::Q5_1, DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::TQ1_0,
                  DType::TQ2_0}) {
    const int64_t d = 512, vocab = 7;
    std::vector<uint8_t> table(row_bytes(t, d) * vocab);
    std::vector<float> row(d);
    for (int64_t v = 0; v < vocab; ++v) {
      for (auto& f : row) f = normal(rng);
      quantize_row(t, row.data(), table.data() + row_bytes(t, d) * v, d);
    }
    const int32_t ids[] = {6, 0, 3, 3};
    std::vector<float> out(d * 4), expect(d);
    Tensor tt = make_tensor_2d(table.data(), t, d, vocab);
    Tensor ot = make_tensor_2d(out.data(), DType::F32, d, 4);
    get_rows(tt, ids, 4, ot);
    for (int i = 0; i < 4; ++i) {
      dequantize_row(t, table.data() + row_bytes(t, d) * ids[i], expect.data(), d);
      for (int64_t j = 0; j < d; ++j) ASSERT_EQ(out[i * d + j], expect[j]) << dtype_name(t) << " row " << i;
    }
  }
}

}  // namespace
}  // namespace bl::cpu
