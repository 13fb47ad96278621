// A one-use barrier for the threads of one ThreadPool::run region: each arrives once, and
// returns when all have. Decode regions are ~10-600 µs long, so the wait spins (spin_pause)
// rather than sleeping.
#pragma once

#include <atomic>

#include "core/spin_pause.h"

namespace bl {

class SpinBarrier {
 public:
  explicit SpinBarrier(int n_threads) : n_threads_(n_threads) {}
  SpinBarrier(const SpinBarrier&) = delete;
  SpinBarrier& operator=(const SpinBarrier&) = delete;

  // Everything a thread wrote before it arrives is visible to every thread after the wait.
  void arrive_and_wait() {
    arrived_.fetch_add(1, std::memory_order_acq_rel);
    for (int spins = 1; arrived_.load(std::memory_order_acquire) < n_threads_; ++spins) spin_pause(spins);
  }

 private:
  const int n_threads_;
  std::atomic<int> arrived_{0};
};

}  // namespace bl
