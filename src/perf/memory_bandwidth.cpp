#include "perf/memory_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace bl {

ReadBandwidthProbe::ReadBandwidthProbe(ThreadPool& pool, size_t bytes) : pool_(pool) {
  // Huge pages, as the weights the CPU backend interleaves at load: the limit must not be
  // weaker than what the kernels are given.
  if (!buffer_.resize(bytes, AlignedBuffer::Pages::huge)) return;
  bytes_ = bytes;
  const int64_t n_words = static_cast<int64_t>(bytes / sizeof(uint64_t));
  // Non-zero, varied contents: a buffer of zeros can be served faster than real data.
  pool_.parallel_for(n_words, 4096, [&](int64_t begin, int64_t end) {
    uint64_t* w = buffer_.as<uint64_t>();
    for (int64_t i = begin; i < end; ++i) w[i] = static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull;
  });
}

BandwidthResult ReadBandwidthProbe::measure(int repetitions) {
  BandwidthResult result;
  if (bytes_ == 0) return result;
  const int64_t n_words = static_cast<int64_t>(bytes_ / sizeof(uint64_t));
  std::atomic<uint64_t> sink{0};
  double best_seconds = 1e30;
  for (int r = 0; r < repetitions; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    pool_.parallel_for(n_words, 4096, [&](int64_t begin, int64_t end) {
      const uint64_t* w = buffer_.as<const uint64_t>();
      // Eight independent accumulators keep the loads in flight; the compiler vectorises this.
      uint64_t acc[8] = {};
      int64_t i = begin;
      for (; i + 8 <= end; i += 8)
        for (int j = 0; j < 8; ++j) acc[j] += w[i + j];
      for (; i < end; ++i) acc[0] += w[i];
      uint64_t total = 0;
      for (uint64_t a : acc) total += a;
      sink.fetch_add(total, std::memory_order_relaxed);
    });
    best_seconds = std::min(best_seconds, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  result.read_gbps = static_cast<double>(bytes_) / best_seconds / 1e9;
  result.bytes = bytes_;
  result.repetitions = repetitions;
  return result;
}

}  // namespace bl
