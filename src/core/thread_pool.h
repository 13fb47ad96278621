// A fixed pool of worker threads for data-parallel kernels.
//
// Decode runs ~10 parallel ops per layer, i.e. hundreds per token, so a dispatch must cost
// about a microsecond: workers spin on a generation counter for a while before they sleep on
// a condition variable. The calling thread takes part as worker 0.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace bl {

class ThreadPool {
 public:
  // n_threads includes the caller; 0 means the number of hardware threads.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn(thread_index, n_threads) on every thread and returns when all are done.
  void run(const std::function<void(int, int)>& fn);

  // Splits [0, n) into contiguous chunks, multiples of `grain` where possible, one per
  // thread, and calls fn(begin, end) for each non-empty chunk. A template, so that a call
  // allocates nothing (the task handed to run() captures one pointer).
  template <typename Fn>
  void parallel_for(int64_t n, int64_t grain, const Fn& fn) {
    if (n <= 0) return;
    grain = grain < 1 ? 1 : grain;
    const int64_t n_grains = (n + grain - 1) / grain;
    const int threads = static_cast<int>(n_grains < n_threads_ ? n_grains : n_threads_);
    if (threads <= 1) {
      fn(int64_t{0}, n);
      return;
    }
    struct Range {
      const Fn* fn;
      int64_t n, grain, n_grains;
      int threads;
    } range{&fn, n, grain, n_grains, threads};
    run([r = &range](int index, int) {
      if (index >= r->threads) return;
      const int64_t g0 = r->n_grains * index / r->threads, g1 = r->n_grains * (index + 1) / r->threads;
      const int64_t begin = g0 * r->grain, end = g1 * r->grain < r->n ? g1 * r->grain : r->n;
      if (begin < end) (*r->fn)(begin, end);
    });
  }

 private:
  void worker_loop(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  const std::function<void(int, int)>* task_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace bl
