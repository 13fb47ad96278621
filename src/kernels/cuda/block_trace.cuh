// Per-block timestamps inside the decode step's kernels: when each block started, when its
// pdl_wait returned, when it ended, and on which SM (a diagnostic; compiled in only with the
// CMake option BITLIGHT_CUDA_BLOCK_TRACE, otherwise every mark is an empty inline function).
//
// Why: tools/kernel_trace sees whole kernels (first block start, last block end); what a
// boundary costs inside the replayed graph depends on when the next kernel's blocks become
// resident and how long their wait and their chain after it take (docs/cuda.md, "Twenty-second
// session": "block start times via %globaltimer would test the guess").
//
// Thread 0 of a block appends an Event to a ring in device memory (one atomic a mark); the host
// side (block_trace.h) allocates the ring when BITLIGHT_CUDA_BLOCK_TRACE_OUT names a file and
// writes it there at exit; scripts/block_timeline.py reads it. Without -rdc every translation
// unit has its own copy of the ring's address, so each unit that includes this header registers
// a setter for its copy at static initialisation.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/block_trace.h"

namespace bl::cuda::block_trace {

#ifdef BITLIGHT_CUDA_BLOCK_TRACE
static __device__ Ring g_ring;  // this translation unit's copy
static __device__ unsigned g_experiment;

namespace {
void set_ring_of_this_unit(const Ring& ring) { cudaMemcpyToSymbol(g_ring, &ring, sizeof ring); }
void set_experiment_of_this_unit(unsigned bits) { cudaMemcpyToSymbol(g_experiment, &bits, sizeof bits); }
[[maybe_unused]] const bool g_ring_setter_registered =
    (register_ring_setter(&set_ring_of_this_unit), register_experiment_setter(&set_experiment_of_this_unit), true);
}  // namespace

__device__ __forceinline__ bool experiment(unsigned bit) { return (g_experiment & bit) != 0; }

// Records (kernel, point) for this block; tag tells launches of one kernel apart (a weight or
// cache pointer: one per layer and matrix).
__device__ __forceinline__ void mark(Kernel kernel, Point point, const void* tag) {
  if (threadIdx.x != 0 || g_ring.events == nullptr) return;
  uint64_t ns;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  const unsigned long long i = atomicAdd(g_ring.count, 1ull) % g_ring.capacity;
  Event e;
  e.ns = ns;
  e.tag = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(tag) >> 4);
  e.block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  e.grid = gridDim.x * gridDim.y * gridDim.z;
  e.sm = static_cast<uint16_t>(sm);
  e.kernel = static_cast<uint8_t>(kernel);
  e.point = static_cast<uint8_t>(point);
  g_ring.events[i] = e;
}

// The exit mark after a block barrier, so that it is the block's last warp's exit, not thread
// 0's. Only where every thread of the block reaches it.
__device__ __forceinline__ void mark_exit(Kernel kernel, const void* tag) {
  __syncthreads();
  mark(kernel, Point::exit, tag);
}
#else
__device__ __forceinline__ void mark(Kernel, Point, const void*) {}
__device__ __forceinline__ void mark_exit(Kernel, const void*) {}
__device__ __forceinline__ bool experiment(unsigned) { return false; }
#endif

}  // namespace bl::cuda::block_trace
