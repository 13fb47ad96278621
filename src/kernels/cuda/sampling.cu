// Sampling on the device: greedy argmax over the logits, so that a decode step copies one token
// id (4 bytes) to the host instead of its logits (n_vocab floats: 513 KB for Llama 3, tens of us
// over PCIe, and a host scan of them).
//
// Each token's row is split over kBlocks blocks; a block reduces its part to one 64-bit key
// (orderable float bits << 32 | ~index, so the largest key is the largest logit at the lowest
// index; NaN gets key 0 and is never picked over a number), stores it, and the last block to
// finish (a counter per token) reduces the kBlocks keys and resets the counter for the next
// launch, so a captured graph can replay it. The logits were just written by the output GEMV
// and sit in L2: 128256 floats over 32 x 256 threads is 16 loads a thread.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"

namespace bl::cuda {
namespace {

constexpr int kBlocks = 32;
constexpr int kThreads = 256;

__device__ __forceinline__ uint64_t key_of(float v, int64_t i) {
  const uint32_t u = __float_as_uint(v);
  const uint32_t ordered = v != v ? 0u : (u & 0x80000000u ? ~u : u | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | (0xFFFFFFFFu - static_cast<uint32_t>(i));
}

__device__ __forceinline__ uint64_t block_max(uint64_t k) {
#pragma unroll
  for (int o = 16; o > 0; o /= 2) {
    const uint64_t other = __shfl_xor_sync(0xffffffffu, k, o);
    k = other > k ? other : k;
  }
  __shared__ uint64_t warp_max[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = k;
  __syncthreads();
  uint64_t best = warp_max[0];
#pragma unroll
  for (int w = 1; w < kThreads / 32; ++w) best = warp_max[w] > best ? warp_max[w] : best;
  return best;
}

// keys [n_tokens][kBlocks], counters [n_tokens] (zero before the first launch).
__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* logits, int64_t n_vocab, int32_t* ids,
                                                         uint64_t* keys, unsigned* counters) {
  pdl_start();
  const int64_t t = blockIdx.y;
  const float* row = logits + t * n_vocab;
  uint64_t best = 0;
#pragma unroll 4
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < n_vocab; i += kBlocks * kThreads) {
    const uint64_t k = key_of(row[i], i);
    best = k > best ? k : best;
  }
  best = block_max(best);
  __shared__ bool last;
  if (threadIdx.x == 0) {
    keys[t * kBlocks + blockIdx.x] = best;
    __threadfence();  // the key is visible before the counter says so
    last = atomicAdd(&counters[t], 1u) == kBlocks - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  const uint64_t k = threadIdx.x < kBlocks ? *reinterpret_cast<volatile uint64_t*>(keys + t * kBlocks + threadIdx.x) : 0;
  best = block_max(k);
  if (threadIdx.x == 0) {
    // An empty row or all NaN: key 0 and index 0xFFFFFFFF - 0, i.e. id 0 either way.
    ids[t] = best == 0 ? 0 : static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(best & 0xFFFFFFFFu));
    counters[t] = 0;
  }
}

}  // namespace

// Layout for `capacity` tokens: keys [capacity][kBlocks], then counters [capacity]. It depends
// on the capacity only, not on n_tokens: a launch with fewer tokens finds zero counters where a
// larger one left them (each launch resets the counters it used).
size_t argmax_workspace_bytes(int64_t capacity) {
  return static_cast<size_t>(capacity) * (kBlocks * sizeof(uint64_t) + sizeof(unsigned));
}

void launch_argmax(const float* logits, int64_t n_vocab, int64_t n_tokens, int32_t* ids, void* workspace,
                   int64_t capacity, cudaStream_t stream) {
  if (n_tokens <= 0 || n_tokens > capacity) return;
  auto* keys = static_cast<uint64_t*>(workspace);
  auto* counters = reinterpret_cast<unsigned*>(keys + capacity * kBlocks);
  launch_pdl(argmax_kernel, dim3(kBlocks, static_cast<unsigned>(n_tokens)), dim3(kThreads), 0, stream, logits, n_vocab,
             ids, keys, counters);
}

}  // namespace bl::cuda
