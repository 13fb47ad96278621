// The generation loop: prompt in, tokens out, one at a time through a callback, until
// n_predict tokens, an end-of-generation token, or the context is full.
#pragma once

#include <functional>
#include <span>
#include <string>
#include <vector>

#include "runtime/sampler.h"
#include "runtime/session.h"

namespace bl {

class Tokenizer;

struct GenerateOptions {
  int n_predict = 128;  // < 0: until end of generation or a full context
  SamplerParams sampler;
  // The tokens already in the session before `prompt` (a conversation's or a server's reused
  // cache prefix), so that the repetition penalty looks back over them as it would had they
  // been fed with the prompt.
  std::span<const TokenId> context = {};
};

struct GenerateResult {
  std::vector<TokenId> tokens;   // generated ids (the end-of-generation token excluded)
  std::string stop_reason;       // "eog", "length", "context", "callback"
  double prompt_seconds = 0;     // feeding the prompt
  double decode_seconds = 0;     // everything after the first generated token was sampled
  int prompt_tokens = 0;
};

// on_token(id, text) gets each generated token and the text it completes (valid UTF-8); a
// last call with id -1 carries text held back at the end. It returns false to stop. The session continues from its current position, so a chat
// keeps its cache between turns.
Expected<GenerateResult> generate(Session& session, const Tokenizer& tokenizer, std::span<const TokenId> prompt,
                                  const GenerateOptions& options,
                                  const std::function<bool(TokenId, const std::string& text)>& on_token);

}  // namespace bl
