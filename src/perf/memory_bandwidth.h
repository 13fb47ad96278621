// Measured limits of this machine, taken in the same run as the benchmark they judge.
#pragma once

#include <cstddef>

#include "core/thread_pool.h"

namespace bl {

struct BandwidthResult {
  double read_gbps = 0;  // best of the repetitions, 1e9 bytes/s
  size_t bytes = 0;      // buffer size used
  int repetitions = 0;
};

// Streams a buffer much larger than the last-level cache with all pool threads, summing it,
// and reports the best repetition's read rate.
BandwidthResult measure_read_bandwidth(ThreadPool& pool, size_t bytes = size_t{1} << 30, int repetitions = 5);

}  // namespace bl
