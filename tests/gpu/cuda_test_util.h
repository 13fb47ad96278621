// What every GPU test program shares: skipping with a clear message where no CUDA device is
// present (CI has none), opening the backend on device 0, and the in-loop GEMM switched on for
// a test's scope.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <random>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "kernels/cuda/launchers.h"

#define SKIP_WITHOUT_GPU() \
  if (!bl::cuda_device_present()) GTEST_SKIP() << "no CUDA device: the CUDA backend tests need a GPU"

namespace bl {

// The CUDA backend on device 0, or nullptr with a test failure naming why it did not open.
inline std::unique_ptr<CudaBackend> open_or_fail() {
  auto b = open_cuda_backend(0);
  EXPECT_TRUE(b.ok()) << b.status().message();
  return b.ok() ? std::move(b).value() : nullptr;
}

// n values drawn uniformly from [-scale, scale].
inline std::vector<float> random_vector(int64_t n, float scale, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

// The in-loop GEMM taken everywhere for every format it reads at any token count (Q5_K: up to
// 512 tokens by default) with a given block tile and cluster size for a test's scope, and the
// settings before it back after it.
inline constexpr DType kInLoopTypes[] = {DType::Q4_0, DType::Q4_K, DType::Q4_1, DType::Q8_0, DType::Q5_K};
struct InLoopGemmSwitchedOn {
  explicit InLoopGemmSwitchedOn(cuda::InLoopGemmTile tile = cuda::InLoopGemmTile::automatic, int cluster = 2)
      : cluster_before(cuda::in_loop_gemm_cluster()) {
    cuda::set_in_loop_gemm(cuda::InLoopGemmUse::everywhere, tile);
    for (size_t i = 0; i < std::size(kInLoopTypes); ++i) {
      max_tokens_before[i] = cuda::in_loop_gemm_max_tokens(kInLoopTypes[i]);
      cuda::set_in_loop_gemm_max_tokens(kInLoopTypes[i], cuda::kInLoopGemmAnyTokens);
    }
    cuda::set_in_loop_gemm_cluster(cluster);
  }
  ~InLoopGemmSwitchedOn() {
    cuda::set_in_loop_gemm(cuda::InLoopGemmUse::everywhere);
    for (size_t i = 0; i < std::size(kInLoopTypes); ++i)
      cuda::set_in_loop_gemm_max_tokens(kInLoopTypes[i], max_tokens_before[i]);
    cuda::set_in_loop_gemm_cluster(cluster_before);
  }
  int64_t max_tokens_before[std::size(kInLoopTypes)];
  int cluster_before;
};

}  // namespace bl
