// Per-block timestamps inside the decode step's kernels: when each block started, when its
// pdl_wait returned, when it ended, and on which SM (a diagnostic; compiled in only with the
// CMake option BITLIGHT_CUDA_BLOCK_TRACE, otherwise every mark is an empty inline function).
//
// Why: tools/kernel_trace sees whole kernels (first block start, last block end); what a
// boundary costs inside the replayed graph depends on when the next kernel's blocks become
// resident and how long their wait and their chain after it take (docs/cuda.md, "Twenty-second
// session": "block start times via %globaltimer would test the guess").
//
// Thread 0 of a block stores an Event into its launch's slot (block_trace.h): the timer is read
// first and the store needs nothing from memory, so a mark does not wait on a round trip (an
// earlier version appended through a global atomic and a global ring pointer, which put two
// round trips into thread 0's path at every mark and slowed 1B q4_0 decode by ~8 %).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/block_trace.h"

namespace bl::cuda::block_trace {

#ifdef BITLIGHT_CUDA_BLOCK_TRACE
static __device__ unsigned g_experiment;  // this translation unit's copy

namespace {
void set_experiment_of_this_unit(unsigned bits) { cudaMemcpyToSymbol(g_experiment, &bits, sizeof bits); }
[[maybe_unused]] const bool g_experiment_setter_registered =
    (register_experiment_setter(&set_experiment_of_this_unit), true);
}  // namespace

__device__ __forceinline__ bool experiment(unsigned bit) { return (g_experiment & bit) != 0; }

// Records (kernel, point) for this block; tag tells launches of one kernel apart (a weight or
// cache pointer: one per layer and matrix).
__device__ __forceinline__ void mark(const Slot& slot, Kernel kernel, Point point, const void* tag) {
  uint64_t ns;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  const unsigned block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  if (threadIdx.x != 0 || slot.events == nullptr || block >= kMaxBlocks) return;
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  Event e;
  e.ns = ns;
  e.tag = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(tag) >> 4);
  e.grid = gridDim.x * gridDim.y * gridDim.z;
  e.slot = slot.index;
  e.sm = static_cast<uint16_t>(sm);
  e.kernel = static_cast<uint8_t>(kernel);
  e.point = static_cast<uint8_t>(point);
  e.block = static_cast<uint16_t>(block);
  slot.events[block * kPoints + static_cast<int>(point)] = e;
}

// The exit mark after a block barrier, so that it is the block's last warp's exit, not thread
// 0's. Only where every thread of the block reaches it.
__device__ __forceinline__ void mark_exit(const Slot& slot, Kernel kernel, const void* tag) {
  if (slot.events != nullptr) __syncthreads();
  mark(slot, kernel, Point::exit, tag);
}
#else
__device__ __forceinline__ bool experiment(unsigned) { return false; }
__device__ __forceinline__ void mark(const Slot&, Kernel, Point, const void*) {}
__device__ __forceinline__ void mark_exit(const Slot&, Kernel, const void*) {}
#endif

}  // namespace bl::cuda::block_trace
