// Host side of the per-block trace (block_trace.cuh): the event layout shared with
// scripts/block_timeline.py, the slot a launch writes its events into, and starting / writing
// the trace. Everything here is a no-op unless the build has BITLIGHT_CUDA_BLOCK_TRACE.
#pragma once

#include <cstdint>

namespace bl::cuda::block_trace {

// Which kernel marked (the kernels that carry marks; scripts/block_timeline.py names them).
enum class Kernel : uint8_t { gemv_dp4a = 1, attention = 2, quantize_x = 3 };
// Where in the kernel: its first line, after its pdl_wait, its last line (after a block barrier:
// mark_exit), and kernel-specific steps between (attention: q rotated, the slot loop done).
enum class Point : uint8_t { enter = 0, waited = 1, exit = 2, step1 = 3, step2 = 4 };
constexpr int kPoints = 5;
constexpr int kMaxBlocks = 512;  // blocks of a launch that are traced (the first ones)
constexpr int kSlots = 4096;     // launches kept; launch i writes slot i % kSlots

// 24 bytes, as block_timeline.py unpacks them: "<QIIHHBBH".
struct Event {
  uint64_t ns;     // %globaltimer; 0 = never written
  uint32_t tag;    // launch tag >> 4 (a weight or cache address)
  uint32_t grid;   // blocks in the grid
  uint16_t slot;   // the launch's slot
  uint16_t sm;
  uint8_t kernel, point;
  uint16_t block;  // linear block index
};
static_assert(sizeof(Event) == 24);

// Where a launch's blocks write: events[block * kPoints + point] (null: not traced). A kernel
// argument, so that a mark is a timer read and a store with no memory round trip before it.
// A graph replays its launches' slots, so after a run each slot holds the launch's last replay.
struct Slot {
  Event* events = nullptr;
  uint16_t index = 0;
};

// The slot for the next launch: null unless the trace is on (start_from_environment).
Slot next_slot();

// Trace builds: BITLIGHT_CUDA_EXPERIMENT's bits (an integer, default 0), read by kernels through
// experiment() in block_trace.cuh (switches for one-off comparisons). Each translation unit
// that includes block_trace.cuh registers a setter for its copy at static initialisation.
void register_experiment_setter(void (*setter)(unsigned));

// With the build option on: hands BITLIGHT_CUDA_EXPERIMENT to every unit, and with
// BITLIGHT_CUDA_BLOCK_TRACE_OUT=path allocates kSlots x kMaxBlocks x kPoints events (zeroed) and
// writes the written ones at exit to path (uint64 count, then the events). Call with the device
// current.
void start_from_environment();

}  // namespace bl::cuda::block_trace
