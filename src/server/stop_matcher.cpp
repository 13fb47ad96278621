#include "server/stop_matcher.h"

#include <algorithm>

namespace bl::server {

std::string StopMatcher::push(std::string_view text) {
  if (stopped_) return {};
  // Only the new text and the held-back tail before it can hold a new match.
  const size_t search_from = pending_.size();
  pending_ += text;
  // The stop string that the stream completes first (the earliest end; of two ending on the
  // same byte, the longer), as a byte-by-byte reader would have found it.
  size_t first = std::string::npos, first_end = std::string::npos;
  for (const std::string& stop : stops_) {
    const size_t from = search_from >= stop.size() ? search_from - stop.size() + 1 : 0;
    const size_t at = pending_.find(stop, from);
    if (at == std::string::npos) continue;
    const size_t end = at + stop.size();
    if (end < first_end || (end == first_end && at < first)) first = at, first_end = end;
  }
  if (first != std::string::npos) {
    stopped_ = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  const size_t keep = held_back_bytes();
  std::string out = pending_.substr(0, pending_.size() - keep);
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StopMatcher::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

size_t StopMatcher::held_back_bytes() const {
  size_t keep = 0;
  for (const std::string& stop : stops_) {
    // The longest n < stop.size() with pending_'s last n bytes == stop's first n.
    for (size_t n = std::min(stop.size() - 1, pending_.size()); n > keep; --n) {
      if (std::string_view(pending_).substr(pending_.size() - n) == std::string_view(stop).substr(0, n)) {
        keep = n;
        break;
      }
    }
  }
  return keep;
}

}  // namespace bl::server
