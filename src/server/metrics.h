// /metrics: the server's counters in Prometheus' text format (version 0.0.4).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "server/engine.h"

namespace bl::server {

// HTTP responses sent, by status class (index 2 = 2xx ... 5 = 5xx).
struct HttpCounters {
  std::array<std::atomic<int64_t>, 6> responses_by_class{};
  void count(int http_status) {
    const int cls = http_status / 100;
    if (cls >= 0 && cls < 6) ++responses_by_class[cls];
  }
};

std::string prometheus_text(const EngineCounters& engine, int requests_in_line, const HttpCounters& http);

}  // namespace bl::server
