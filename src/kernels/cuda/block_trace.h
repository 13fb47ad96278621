// Host side of the per-block trace (block_trace.cuh): the event layout shared with
// scripts/block_timeline.py, and starting / writing the ring. Everything here is a no-op unless
// the build has BITLIGHT_CUDA_BLOCK_TRACE.
#pragma once

#include <cstdint>

namespace bl::cuda::block_trace {

// Which kernel marked (the kernels that carry marks; scripts/block_timeline.py names them).
enum class Kernel : uint8_t { gemv_dp4a = 1, attention = 2, quantize_x = 3, gemv_fp32 = 4, gemv_bl = 5 };
// Where in the kernel: its first line, after its pdl_wait, its last line (after a block barrier
// where the kernel allows one: mark_exit), and kernel-specific steps between (attention: q
// rotated, the slot loop done).
enum class Point : uint8_t { enter = 0, waited = 1, exit = 2, step1 = 3, step2 = 4 };

// 24 bytes, as block_timeline.py unpacks them: "<QIIIHBB".
struct Event {
  uint64_t ns;     // %globaltimer
  uint32_t tag;    // launch tag >> 4 (a weight or cache address)
  uint32_t block;  // linear block index
  uint32_t grid;   // blocks in the grid
  uint16_t sm;
  uint8_t kernel, point;
};
static_assert(sizeof(Event) == 24);

struct Ring {
  Event* events = nullptr;
  unsigned long long* count = nullptr;  // events appended so far (the ring keeps the last capacity)
  unsigned long long capacity = 0;
};

// Called once per translation unit that includes block_trace.cuh, at static initialisation.
void register_ring_setter(void (*setter)(const Ring&));
// Trace builds only: bits of BITLIGHT_CUDA_EXPERIMENT, read by kernels through experiment()
// (switches for one-off comparisons that are not worth a launch argument until they pay).
void register_experiment_setter(void (*setter)(unsigned));

// With BITLIGHT_CUDA_BLOCK_TRACE_OUT=path in the environment (and the build option on):
// allocates a ring of BITLIGHT_CUDA_BLOCK_TRACE_EVENTS events (default 2^21), hands it to every
// unit, and writes the events at exit to path (uint64 count, then the ring as stored).
// Also hands BITLIGHT_CUDA_EXPERIMENT (an integer, default 0) to every unit. Call with the
// device current.
void start_from_environment();

}  // namespace bl::cuda::block_trace
