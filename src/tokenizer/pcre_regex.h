// A compiled PCRE2 pattern in UTF + Unicode-property mode (\p{L}, \s, ... follow Unicode),
// tolerant of invalid UTF-8 in the subject (invalid bytes simply never match).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace bl {

class PcreRegex {
 public:
  static Expected<std::unique_ptr<PcreRegex>> compile(const std::string& pattern);
  ~PcreRegex();
  PcreRegex(const PcreRegex&) = delete;
  PcreRegex& operator=(const PcreRegex&) = delete;

  // Calls on_match(begin, end) for each non-overlapping match in text, left to right (byte
  // offsets into text). Thread-safe: match state is per call.
  template <typename F>
  void for_each_match(std::string_view text, F&& on_match) const {
    size_t begin = 0, end = 0, offset = 0;
    void* state = new_match_state();
    while (offset < text.size() && next_match(state, text, offset, begin, end)) {
      on_match(begin, end);
      offset = end > begin ? end : end + 1;  // the patterns used here never match empty text
    }
    free_match_state(state);
  }

 private:
  explicit PcreRegex(void* code) : code_(code) {}
  void* new_match_state() const;
  static void free_match_state(void* state);
  bool next_match(void* state, std::string_view text, size_t offset, size_t& begin, size_t& end) const;

  void* code_;  // pcre2_code_8*, kept opaque so pcre2.h stays out of the headers
};

}  // namespace bl
