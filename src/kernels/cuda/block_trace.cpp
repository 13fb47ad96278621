// Host side of the per-block trace: see block_trace.h.
#include "kernels/cuda/block_trace.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace bl::cuda::block_trace {
namespace {

// Function-local static: the setters register during static initialisation, in any order.
std::vector<void (*)(unsigned)>& experiment_setters() {
  static std::vector<void (*)(unsigned)> list;
  return list;
}

#ifdef BITLIGHT_CUDA_BLOCK_TRACE
constexpr size_t kEvents = static_cast<size_t>(kSlots) * kMaxBlocks * kPoints;

struct Trace {
  Event* events = nullptr;  // device, kEvents
  unsigned long long launches = 0;
  std::string path;
};

Trace& trace() {
  static Trace t;
  return t;
}

void write_at_exit() {
  const Trace& t = trace();
  std::vector<Event> events(kEvents);
  if (cudaDeviceSynchronize() != cudaSuccess ||
      cudaMemcpy(events.data(), t.events, kEvents * sizeof(Event), cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::fprintf(stderr, "block trace: cannot read the events back\n");
    return;
  }
  std::vector<Event> written;
  for (const Event& e : events)
    if (e.ns != 0) written.push_back(e);
  std::FILE* f = std::fopen(t.path.c_str(), "wb");
  if (!f) {
    std::fprintf(stderr, "block trace: cannot write %s\n", t.path.c_str());
    return;
  }
  const unsigned long long count = written.size();
  std::fwrite(&count, sizeof count, 1, f);
  std::fwrite(written.data(), sizeof(Event), written.size(), f);
  std::fclose(f);
  std::fprintf(stderr, "block trace: %llu launches traced, %llu events -> %s\n", t.launches, count, t.path.c_str());
}
#endif

}  // namespace

void register_experiment_setter(void (*setter)(unsigned)) { experiment_setters().push_back(setter); }

Slot next_slot() {
  Slot slot;
#ifdef BITLIGHT_CUDA_BLOCK_TRACE
  Trace& t = trace();
  if (!t.events) return slot;
  slot.index = static_cast<uint16_t>(t.launches++ % kSlots);
  slot.events = t.events + static_cast<size_t>(slot.index) * kMaxBlocks * kPoints;
#endif
  return slot;
}

void start_from_environment() {
#ifdef BITLIGHT_CUDA_BLOCK_TRACE
  if (const char* bits = std::getenv("BITLIGHT_CUDA_EXPERIMENT")) {
    const unsigned value = static_cast<unsigned>(std::strtoul(bits, nullptr, 0));
    for (auto* set : experiment_setters()) set(value);
    std::fprintf(stderr, "block trace build: experiment bits 0x%x\n", value);
  }
  const char* path = std::getenv("BITLIGHT_CUDA_BLOCK_TRACE_OUT");
  Trace& t = trace();
  if (!path || !*path || t.events) return;
  if (cudaMalloc(&t.events, kEvents * sizeof(Event)) != cudaSuccess ||
      cudaMemset(t.events, 0, kEvents * sizeof(Event)) != cudaSuccess) {
    std::fprintf(stderr, "block trace: cannot allocate %zu events\n", kEvents);
    t.events = nullptr;
    return;
  }
  t.path = path;
  std::atexit(write_at_exit);
#endif
}

}  // namespace bl::cuda::block_trace
