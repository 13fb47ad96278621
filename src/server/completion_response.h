// The JSON bodies bitlight's server sends, shaped as OpenAI's API shapes them: a whole
// completion, one server-sent event of a stream ("data: {...}\n\n"), an error object.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "core/status.h"
#include "server/completion_request.h"

namespace bl::server {

// What every object of one response shares.
struct ResponseHeader {
  Endpoint endpoint = Endpoint::completions;
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

// The whole response of a request without "stream". finish_reason: "stop" | "length".
nlohmann::json completion_body(const ResponseHeader& header, const std::string& text,
                               const char* finish_reason, const Usage& usage);

// One chunk of a stream: `text` is the new text (the chat API's delta.content), finish_reason
// null until the last chunk. The chat API's first chunk carries the role (role_chunk).
nlohmann::json stream_chunk(const ResponseHeader& header, const std::string& text, const char* finish_reason);
nlohmann::json role_chunk(const ResponseHeader& header);
// stream_options.include_usage: a last chunk with no choices and the usage.
nlohmann::json usage_chunk(const ResponseHeader& header, const Usage& usage);
// "data: <json>\n\n"
std::string server_sent_event(const nlohmann::json& data);
inline constexpr const char* kStreamDone = "data: [DONE]\n\n";

// The HTTP status for a Status: 400 for bad or unsupported requests, 404, 503 when out of
// memory, 500 for the rest.
int http_status_of(const Status& status);
// {"error": {"message", "type", "param": null, "code"}}
nlohmann::json error_body(int http_status, const std::string& message);
// The same for a Status, at http_status_of(status).
inline nlohmann::json error_body(const Status& status) {
  return error_body(http_status_of(status), status.message());
}

}  // namespace bl::server
