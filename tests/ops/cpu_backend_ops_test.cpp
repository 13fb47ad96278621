// Every op of the CPU backend against the reference backend (ops/backend_op_cases.h), at the
// widest ISA of this CPU and, by re-running this binary with BITLIGHT_ISA, at every lower one.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "kernels/cpu/activation.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/kv_store.h"
#include "ops/backend_op_cases.h"
#include "quant/quant.h"

namespace bl {
namespace {

// One backend per test: hardware threads (2 on the dev machine), the decode configuration.
struct CpuBackendOps : ::testing::Test {
  std::unique_ptr<Backend> backend = make_cpu_backend(0);
  op_cases::OpCases cases{*backend};
  void TearDown() override {
    std::printf("[ %s ] max error / tolerance = %.3g\n", backend->name().c_str(), cases.max_error_ratio());
  }
};

TEST_F(CpuBackendOps, Add) { cases.add(); }
TEST_F(CpuBackendOps, RmsNorm) { cases.rms_norm(); }
TEST_F(CpuBackendOps, AddRmsNorm) { cases.add_rms_norm(); }
TEST_F(CpuBackendOps, SiluMul) { cases.silu_mul(); }
TEST_F(CpuBackendOps, GeluMul) { cases.gelu_mul(); }
TEST_F(CpuBackendOps, Scale) { cases.scale(); }
TEST_F(CpuBackendOps, Rope) { cases.rope(); }
TEST_F(CpuBackendOps, KvStore) { cases.kv_store(); }
TEST_F(CpuBackendOps, Attention) { cases.attention(); }
TEST_F(CpuBackendOps, WindowedAttention) { cases.windowed_attention(); }
TEST_F(CpuBackendOps, GetRows) { cases.get_rows(); }
TEST_F(CpuBackendOps, Matmul) { cases.matmul(); }
TEST_F(CpuBackendOps, FusedMatmul) { cases.fused_matmul(); }
TEST_F(CpuBackendOps, FusedMatmulSameInput) { cases.fused_matmul_same_input(); }
TEST_F(CpuBackendOps, FusedFfn) { cases.fused_ffn(); }
TEST_F(CpuBackendOps, RopeKvStore) { cases.rope_kv_store(); }
TEST_F(CpuBackendOps, RopeKvStoreAttention) { cases.rope_kv_store_attention(); }
TEST_F(CpuBackendOps, EachSequence) { cases.each_sequence(); }
TEST_F(CpuBackendOps, Argmax) { cases.argmax(); }
TEST_F(CpuBackendOps, SampleTopK) { cases.sample_top_k(); }

// Attention splits work by thread count (slot chunks when there are few (token, kv head)
// pairs), so other counts take other paths: 1 thread (no pool), 3 and 4 threads (chunks).
TEST(CpuBackendThreads, AttentionAndMatmulWithOtherThreadCounts) {
  for (int threads : {1, 3, 4}) {
    SCOPED_TRACE("threads=" + std::to_string(threads));
    auto backend = make_cpu_backend(threads);
    op_cases::OpCases cases(*backend, 99 + threads);
    cases.attention();
    cases.windowed_attention();
    cases.rms_norm();
    cases.silu_mul();
    cases.gelu_mul();
  }
}

TEST(CpuBackend, NameSaysIsaAndThreads) {
  auto backend = make_cpu_backend(2);
  const std::string expected = "cpu (" + std::string(cpu::isa_name(cpu::active_isa())) + ", 2 threads)";
  EXPECT_EQ(backend->name(), expected);
  EXPECT_EQ(make_cpu_backend(1)->name().find("1 thread)") != std::string::npos, true);
}

TEST(CpuBackend, SupportsEveryFormatTheOpCasesUse) {
  auto backend = make_cpu_backend(1);
  for (DType t : op_cases::OpCases::matmul_types()) EXPECT_TRUE(backend->supports(t)) << dtype_name(t);
}

TEST(CpuBackend, AllocRejectsBadShapes) {
  auto backend = make_cpu_backend(1);
  auto negative = backend->alloc(DType::F32, {4, -1, 1, 1});
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("negative"), std::string::npos) << negative.status().message();
  auto partial_block = backend->alloc(DType::Q4_0, {33, 2, 1, 1});
  ASSERT_FALSE(partial_block.ok());
  EXPECT_NE(partial_block.status().message().find("block size"), std::string::npos) << partial_block.status().message();
  auto overflow = backend->alloc(DType::F32, {int64_t{1} << 40, int64_t{1} << 30, 1, 1});
  ASSERT_FALSE(overflow.ok());
  EXPECT_NE(overflow.status().message().find("overflows"), std::string::npos) << overflow.status().message();
  auto ok = backend->alloc(DType::F16, {80, 3, 7, 1});
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->bytes(), size_t{80 * 3 * 7 * 2});
  EXPECT_EQ(reinterpret_cast<uintptr_t>(ok->data) % 64, 0u);
}

TEST(CpuBackend, UploadWeightKeepsHostData) {
  auto backend = make_cpu_backend(1);
  float host[64] = {};
  auto w = backend->upload_weight(make_tensor_2d(host, DType::F32, 32, 2));
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->data, static_cast<void*>(host));
}

// Ternary GGUF weights (TQ1_0, TQ2_0) run as bl2g128: the conversion at upload is exact (every
// row decodes to the same floats), and the product is within the lookup-table bound of the
// exact one (lut_matmul_test.cpp: per group of 128, |err| <= d * s_T * 16 * 3, s_T the group's
// table scale <= max over quads of sum |x| / 2 / 127). Rows that do not fill 16-row tiles are
// refused with a message.
TEST(CpuBackend, TernaryWeightsRunAsBl2g128) {
  const int64_t cols = 512, rows = 32, n = 3;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> trit(-1, 1);
  std::uniform_real_distribution<float> scale(0.01f, 0.1f), feature(-2.0f, 2.0f);
  std::vector<float> values(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(cols * n));
  for (int64_t b = 0; b < rows * cols / 256; ++b) {
    const float d = scale(rng);
    for (int j = 0; j < 256; ++j) values[static_cast<size_t>(b * 256 + j)] = d * static_cast<float>(trit(rng));
  }
  for (auto& v : x) v = feature(rng);
  auto backend = make_cpu_backend(2);
  for (DType type : {DType::TQ1_0, DType::TQ2_0}) {
    std::vector<uint8_t> w(row_bytes(type, cols) * rows);
    quantize_matrix(type, values.data(), w.data(), rows, cols);
    auto up = backend->upload_weight(make_tensor_2d(w.data(), type, cols, rows));
    ASSERT_TRUE(up.ok()) << up.status().message();
    ASSERT_EQ(up->dtype, DType::BL2G128);
    std::vector<float> want_row(cols), got_row(cols);
    std::vector<double> wd(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_matrix_row(type, w.data(), cols, r, want_row.data());
      dequantize_matrix_row(DType::BL2G128, up->data, cols, r, got_row.data());
      ASSERT_EQ(got_row, want_row) << dtype_name(type) << " row " << r;
      for (int64_t j = 0; j < cols; ++j) wd[static_cast<size_t>(r * cols + j)] = want_row[static_cast<size_t>(j)];
    }
    std::vector<float> out(static_cast<size_t>(rows * n));
    Tensor xt = make_tensor_2d(x.data(), DType::F32, cols, n), ot = make_tensor_2d(out.data(), DType::F32, rows, n);
    backend->matmul(*up, xt, ot, nullptr);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < rows; ++r) {
        double want = 0, bound = 1e-5;
        for (int64_t j = 0; j < cols; ++j) want += wd[static_cast<size_t>(r * cols + j)] * x[static_cast<size_t>(t * cols + j)];
        for (int64_t grp = 0; grp < cols / 128; ++grp) {
          double d = 0, s_t = 0;
          for (int j = 0; j < 128; ++j) d = std::max(d, std::fabs(wd[static_cast<size_t>(r * cols + grp * 128 + j)]));
          for (int q = 0; q < 32; ++q) {
            double abs_sum = 0;
            for (int m = 0; m < 4; ++m) abs_sum += std::fabs(x[static_cast<size_t>(t * cols + grp * 128 + 4 * q + m)]);
            s_t = std::max(s_t, abs_sum / 2 / 127);
          }
          bound += d * s_t * 16 * 3 * 1.0001;
        }
        EXPECT_LE(std::fabs(out[static_cast<size_t>(t * rows + r)] - want), bound) << dtype_name(type) << " [" << r << ", " << t << "]";
      }
  }
  std::vector<uint8_t> odd(row_bytes(DType::TQ2_0, cols) * 8);
  auto refused = backend->upload_weight(make_tensor_2d(odd.data(), DType::TQ2_0, cols, 8));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("tiles of 16 rows"), std::string::npos) << refused.status().message();
}

// Max over the ISA variants this CPU has of an activation-times-up kernel's error against its
// scalar version, for gates over [-200, 200] (the whole range a gate can take, tails included):
// relative to max(|scalar|, 1e-30). Every output must be finite.
using ActivationMul = void (*)(const float*, const float*, float*, int64_t);
void expect_variants_match_scalar(ActivationMul scalar, ActivationMul avx2, ActivationMul avx512, double tol,
                                  const char* why) {
  std::vector<float> gate, up;
  for (float g = -200.0f; g <= 200.0f; g += 0.0371f) {
    gate.push_back(g);
    up.push_back(1.0f + 0.001f * g);
  }
  const int64_t n = static_cast<int64_t>(gate.size());
  std::vector<float> want(gate.size()), got(gate.size());
  scalar(gate.data(), up.data(), want.data(), n);
  const std::pair<cpu::Isa, ActivationMul> variants[] = {{cpu::Isa::avx2, avx2}, {cpu::Isa::avx512, avx512}};
  for (auto [isa, fn] : variants) {
    if (!cpu::isa_supported(isa)) continue;
    SCOPED_TRACE(std::string(cpu::isa_name(isa)));
    std::fill(got.begin(), got.end(), NAN);
    fn(gate.data(), up.data(), got.data(), n);
    double max_err = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << "gate " << gate[i];
      max_err = std::max(max_err, std::fabs(static_cast<double>(got[i]) - want[i]) / std::max(std::fabs(want[i]), 1e-30f));
    }
    EXPECT_LE(max_err, tol) << why;
  }
}

// The vector silu (its exp is a polynomial, clamped to [-87.3, 88.4]) against std::exp. For
// gate < -88 the true value is below 1e-36 and the vector code returns ~1e-37 instead.
TEST(CpuKernels, SiluMulVariantsMatchScalarOverTheFullRange) {
  expect_variants_match_scalar(cpu::silu_mul_scalar, cpu::silu_mul_avx2, cpu::silu_mul_avx512, 1e-6,
                               "a few ulp expected");
}

// The vector gelu (the same clamped exp, at -2 sqrt(2 / pi) (g + 0.044715 g^3)) against the
// scalar one. exp(a) inherits a's rounding as a relative error: the vector code forms a with
// FMAs, the scalar one without, and near |a| = 88 one ulp of a is 7.6e-6. So two ulp of that.
TEST(CpuKernels, GeluMulVariantsMatchScalarOverTheFullRange) {
  expect_variants_match_scalar(cpu::gelu_mul_scalar, cpu::gelu_mul_avx2, cpu::gelu_mul_avx512, 1.6e-5,
                               "the exp argument's rounding expected");
}

// F16 cache rows: the F16C / AVX-512 conversions give the same bits as core/half.h, for
// normal, subnormal, overflowing and halfway values.
TEST(CpuKernels, F16RowConversionsMatchScalarBits) {
  std::vector<float> x = {0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 65520.0f, 1e6f, -1e6f, 6.0e-8f, 3.0e-8f, 1e-5f,
                          1.0f + 1.0f / 2048, 1.0f + 3.0f / 2048, 0.1f, -0.3333f, INFINITY, -INFINITY};
  for (int i = 0; i < 1000; ++i) x.push_back(std::ldexp(static_cast<float>(i % 97) - 48.0f, i % 40 - 30));
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<uint16_t> want(x.size()), got(x.size());
  cpu::f32_to_f16_row_scalar(x.data(), want.data(), n);
  using Fn = void (*)(const float*, uint16_t*, int64_t);
  const std::pair<cpu::Isa, Fn> variants[] = {{cpu::Isa::avx2, cpu::f32_to_f16_row_avx2},
                                              {cpu::Isa::avx512, cpu::f32_to_f16_row_avx512}};
  for (auto [isa, fn] : variants) {
    if (!cpu::isa_supported(isa)) continue;
    SCOPED_TRACE(std::string(cpu::isa_name(isa)));
    for (int64_t len : {n, n - 1, int64_t{5}}) {  // vector body and three tail lengths
      std::fill(got.begin(), got.end(), uint16_t{0xdead});
      fn(x.data(), got.data(), len);
      for (int64_t i = 0; i < len; ++i) {
        ASSERT_EQ(got[i], want[i]) << "x = " << x[i];
      }
      if (len < n) {
        EXPECT_EQ(got[len], 0xdead) << "wrote past the row";
      }
    }
  }
}

// Re-runs the op cases in a child process per lower ISA level (BITLIGHT_ISA is read once per
// process), so the scalar and AVX2 kernels are checked on an AVX-512 machine too.
TEST(CpuBackendIsaLevels, LowerLevelsPassTheOpCases) {
  if (std::getenv("BITLIGHT_ISA")) GTEST_SKIP() << "already a forced-ISA child";
  char exe[4096];
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  ASSERT_GT(len, 0);
  exe[len] = '\0';
  int levels_run = 0;
  for (cpu::Isa isa : {cpu::Isa::scalar, cpu::Isa::avx2, cpu::Isa::avx512}) {
    if (static_cast<int>(isa) >= static_cast<int>(cpu::active_isa())) continue;
    const std::string cmd = "BITLIGHT_ISA=" + std::string(cpu::isa_name(isa)) + " '" + exe +
                            "' --gtest_brief=1 --gtest_filter='CpuBackendOps.*:CpuKernels.*'";
    std::printf("running: %s\n", cmd.c_str());
    std::fflush(stdout);
    EXPECT_EQ(std::system(cmd.c_str()), 0) << "op cases failed with " << cmd;
    ++levels_run;
  }
  if (levels_run == 0) GTEST_SKIP() << "this CPU has only the scalar level";
}

}  // namespace
}  // namespace bl
