// Reductions over a thread block.
#pragma once

#include <cuda_runtime.h>

namespace bl::cuda {

// Sum of v over the kThreads threads of the block (a multiple of 32), returned to every thread:
// shuffles within each warp, then each thread adds the warps' sums from shared memory (one
// __syncthreads; call it from every thread, as often as the kernel needs but not divergently).
template <int kThreads>
__device__ __forceinline__ float block_sum(float v) {
  constexpr int kWarp = 32;
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ float warp_sums[kThreads / kWarp];
  if (threadIdx.x % kWarp == 0) warp_sums[threadIdx.x / kWarp] = v;
  __syncthreads();
  float total = 0.0f;
#pragma unroll
  for (int w = 0; w < kThreads / kWarp; ++w) total += warp_sums[w];
  return total;
}

}  // namespace bl::cuda
