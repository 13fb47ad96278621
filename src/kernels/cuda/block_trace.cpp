// Host side of the per-block trace: see block_trace.h.
#include "kernels/cuda/block_trace.h"

#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace bl::cuda::block_trace {
namespace {

// Function-local statics: the setters register during static initialisation, in any order.
std::vector<void (*)(const Ring&)>& setters() {
  static std::vector<void (*)(const Ring&)> list;
  return list;
}

std::vector<void (*)(unsigned)>& experiment_setters() {
  static std::vector<void (*)(unsigned)> list;
  return list;
}

#ifdef BITLIGHT_CUDA_BLOCK_TRACE
Ring& active_ring() {
  static Ring ring;
  return ring;
}

std::string& out_path() {
  static std::string path;
  return path;
}

void write_at_exit() {
  const Ring& ring = active_ring();
  unsigned long long count = 0;
  if (cudaDeviceSynchronize() != cudaSuccess ||
      cudaMemcpy(&count, ring.count, sizeof count, cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::fprintf(stderr, "block trace: cannot read the ring back\n");
    return;
  }
  std::vector<Event> events(ring.capacity);
  if (cudaMemcpy(events.data(), ring.events, events.size() * sizeof(Event), cudaMemcpyDeviceToHost) != cudaSuccess) {
    std::fprintf(stderr, "block trace: cannot read the ring back\n");
    return;
  }
  std::FILE* f = std::fopen(out_path().c_str(), "wb");
  if (!f) {
    std::fprintf(stderr, "block trace: cannot write %s\n", out_path().c_str());
    return;
  }
  const unsigned long long kept = count < ring.capacity ? count : ring.capacity;
  std::fwrite(&count, sizeof count, 1, f);
  std::fwrite(events.data(), sizeof(Event), kept, f);
  std::fclose(f);
  std::fprintf(stderr, "block trace: %llu events (%llu kept) -> %s\n", count, kept, out_path().c_str());
}
#endif

}  // namespace

void register_ring_setter(void (*setter)(const Ring&)) { setters().push_back(setter); }
void register_experiment_setter(void (*setter)(unsigned)) { experiment_setters().push_back(setter); }

void start_from_environment() {
#ifdef BITLIGHT_CUDA_BLOCK_TRACE
  if (const char* bits = std::getenv("BITLIGHT_CUDA_EXPERIMENT")) {
    const unsigned value = static_cast<unsigned>(std::strtoul(bits, nullptr, 0));
    for (auto* set : experiment_setters()) set(value);
    std::fprintf(stderr, "block trace build: experiment bits 0x%x\n", value);
  }
  const char* path = std::getenv("BITLIGHT_CUDA_BLOCK_TRACE_OUT");
  if (!path || !*path || active_ring().events) return;
  const char* n = std::getenv("BITLIGHT_CUDA_BLOCK_TRACE_EVENTS");
  Ring ring;
  ring.capacity = n ? std::strtoull(n, nullptr, 10) : (1ull << 21);
  if (ring.capacity == 0 || cudaMalloc(&ring.events, ring.capacity * sizeof(Event)) != cudaSuccess ||
      cudaMalloc(&ring.count, sizeof *ring.count) != cudaSuccess ||
      cudaMemset(ring.count, 0, sizeof *ring.count) != cudaSuccess) {
    std::fprintf(stderr, "block trace: cannot allocate a ring of %llu events\n", ring.capacity);
    return;
  }
  active_ring() = ring;
  out_path() = path;
  for (auto* set : setters()) set(ring);
  std::atexit(write_at_exit);
  std::fprintf(stderr, "block trace: %llu events, %zu units\n", ring.capacity, setters().size());
#endif
}

}  // namespace bl::cuda::block_trace
