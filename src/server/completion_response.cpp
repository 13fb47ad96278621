#include "server/completion_response.h"

namespace bl::server {
namespace {

using nlohmann::json;

bool is_chat(const ResponseHeader& h) { return h.endpoint == Endpoint::chat_completions; }

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json finish_json(const char* finish_reason) { return finish_reason ? json(finish_reason) : json(nullptr); }

json header_json(const ResponseHeader& h, bool chunk) {
  const char* object = is_chat(h) ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}

}  // namespace

json completion_body(const ResponseHeader& header, const std::string& text, const char* finish_reason,
                     const Usage& usage) {
  json body = header_json(header, /*chunk=*/false);
  json choice = {{"index", 0}, {"finish_reason", finish_json(finish_reason)}};
  if (is_chat(header)) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  body["choices"] = json::array({choice});
  body["usage"] = usage_json(usage);
  return body;
}

json stream_chunk(const ResponseHeader& header, const std::string& text, const char* finish_reason) {
  json body = header_json(header, /*chunk=*/true);
  json choice = {{"index", 0}, {"finish_reason", finish_json(finish_reason)}};
  if (is_chat(header)) {
    choice["delta"] = text.empty() && finish_reason ? json::object() : json{{"content", text}};
  } else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  body["choices"] = json::array({choice});
  return body;
}

json role_chunk(const ResponseHeader& header) {
  json body = header_json(header, /*chunk=*/true);
  body["choices"] = json::array(
      {{{"index", 0}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}}});
  return body;
}

json usage_chunk(const ResponseHeader& header, const Usage& usage) {
  json body = header_json(header, /*chunk=*/true);
  body["choices"] = json::array();
  body["usage"] = usage_json(usage);
  return body;
}

std::string server_sent_event(const json& data) {
  // dump with replacement: generated text is valid UTF-8 (StreamDecoder), but a client's stop
  // string cut can never make dump() throw in a server thread.
  return "data: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

int http_status_of(const Status& status) {
  switch (status.code()) {
    case StatusCode::ok:
      return 200;
    case StatusCode::invalid_argument:
    case StatusCode::unsupported:
      return 400;
    case StatusCode::not_found:
      return 404;
    case StatusCode::out_of_memory:
      return 503;
    default:
      return 500;
  }
}

json error_body(int http_status, const std::string& message) {
  const char* type = http_status >= 500 ? "server_error" : "invalid_request_error";
  return {{"error", {{"message", message}, {"type", type}, {"param", nullptr}, {"code", http_status}}}};
}

}  // namespace bl::server
