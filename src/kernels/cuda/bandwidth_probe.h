// The device's read bandwidth limit, measured: a large sum that reads each byte once and
// writes almost nothing (the "a large sum" figure of shared/PERF.md). Used by the GPU
// benchmark to express every kernel's GB/s as a percentage of what this card reaches.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace bl::cuda {

// Sums `bytes` bytes (a multiple of 16, 16-byte aligned) of `data` as uint32 words into
// *result (device; reset by the kernel's caller), so the compiler cannot drop the loads.
void launch_read_probe(const void* data, size_t bytes, unsigned long long* result, int n_sms, cudaStream_t stream);

// Read bandwidth in 1e9 bytes/s: the probe over a fresh `bytes` buffer (far larger than L2),
// median of 9 timed runs after 2 warm-ups, timed with events on `stream`. 0 when the buffer
// cannot be allocated or a CUDA call fails.
double measure_read_gbps(size_t bytes, int n_sms, cudaStream_t stream);

}  // namespace bl::cuda
