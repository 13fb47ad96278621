// Measured limits of this machine, taken in the same run as the benchmark they judge.
#pragma once

#include <cstddef>

#include "core/aligned_buffer.h"
#include "core/thread_pool.h"

namespace bl {

struct BandwidthResult {
  double read_gbps = 0;  // best of the repetitions, 1e9 bytes/s
  size_t bytes = 0;      // buffer size used
  int repetitions = 0;
};

// Streams a buffer much larger than the last-level cache with all pool threads, summing it,
// and reports the best repetition's read rate. The buffer is allocated and filled once, so a
// benchmark can probe again between its repetitions (a shared machine's bandwidth drifts by
// +-10 % within a minute; a limit taken next to each measurement judges it fairly).
class ReadBandwidthProbe {
 public:
  explicit ReadBandwidthProbe(ThreadPool& pool, size_t bytes = size_t{1} << 30);
  // read_gbps 0 when the buffer could not be allocated.
  BandwidthResult measure(int repetitions = 5);

 private:
  ThreadPool& pool_;
  AlignedBuffer buffer_;
  size_t bytes_ = 0;
};

}  // namespace bl
