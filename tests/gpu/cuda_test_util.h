// What every GPU test program shares: skipping with a clear message where no CUDA device is
// present (CI has none), and opening the backend on device 0.
#pragma once

#include <gtest/gtest.h>

#include <memory>

#include "backend/cuda/cuda_backend.h"

#define SKIP_WITHOUT_GPU() \
  if (!bl::cuda_device_present()) GTEST_SKIP() << "no CUDA device: the CUDA backend tests need a GPU"

namespace bl {

// The CUDA backend on device 0, or nullptr with a test failure naming why it did not open.
inline std::unique_ptr<CudaBackend> open_or_fail() {
  auto b = open_cuda_backend(0);
  EXPECT_TRUE(b.ok()) << b.status().message();
  return b.ok() ? std::move(b).value() : nullptr;
}

}  // namespace bl
