// Every op of the CPU backend against the reference backend (ops/backend_op_cases.h), at the
// widest ISA of this CPU and, by re-running this binary with BITLIGHT_ISA, at every lower one.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "backend/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_features.h"
#include "ops/backend_op_cases.h"

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
TEST_F(CpuBackendOps, SiluMul) { cases.silu_mul(); }
TEST_F(CpuBackendOps, Rope) { cases.rope(); }
TEST_F(CpuBackendOps, KvStore) { cases.kv_store(); }
TEST_F(CpuBackendOps, Attention) { cases.attention(); }
TEST_F(CpuBackendOps, GetRows) { cases.get_rows(); }
TEST_F(CpuBackendOps, Matmul) { cases.matmul(); }

// Attention splits work by thread count (slot chunks when there are few (token, kv head)
// pairs), so other counts take other paths: 1 thread (no pool), 3 and 4 threads (chunks).
TEST(CpuBackendThreads, AttentionAndMatmulWithOtherThreadCounts) {
  for (int threads : {1, 3, 4}) {
    SCOPED_TRACE("threads=" + std::to_string(threads));
    auto backend = make_cpu_backend(threads);
    op_cases::OpCases cases(*backend, 99 + threads);
    cases.attention();
    cases.rms_norm();
    cases.silu_mul();
  }
}

TEST(CpuBackend, NameSaysIsaAndThreads) {
  auto backend = make_cpu_backend(2);
  const std::string expected = "cpu (" + std::string(cpu::isa_name(cpu::active_isa())) + ", 2 threads)";
  EXPECT_EQ(backend->name(), expected);
  EXPECT_EQ(make_cpu_backend(1)->name().find("1 thread)") != std::string::npos, true);
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
                            "' --gtest_brief=1 --gtest_filter='CpuBackendOps.*:CpuBackendThreads.*'";
    std::printf("running: %s\n", cmd.c_str());
    std::fflush(stdout);
    EXPECT_EQ(std::system(cmd.c_str()), 0) << "op cases failed with " << cmd;
    ++levels_run;
  }
  if (levels_run == 0) GTEST_SKIP() << "this CPU has only the scalar level";
}

}  // namespace
}  // namespace bl
