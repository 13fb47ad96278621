// What of the tokens a cache already holds a new prompt can keep: a chat's next turn, or the
// server's next request, computes only what follows the shared prefix.
#pragma once

#include <cstddef>
#include <vector>

#include "runtime/sampler.h"  // TokenId

namespace bl {

// The length of the common prefix of two token sequences.
inline size_t common_prefix(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// The tokens of `prompt` whose cached keys and values can stay: the common prefix with `cached`,
// but at most all of the prompt but its last token, which is fed again for the logits of the
// first pick. prompt must not be empty.
inline size_t reusable_prefix(const std::vector<TokenId>& cached, const std::vector<TokenId>& prompt) {
  const size_t shared = common_prefix(cached, prompt);
  return shared == prompt.size() ? shared - 1 : shared;
}

}  // namespace bl
