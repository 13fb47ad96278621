// First come, first served turns at one shared resource (SessionEngine's Session): a request
// waits for its turn, at most max_waiting wait at once, and the next one is refused instead of
// queueing without bound (the HTTP layer answers 503).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>

#include "server/engine.h"

namespace bl::server {

class TurnQueue {
 public:
  explicit TurnQueue(int max_waiting) : max_waiting_(max_waiting) {}

  // Waits for this caller's turn, held until the Admission is destroyed; nullopt (at once) when
  // max_waiting callers already wait.
  std::optional<Admission> wait_turn() {
    std::unique_lock lock(mutex_);
    const uint64_t in_line = next_ticket_ - now_serving_;  // the running one and those waiting
    if (in_line > static_cast<uint64_t>(max_waiting_)) return std::nullopt;
    const uint64_t ticket = next_ticket_++;
    turn_changed_.wait(lock, [&] { return now_serving_ == ticket; });
    return std::optional<Admission>(std::in_place, [this] { finish(); });
  }

  // Requests holding or waiting for a turn.
  int in_line() const {
    std::lock_guard lock(mutex_);
    return static_cast<int>(next_ticket_ - now_serving_);
  }

 private:
  void finish() {
    {
      std::lock_guard lock(mutex_);
      ++now_serving_;
    }
    turn_changed_.notify_all();
  }

  const int max_waiting_;
  mutable std::mutex mutex_;
  std::condition_variable turn_changed_;
  uint64_t next_ticket_ = 0;
  uint64_t now_serving_ = 0;
};

}  // namespace bl::server
