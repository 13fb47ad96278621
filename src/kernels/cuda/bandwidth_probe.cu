// A read-only streaming kernel: 16-byte loads, four independent loads in flight per thread
// per iteration, a grid of a few blocks per SM striding over the buffer, one atomic per block.
#include "kernels/cuda/bandwidth_probe.h"

#include <algorithm>
#include <cstdint>
#include <vector>

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

double measure_read_gbps(size_t bytes, int n_sms, cudaStream_t stream) {
  bytes = bytes / 16 * 16;
  void* buf = nullptr;
  unsigned long long* result = nullptr;
  if (cudaMalloc(&buf, bytes) != cudaSuccess) return 0.0;
  if (cudaMalloc(&result, sizeof *result) != cudaSuccess) {
    cudaFree(buf);
    return 0.0;
  }
  cudaEvent_t start = nullptr, stop = nullptr;
  bool ok = cudaMemsetAsync(buf, 0x5a, bytes, stream) == cudaSuccess && cudaEventCreate(&start) == cudaSuccess &&
            cudaEventCreate(&stop) == cudaSuccess;
  std::vector<float> ms;
  for (int rep = 0; ok && rep < 11; ++rep) {
    cudaMemsetAsync(result, 0, sizeof *result, stream);
    cudaEventRecord(start, stream);
    launch_read_probe(buf, bytes, result, n_sms, stream);
    cudaEventRecord(stop, stream);
    float t = 0;
    ok = cudaEventSynchronize(stop) == cudaSuccess && cudaEventElapsedTime(&t, start, stop) == cudaSuccess;
    if (rep >= 2) ms.push_back(t);
  }
  if (start) cudaEventDestroy(start);
  if (stop) cudaEventDestroy(stop);
  cudaFree(buf);
  cudaFree(result);
  if (!ok || ms.empty()) return 0.0;
  std::sort(ms.begin(), ms.end());
  return static_cast<double>(bytes) / (static_cast<double>(ms[ms.size() / 2]) * 1e-3) / 1e9;
}

}  // namespace bl::cuda
