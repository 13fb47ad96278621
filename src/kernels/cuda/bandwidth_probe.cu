// A read-only streaming kernel: 16-byte loads, four independent loads in flight per thread
// per iteration, a grid of a few blocks per SM striding over the buffer, one atomic per block.
#include "kernels/cuda/bandwidth_probe.h"

#include <cstdint>

namespace bl::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kUnroll = 4;

__global__ void __launch_bounds__(kThreads) read_probe_kernel(const uint4* data, size_t n_vec, unsigned long long* result) {
  const size_t stride = static_cast<size_t>(gridDim.x) * kThreads;
  uint32_t acc = 0;
  size_t i = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x;
  for (; i + (kUnroll - 1) * stride < n_vec; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = __ldcs(data + i + u * stride);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc += v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n_vec; i += stride) {
    const uint4 v = __ldcs(data + i);
    acc += v.x ^ v.y ^ v.z ^ v.w;
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if (threadIdx.x % 32 == 0) atomicAdd(result, static_cast<unsigned long long>(acc));
}

}  // namespace

void launch_read_probe(const void* data, size_t bytes, unsigned long long* result, int n_sms, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(n_sms) * 4;
  read_probe_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const uint4*>(data), bytes / 16, result);
}

}  // namespace bl::cuda
