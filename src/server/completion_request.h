// The body of an OpenAI-style /v1/completions or /v1/chat/completions request, parsed and
// checked before it reaches the model: every field that is present must have the right type
// and range, and fields bitlight does not implement (n > 1, logprobs, echo, tools, penalties
// other than repeat_penalty) are refused by name instead of being silently ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "runtime/sampler.h"
#include "tokenizer/chat_template.h"

namespace bl::server {

enum class Endpoint { completions, chat_completions };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::completions;
  // completions: the prompt as text, or as token ids (prompt_ids not empty).
  std::string prompt;
  std::vector<TokenId> prompt_ids;
  // chat_completions: the conversation, roles "system" | "user" | "assistant" ("developer" is
  // read as "system", as OpenAI does).
  std::vector<ChatMessage> messages;
  // Most tokens to generate; nullopt: until an end-of-generation token or a full context
  // (OpenAI's default for chat; /v1/completions defaults to 16 as OpenAI's does).
  std::optional<int> max_tokens;
  // The server's defaults (`bitlight serve --temp ...`) with the request's fields over them.
  SamplerParams sampler;
  bool seeded = false;            // the request gave "seed" (else the HTTP layer picks one)
  std::vector<std::string> stop;  // up to kMaxStopStrings, none empty
  bool stream = false;
  // llama.cpp's field: false computes the whole prompt again instead of reusing the common
  // prefix with the tokens the server's cache holds from the request before.
  bool cache_prompt = true;
  bool stream_include_usage = false;  // stream_options.include_usage
};

struct RequestLimits {
  int max_stop_strings = 4;     // OpenAI's limit
  size_t max_stop_bytes = 256;  // one stop string
  size_t max_messages = 1024;
};

// Parses `body` (JSON) for `endpoint`, starting from `defaults` for sampling. Errors are
// invalid_argument with a message that names the field ("temperature must be in [0, 2]") or
// unsupported for fields bitlight does not implement.
Expected<CompletionRequest> parse_completion_request(std::string_view body, Endpoint endpoint,
                                                     const SamplerParams& defaults,
                                                     const RequestLimits& limits = {});

}  // namespace bl::server
