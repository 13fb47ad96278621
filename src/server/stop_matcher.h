// Cuts streamed text at the first stop string the stream completes, also where a stop string
// spans several tokens: text that could still be the start of a stop string is held back until
// the next piece decides it, so a client never receives part of a stop string. The cut does not
// depend on how the text is split into pieces (as if read byte by byte: the generation ends
// where a stop string is first complete, so a longer one that began earlier is not waited for).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace bl::server {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  // Appends `text` (valid UTF-8) and returns the part that can be sent now. After a stop string
  // is found, returns the text before it and then nothing.
  std::string push(std::string_view text);
  bool stopped() const { return stopped_; }
  // At the end of a generation that found no stop string: the text still held back.
  std::string flush();

 private:
  // Bytes at the end of pending_ that are a proper prefix of some stop string.
  size_t held_back_bytes() const;

  std::vector<std::string> stops_;
  std::string pending_;  // received, not yet sent
  bool stopped_ = false;
};

}  // namespace bl::server
