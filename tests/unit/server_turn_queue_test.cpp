// TurnQueue: one holder at a time, turns in arrival order, and a caller past max_waiting
// refused at once rather than queued.
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "server/turn_queue.h"

namespace bl::server {
namespace {

// Polls until the queue has `n` requests in line (the running one included).
void wait_for_in_line(const TurnQueue& q, int n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (q.in_line() != n) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline)
        << "in_line stayed " << q.in_line() << ", want " << n;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TEST(TurnQueue, GivesTurnsInArrivalOrder) {
  TurnQueue q(8);
  std::optional<Admission> first = q.wait_turn();
  ASSERT_TRUE(first.has_value());
  std::mutex order_mutex;
  std::vector<int> order;
  std::vector<std::thread> waiters;
  for (int i = 0; i < 5; ++i) {
    waiters.emplace_back([&, i] {
      std::optional<Admission> t = q.wait_turn();
      ASSERT_TRUE(t.has_value());
      std::lock_guard lock(order_mutex);
      order.push_back(i);
    });
    wait_for_in_line(q, i + 2);  // waiter i is in line before waiter i + 1 starts
  }
  first.reset();
  for (std::thread& t : waiters) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(q.in_line(), 0);
}

TEST(TurnQueue, RefusesAtOnceWhenMaxWaitingWait) {
  TurnQueue q(1);
  std::optional<Admission> running = q.wait_turn();
  ASSERT_TRUE(running.has_value());
  std::thread waiter([&] { EXPECT_TRUE(q.wait_turn().has_value()); });
  wait_for_in_line(q, 2);
  EXPECT_FALSE(q.wait_turn().has_value());  // would be the second waiting
  EXPECT_EQ(q.in_line(), 2);                // the refusal took no place in line
  running.reset();
  waiter.join();
  EXPECT_TRUE(q.wait_turn().has_value());
}

TEST(TurnQueue, ZeroWaitingServesOnlyAnIdleQueue) {
  TurnQueue q(0);
  std::optional<Admission> t = q.wait_turn();
  ASSERT_TRUE(t.has_value());
  EXPECT_FALSE(q.wait_turn().has_value());
  t.reset();
  EXPECT_TRUE(q.wait_turn().has_value());
}

}  // namespace
}  // namespace bl::server
