// Sampling at temperature > 0 on the device: the draw of kernels/cpu/top_k_draw.h (top-k,
// softmax, min-p, top-p, the caller's uniform number) over one row of logits per token, so a
// sampled decode step copies one id (4 bytes) to the host instead of the logits (513 KB for
// Llama 3) and skips the host's partial sort of them.
//
// Stage 1: the row is cut into slices of up to kSliceKeys logits, one block each; a block sorts
// its slice as 64-bit keys (orderable float bits << 32 | ~index: larger key = larger logit, the
// lower index first among equal ones, NaN key 0) with a bitonic sort in shared memory and
// stores its k largest keys. Stage 2: the last block to finish (a counter per token, reset for
// the next launch, so a captured graph replays it) sorts the blocks x k keys the same way and
// one thread runs the host's own draw (cpu::draw_sorted) over the k best, so ids match the
// host's except where a uniform number falls within an ulp of the device's expf of a boundary.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"

namespace bl::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int kSliceKeys = 4096;                         // 32 KB of keys in shared memory
constexpr int kMaxBlocks = kSliceKeys / kMaxDeviceTopK;  // stage 2 sorts kMaxBlocks x k <= kSliceKeys keys

__device__ __forceinline__ uint64_t key_of(float v, uint32_t i) {
  const uint32_t u = __float_as_uint(v);
  const uint32_t ordered = v != v ? 0u : (u & 0x80000000u ? ~u : u | 0x80000000u);
  return (static_cast<uint64_t>(ordered) << 32) | (0xFFFFFFFFu - i);
}
__device__ __forceinline__ float logit_of(uint64_t key) {
  const uint32_t ordered = static_cast<uint32_t>(key >> 32);
  return __uint_as_float(ordered & 0x80000000u ? ordered & 0x7FFFFFFFu : ~ordered);
}
__device__ __forceinline__ int32_t id_of(uint64_t key) {
  return static_cast<int32_t>(0xFFFFFFFFu - static_cast<uint32_t>(key & 0xFFFFFFFFu));
}

// keys[kSliceKeys] in shared memory, sorted largest first.
__device__ void bitonic_sort_descending(uint64_t* keys) {
  for (int size = 2; size <= kSliceKeys; size *= 2)
    for (int stride = size / 2; stride > 0; stride /= 2) {
      for (int i = threadIdx.x; i < kSliceKeys; i += kThreads) {
        const int j = i ^ stride;
        if (j <= i) continue;
        const uint64_t a = keys[i], b = keys[j];
        const bool first_half = (i & size) == 0;  // this run ends up descending
        if (first_half ? a < b : a > b) keys[i] = b, keys[j] = a;
      }
      __syncthreads();
    }
}

// grid (blocks, n_tokens); slice_len = ceil(n_vocab / blocks) <= kSliceKeys.
// block_keys [n_tokens][kMaxBlocks][kMaxDeviceTopK], counters [n_tokens] (zero before the first launch).
__global__ void __launch_bounds__(kThreads)
    sample_top_k_kernel(const float* logits, int64_t n_vocab, int slice_len, const TopKDrawParams* draws,
                        int32_t* ids, uint64_t* block_keys, unsigned* counters) {
  __shared__ uint64_t keys[kSliceKeys];
  pdl_start();
  const int t = blockIdx.y;
  const TopKDrawParams d = draws[t];
  const int top_k = d.top_k < 1 ? 1 : d.top_k > kMaxDeviceTopK ? kMaxDeviceTopK : d.top_k;  // memory-safe
  const int k = static_cast<int>(top_k < n_vocab ? top_k : n_vocab);
  const float* row = logits + static_cast<int64_t>(t) * n_vocab;
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * slice_len;
  for (int i = threadIdx.x; i < kSliceKeys; i += kThreads) {
    const int64_t v = begin + i;
    keys[i] = i < slice_len && v < n_vocab ? key_of(row[v], static_cast<uint32_t>(v)) : 0;
  }
  __syncthreads();
  bitonic_sort_descending(keys);
  uint64_t* mine = block_keys + (static_cast<int64_t>(t) * kMaxBlocks + blockIdx.x) * kMaxDeviceTopK;
  for (int i = threadIdx.x; i < k; i += kThreads) mine[i] = keys[i];
  __shared__ bool last;
  __threadfence();  // the keys are visible before the counter says so
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(&counters[t], 1u) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  const volatile uint64_t* all = block_keys + static_cast<int64_t>(t) * kMaxBlocks * kMaxDeviceTopK;
  for (int i = threadIdx.x; i < kSliceKeys; i += kThreads) {
    const int block = i / kMaxDeviceTopK, slot = i % kMaxDeviceTopK;
    keys[i] = block < static_cast<int>(gridDim.x) && slot < k ? all[i] : 0;
  }
  __syncthreads();
  bitonic_sort_descending(keys);
  if (threadIdx.x == 0) {
    int n = 0;  // the k best, NaN (key 0) left out
    while (n < k && keys[n] != 0) ++n;
    float probs[kMaxDeviceTopK];
    ids[t] = n == 0 ? 0 : id_of(keys[cpu::draw_sorted(n, [&](int i) { return logit_of(keys[i]); }, d, probs)]);
    counters[t] = 0;
  }
}

int blocks_for(int64_t n_vocab) { return static_cast<int>((n_vocab + kSliceKeys - 1) / kSliceKeys); }

}  // namespace

bool sample_top_k_applies(int top_k, int64_t n_vocab) {
  return top_k >= 1 && top_k <= kMaxDeviceTopK && n_vocab >= 1 && blocks_for(n_vocab) <= kMaxBlocks;
}

size_t sample_top_k_workspace_bytes(int64_t capacity) {
  return static_cast<size_t>(capacity) * (kMaxBlocks * kMaxDeviceTopK * sizeof(uint64_t) + sizeof(unsigned));
}

void launch_sample_top_k(const float* logits, int64_t n_vocab, int64_t n_tokens, const TopKDrawParams* draws,
                         int32_t* ids, void* workspace, int64_t capacity, cudaStream_t stream) {
  if (n_tokens <= 0 || n_tokens > capacity || blocks_for(n_vocab) > kMaxBlocks) return;
  const int blocks = blocks_for(n_vocab);
  const int slice_len = static_cast<int>((n_vocab + blocks - 1) / blocks);
  auto* keys = static_cast<uint64_t*>(workspace);
  auto* counters = reinterpret_cast<unsigned*>(keys + capacity * kMaxBlocks * kMaxDeviceTopK);
  launch_pdl(sample_top_k_kernel, dim3(blocks, static_cast<unsigned>(n_tokens)), dim3(kThreads), 0, stream,
             logits, n_vocab, slice_len, draws, ids, keys, counters);
}

}  // namespace bl::cuda
