// First come, first served turns at the one Session a server has: a request waits for its
// turn, at most max_waiting wait at once, and the next one is refused instead of queueing
// without bound (the HTTP layer answers 503).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>

namespace bl::server {

class TurnQueue {
 public:
  explicit TurnQueue(int max_waiting) : max_waiting_(max_waiting) {}

  // Holds the turn until destroyed.
  class Turn {
   public:
    explicit Turn(TurnQueue* queue) : queue_(queue) {}
    Turn(Turn&& other) noexcept : queue_(other.queue_) { other.queue_ = nullptr; }
    Turn(const Turn&) = delete;
    Turn& operator=(const Turn&) = delete;
    Turn& operator=(Turn&&) = delete;
    ~Turn() {
      if (queue_) queue_->finish();
    }

   private:
    TurnQueue* queue_;
  };

  // Waits for this caller's turn; nullopt (at once) when max_waiting callers already wait.
  std::optional<Turn> wait_turn() {
    std::unique_lock lock(mutex_);
    const uint64_t in_line = next_ticket_ - now_serving_;  // the running one and those waiting
    if (in_line > static_cast<uint64_t>(max_waiting_)) return std::nullopt;
    const uint64_t ticket = next_ticket_++;
    turn_changed_.wait(lock, [&] { return now_serving_ == ticket; });
    return std::optional<Turn>(std::in_place, this);
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
