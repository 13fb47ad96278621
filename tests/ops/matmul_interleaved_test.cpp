// Layout::tiles16 (Q4_0 / Q4_1 / Q8_0 with 16 rows interleaved): the layout round trip, get_rows
// on it, the CPU backend's choice at load, and interleaved_matmul at every kernel level against
// fp64 references built from the scalar reference dequantizer, as matmul_formats_test does:
//  1. Kernel only: dequant(W) times the activations the kernel quantized (read back from the
//     scratch, both terms summed), in fp64. Integer block sums are exact, so what remains is
//     fp32 rounding of the scale products and of the accumulation: tol = 1e-5 * sum |w x| + 1e-6.
//  2. End to end, against dequant(W) times the fp32 x: each x_k is off by at most half a step
//     amax_b / 127 of its block (one term; two terms are ~256x closer), so
//     |err| <= sum_k |w_k| * 0.5 * amax_b(k) / 127 (+ a little fp32 slack) + check 1's tol.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "kernels/cpu/interleaved_rows.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/matmul_interleaved.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace bl::cpu {
namespace {

constexpr DType kTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K};

// Columns in the type's blocks: 32 for the legacy formats, 256 for Q4_K.
int64_t block_cols(DType t) { return t == DType::Q4_K ? 8 : 1; }

// Gaussian rows through the reference quantizer.
std::vector<uint8_t> random_weight(DType t, int64_t cols, int64_t rows, std::mt19937& rng) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<uint8_t> bytes(row_bytes(t, cols) * static_cast<size_t>(rows));
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (float& v : row) v = normal(rng);
    quantize_row(t, row.data(), bytes.data() + row_bytes(t, cols) * static_cast<size_t>(r), cols);
  }
  return bytes;
}

Tensor interleaved(const std::vector<uint8_t>& bytes, DType t, int64_t cols, int64_t rows, AlignedBuffer& storage,
                   ThreadPool& pool) {
  const Tensor src = make_tensor_2d(const_cast<uint8_t*>(bytes.data()), t, cols, rows);
  EXPECT_TRUE(storage.resize(src.bytes()));
  interleave_rows(src, storage.data(), pool);
  Tensor w = src;
  w.data = storage.data();
  w.layout = Layout::tiles16;
  return w;
}

TEST(InterleavedRows, DequantizedRowsEqualTheOriginalsBitForBit) {
  ThreadPool pool(2);
  std::mt19937 rng(7);
  for (DType t : kTypes)
    for (auto [c, rows] : {std::pair<int64_t, int64_t>{32, 16}, {96, 48}, {2048, 32}}) {
      const int64_t cols = c * block_cols(t);
      SCOPED_TRACE(::testing::Message() << dtype_name(t) << " cols=" << cols << " rows=" << rows);
      const auto bytes = random_weight(t, cols, rows, rng);
      AlignedBuffer storage;
      const Tensor w = interleaved(bytes, t, cols, rows, storage, pool);
      std::vector<float> want(static_cast<size_t>(cols)), got(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(t, bytes.data() + row_bytes(t, cols) * static_cast<size_t>(r), want.data(), cols);
        dequantize_interleaved_row(w, r, got.data());
        ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * sizeof(float))) << "row " << r;
      }
    }
}

TEST(InterleavedRows, GetRowsReadsTheTileLayout) {
  ThreadPool pool(1);
  std::mt19937 rng(8);
  const int64_t cols = 64, rows = 32;
  const auto bytes = random_weight(DType::Q4_1, cols, rows, rng);
  AlignedBuffer storage;
  const Tensor w = interleaved(bytes, DType::Q4_1, cols, rows, storage, pool);
  const int32_t ids[] = {31, 0, 17};
  std::vector<float> out(3 * cols), want(cols);
  Tensor ot = make_tensor_2d(out.data(), DType::F32, cols, 3);
  get_rows(w, ids, 3, ot);
  for (int i = 0; i < 3; ++i) {
    dequantize_row(DType::Q4_1, bytes.data() + row_bytes(DType::Q4_1, cols) * ids[i], want.data(), cols);
    EXPECT_EQ(0, std::memcmp(want.data(), out.data() + i * cols, cols * sizeof(float))) << "id " << ids[i];
  }
}

std::vector<const InterleavedKernels*> kernel_levels(std::vector<Isa>& isas) {
  std::vector<const InterleavedKernels*> out{&interleaved_kernels_scalar()};
  isas = {Isa::scalar};
  if (const InterleavedKernels* k = interleaved_kernels_avx512()) {
    out.push_back(k);
    isas.push_back(Isa::avx512);
  }
  return out;
}

struct Case {
  DType t;
  Isa isa;
  ActPrecision precision;
  int64_t cols, rows, n;
  bool bias;
};

void run_case(const Case& c, std::mt19937& rng, ThreadPool& pool) {
  SCOPED_TRACE(::testing::Message() << dtype_name(c.t) << " isa=" << isa_name(c.isa) << " terms="
                                    << (c.precision == ActPrecision::int8x2 ? 2 : 1) << " cols=" << c.cols
                                    << " rows=" << c.rows << " n=" << c.n << " bias=" << c.bias);
  const auto bytes = random_weight(c.t, c.cols, c.rows, rng);
  AlignedBuffer storage, scratch;
  const Tensor w = interleaved(bytes, c.t, c.cols, c.rows, storage, pool);
  std::vector<float> wd(static_cast<size_t>(c.cols * c.rows));
  for (int64_t r = 0; r < c.rows; ++r)
    dequantize_row(c.t, bytes.data() + row_bytes(c.t, c.cols) * static_cast<size_t>(r), wd.data() + r * c.cols, c.cols);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(c.cols * c.n)), bias(static_cast<size_t>(c.rows));
  std::vector<float> out(static_cast<size_t>(c.rows * c.n), NAN);
  for (float& v : x) v = normal(rng);
  for (float& v : bias) v = normal(rng);
  const Tensor xt = make_tensor_2d(x.data(), DType::F32, c.cols, c.n);
  Tensor ot = make_tensor_2d(out.data(), DType::F32, c.rows, c.n);
  const Tensor bt = make_tensor_2d(bias.data(), DType::F32, c.rows, 1);
  ASSERT_TRUE(check_matmul(w, xt, ot, c.bias ? &bt : nullptr).ok());
  matmul(w, xt, ot, c.bias ? &bt : nullptr, pool, scratch, c.isa, c.precision);

  const TokenActsLayout layout(c.cols, c.precision == ActPrecision::int8x2 ? 2 : 1);
  ASSERT_GE(scratch.bytes(), layout.token_bytes * static_cast<size_t>(c.n));
  std::vector<double> xq(static_cast<size_t>(c.cols));
  int worst_checked = 0;
  for (int64_t t = 0; t < c.n; ++t) {
    void* token = scratch.as<char>() + layout.token_bytes * static_cast<size_t>(t);
    const float* xt_f = x.data() + t * c.cols;
    for (int64_t k = 0; k < c.cols; ++k) {
      double v = 0;
      for (int term = 0; term < layout.terms; ++term)
        v += static_cast<double>(layout.d(token, term)[k / kQK]) * layout.q(token, term)[k];
      xq[static_cast<size_t>(k)] = v;
    }
    for (int64_t r = 0; r < c.rows; ++r) {
      const float* wr = wd.data() + r * c.cols;
      double kernel_ref = c.bias ? bias[static_cast<size_t>(r)] : 0.0, exact = kernel_ref, abs_wx = 0, step_bound = 0;
      for (int64_t b = 0; b < c.cols / kQK; ++b) {
        double amax = 0, abs_w = 0;
        for (int64_t k = b * kQK; k < (b + 1) * kQK; ++k) {
          kernel_ref += static_cast<double>(wr[k]) * xq[static_cast<size_t>(k)];
          exact += static_cast<double>(wr[k]) * xt_f[k];
          abs_wx += std::fabs(static_cast<double>(wr[k]) * xq[static_cast<size_t>(k)]);
          amax = std::max(amax, std::fabs(static_cast<double>(xt_f[k])));
          abs_w += std::fabs(wr[k]);
        }
        step_bound += abs_w * (0.5 + 1e-3) * amax / 127.0;
      }
      const double got = out[static_cast<size_t>(t * c.rows + r)];
      const double tol1 = 1e-5 * abs_wx + 1e-6;
      ASSERT_NEAR(got, kernel_ref, tol1) << "token " << t << " row " << r << " (kernel vs its own activations)";
      ASSERT_NEAR(got, exact, tol1 + step_bound) << "token " << t << " row " << r << " (vs fp32 activations)";
      ++worst_checked;
    }
  }
  EXPECT_EQ(worst_checked, c.rows * c.n);
}

TEST(InterleavedMatmul, EveryFormatLevelAndShapeMatchesReference) {
  ThreadPool pool(2);
  std::mt19937 rng(11);
  std::vector<Isa> isas;
  kernel_levels(isas);
  struct Shape {
    int64_t cols, rows, n;
  };
  // Odd block counts, one tile and many, every token-group remainder (1, 2, 3, 5, 7, 9 tokens),
  // more tokens than a prefill chunk (64); Q4_K takes 8x the columns (blocks of 256). Decode
  // takes 3 tiles a call from a thread's range, then pairs and a single: 11 and 19 tiles over two
  // threads leave 5 / 6 and 9 / 10.
  const Shape shapes[] = {{32, 16, 1},  {96, 48, 3},  {544, 32, 5}, {2048, 64, 1}, {160, 16, 9},
                          {64, 32, 70}, {4096, 16, 7}, {96, 176, 1}, {64, 304, 1}};
  for (DType t : kTypes)
    for (Isa isa : isas)
      for (ActPrecision p : {ActPrecision::int8, ActPrecision::int8x2})
        for (const Shape& s : shapes) {
          if (t == DType::Q4_K && s.cols * 8 > 8192) continue;  // 4096 x 8 columns: slow in the scalar check
          run_case({t, isa, p, s.cols * block_cols(t), s.rows, s.n, (s.n % 2) == 1}, rng, pool);
        }
}

TEST(InterleavedMatmul, VectorKernelsMatchTheScalarKernels) {
  const InterleavedKernels* vec = interleaved_kernels_avx512();
  if (!vec) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  ThreadPool pool(1);
  std::mt19937 rng(12);
  const int64_t rows = 32, n = 6;
  for (DType t : kTypes) {
    SCOPED_TRACE(dtype_name(t));
    const int64_t cols = 1024 * block_cols(t) / (t == DType::Q4_K ? 4 : 1);  // 1024 or 2048
    const auto bytes = random_weight(t, cols, rows, rng);
    AlignedBuffer storage, scratch_a, scratch_b;
    const Tensor w = interleaved(bytes, t, cols, rows, storage, pool);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(cols * n), a(rows * n), b(rows * n);
    for (float& v : x) v = normal(rng);
    const Tensor xt = make_tensor_2d(x.data(), DType::F32, cols, n);
    Tensor at = make_tensor_2d(a.data(), DType::F32, rows, n), btn = make_tensor_2d(b.data(), DType::F32, rows, n);
    // One term: both levels quantize x identically (same fp32 products, round to nearest even),
    // so only the fp32 accumulation order differs.
    matmul(w, xt, at, nullptr, pool, scratch_a, Isa::scalar, ActPrecision::int8);
    matmul(w, xt, btn, nullptr, pool, scratch_b, Isa::avx512, ActPrecision::int8);
    const TokenActsLayout layout(cols, 1);
    EXPECT_EQ(0, std::memcmp(scratch_a.data(), scratch_b.data(), layout.token_bytes * n)) << "quantized activations differ";
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * (std::fabs(a[i]) + 1.0)) << "output " << i;
  }
}

TEST(InterleavedMatmul, CheckRejectsTilesOfAnUnevenRowCount) {
  std::vector<uint8_t> w(row_bytes(DType::Q4_0, 32) * 24);
  std::vector<float> x(32), out(24);
  Tensor wt = make_tensor_2d(w.data(), DType::Q4_0, 32, 24);
  wt.layout = Layout::tiles16;
  const Status s = check_matmul(wt, make_tensor_2d(x.data(), DType::F32, 32, 1), make_tensor_2d(out.data(), DType::F32, 24, 1), nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("16-row tile"), std::string::npos) << s.message();
}

TEST(InterleavedMatmul, CpuBackendInterleavesWhatTheKernelsCanRead) {
  CpuBackend backend(1);
  std::mt19937 rng(13);
  const auto q4 = random_weight(DType::Q4_0, 64, 32, rng);
  const auto q4_odd = random_weight(DType::Q4_0, 64, 24, rng);
  const auto q5 = random_weight(DType::Q5_0, 64, 32, rng);
  auto a = backend.upload_weight(make_tensor_2d(const_cast<uint8_t*>(q4.data()), DType::Q4_0, 64, 32));
  auto b = backend.upload_weight(make_tensor_2d(const_cast<uint8_t*>(q4_odd.data()), DType::Q4_0, 64, 24));
  auto c = backend.upload_weight(make_tensor_2d(const_cast<uint8_t*>(q5.data()), DType::Q5_0, 64, 32));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->layout, interleave_at_load() ? Layout::tiles16 : Layout::rows);
  if (a->layout == Layout::tiles16) {
    EXPECT_NE(a->data, q4.data()) << "interleaved in place would change the file";
  }
  EXPECT_EQ(b->layout, Layout::rows) << "24 rows are not whole tiles";
  EXPECT_EQ(c->layout, Layout::rows) << "Q5_0 has no tile kernels";
  EXPECT_EQ(b->data, q4_odd.data());
}

}  // namespace
}  // namespace bl::cpu
