#include "server/completion_request.h"

#include <nlohmann/json.hpp>

namespace bl::server {
namespace {

using nlohmann::json;

// A field that is absent or null reads as "not given", as OpenAI's API treats null.
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

Status wrong_type(const char* name, const char* expected) {
  return invalid_argument(std::string(name) + " must be " + expected);
}

Expected<std::optional<double>> number_field(const json& body, const char* name, double lo, double hi,
                                             bool lo_open = false) {
  const json* f = field(body, name);
  if (!f) return std::optional<double>();
  if (!f->is_number()) return wrong_type(name, "a number");
  const double v = f->get<double>();
  if (v < lo || v > hi || (lo_open && v == lo)) {
    return invalid_argument(std::string(name) + " must be in " + (lo_open ? "(" : "[") + json(lo).dump() +
                            ", " + json(hi).dump() + "], got " + f->dump());
  }
  return std::optional<double>(v);
}

Expected<std::optional<int64_t>> integer_field(const json& body, const char* name, int64_t lo, int64_t hi) {
  const json* f = field(body, name);
  if (!f) return std::optional<int64_t>();
  if (!f->is_number_integer()) return wrong_type(name, "an integer");
  // Integers above INT64_MAX parse as unsigned: out of range either way.
  if (f->is_number_unsigned() && f->get<uint64_t>() > static_cast<uint64_t>(hi)) {
    return invalid_argument(std::string(name) + " must be at most " + std::to_string(hi) + ", got " +
                            f->dump());
  }
  const int64_t v = f->get<int64_t>();
  if (v < lo || v > hi) {
    return invalid_argument(std::string(name) + " must be in [" + std::to_string(lo) + ", " +
                            std::to_string(hi) + "], got " + f->dump());
  }
  return std::optional<int64_t>(v);
}

Expected<bool> bool_field(const json& body, const char* name) {
  const json* f = field(body, name);
  if (!f) return false;
  if (!f->is_boolean()) return wrong_type(name, "true or false");
  return f->get<bool>();
}

// Fields of OpenAI's API that would change the output and that bitlight does not implement:
// refused, so a client never gets a plain completion where it asked for something else.
Status refuse_unsupported(const json& body) {
  for (const char* name : {"n", "best_of"}) {
    std::optional<int64_t> count;
    BL_ASSIGN_OR_RETURN(count, integer_field(body, name, 1, INT32_MAX));
    if (count && *count != 1)
      return unsupported(std::string(name) + ": one choice per request (1) is supported");
  }
  for (const char* name : {"presence_penalty", "frequency_penalty"}) {
    if (const json* f = field(body, name); f && !(f->is_number() && f->get<double>() == 0.0)) {
      return unsupported(std::string(name) + " is not supported (use repeat_penalty)");
    }
  }
  if (const json* f = field(body, "logprobs"); f && !(f->is_boolean() && !f->get<bool>())) {
    return unsupported("logprobs are not supported");
  }
  if (field(body, "top_logprobs")) return unsupported("top_logprobs are not supported");
  if (const json* f = field(body, "echo"); f && !(f->is_boolean() && !f->get<bool>())) {
    return unsupported("echo is not supported");
  }
  if (const json* f = field(body, "suffix"); f && !(f->is_string() && f->get<std::string>().empty())) {
    return unsupported("suffix (fill in the middle) is not supported");
  }
  if (const json* f = field(body, "logit_bias"); f && !(f->is_object() && f->empty())) {
    return unsupported("logit_bias is not supported");
  }
  for (const char* name : {"tools", "functions"}) {
    if (const json* f = field(body, name); f && !(f->is_array() && f->empty())) {
      return unsupported(std::string(name) + ": tool calls are not supported");
    }
  }
  if (const json* f = field(body, "response_format")) {
    const json* type = f->is_object() ? field(*f, "type") : nullptr;
    if (!type || *type != "text")
      return unsupported("response_format: only {\"type\": \"text\"} is supported");
  }
  return Status::Ok();
}

Status parse_sampling(const json& body, CompletionRequest& r) {
  std::optional<double> d;
  BL_ASSIGN_OR_RETURN(d, number_field(body, "temperature", 0.0, 2.0));
  if (d) r.sampler.temperature = static_cast<float>(*d);
  BL_ASSIGN_OR_RETURN(d, number_field(body, "top_p", 0.0, 1.0, /*lo_open=*/true));
  if (d) r.sampler.top_p = static_cast<float>(*d);
  BL_ASSIGN_OR_RETURN(d, number_field(body, "min_p", 0.0, 1.0));
  if (d) r.sampler.min_p = static_cast<float>(*d);
  BL_ASSIGN_OR_RETURN(d, number_field(body, "repeat_penalty", 0.0, 10.0, /*lo_open=*/true));
  if (d) r.sampler.repeat_penalty = static_cast<float>(*d);
  std::optional<int64_t> i;
  BL_ASSIGN_OR_RETURN(i, integer_field(body, "top_k", 0, 1 << 20));
  if (i) r.sampler.top_k = static_cast<int>(*i);
  BL_ASSIGN_OR_RETURN(i, integer_field(body, "repeat_last_n", 0, 1 << 20));
  if (i) r.sampler.repeat_last_n = static_cast<int>(*i);
  BL_ASSIGN_OR_RETURN(i, integer_field(body, "seed", INT64_MIN, INT64_MAX));
  if (i) r.sampler.seed = static_cast<uint64_t>(*i), r.seeded = true;
  return validate(r.sampler);
}

Status parse_stop(const json& body, const RequestLimits& limits, CompletionRequest& r) {
  const json* f = field(body, "stop");
  if (!f) return Status::Ok();
  if (f->is_string()) {
    r.stop.push_back(f->get<std::string>());
  } else if (f->is_array()) {
    if (f->size() > static_cast<size_t>(limits.max_stop_strings)) {
      return invalid_argument("stop: at most " + std::to_string(limits.max_stop_strings) + " strings, got " +
                              std::to_string(f->size()));
    }
    for (const json& s : *f) {
      if (!s.is_string()) return wrong_type("stop", "a string or an array of strings");
      r.stop.push_back(s.get<std::string>());
    }
  } else {
    return wrong_type("stop", "a string or an array of strings");
  }
  for (const std::string& s : r.stop) {
    if (s.empty()) return invalid_argument("stop: a stop string is empty");
    if (s.size() > limits.max_stop_bytes) {
      return invalid_argument("stop: a stop string is longer than " + std::to_string(limits.max_stop_bytes) +
                              " bytes");
    }
  }
  return Status::Ok();
}

// "prompt": a string, an array of token ids, or a one-element array of either.
Status parse_prompt(const json& body, CompletionRequest& r) {
  const json* f = field(body, "prompt");
  if (!f) return invalid_argument("prompt is required");
  const json* p = f;
  if (f->is_array() && f->size() == 1 && ((*f)[0].is_string() || (*f)[0].is_array())) p = &(*f)[0];
  if (p->is_string()) {
    r.prompt = p->get<std::string>();
    return Status::Ok();
  }
  if (p->is_array() && !p->empty() && !(*p)[0].is_string()) {
    for (const json& id : *p) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX) {
        return invalid_argument("prompt: a token id must be a non-negative integer, got " + id.dump());
      }
      r.prompt_ids.push_back(static_cast<TokenId>(id.get<int64_t>()));
    }
    return Status::Ok();
  }
  if (p->is_array() && p->size() > 1)
    return unsupported("prompt: one prompt per request (an array of prompts is not supported)");
  return wrong_type("prompt", "a string or an array of token ids");
}

// A message's "content": a string or an array of {"type": "text", "text": ...} parts.
Expected<std::string> message_content(const json& message, size_t index) {
  const std::string where = "messages[" + std::to_string(index) + "].content";
  const json* c = field(message, "content");
  if (!c) return invalid_argument(where + " is required");
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) return invalid_argument(where + " must be a string or an array of text parts");
  std::string text;
  for (const json& part : *c) {
    const json* type = part.is_object() ? field(part, "type") : nullptr;
    if (!type || !type->is_string()) return invalid_argument(where + ": each part needs a \"type\"");
    if (*type != "text")
      return unsupported(where + ": parts of type " + type->dump() + " are not supported (text only)");
    const json* t = field(part, "text");
    if (!t || !t->is_string()) return invalid_argument(where + ": a text part needs a string \"text\"");
    text += t->get<std::string>();
  }
  return text;
}

Status parse_messages(const json& body, const RequestLimits& limits, CompletionRequest& r) {
  const json* f = field(body, "messages");
  if (!f) return invalid_argument("messages is required");
  if (!f->is_array() || f->empty()) return invalid_argument("messages must be a non-empty array");
  if (f->size() > limits.max_messages) {
    return invalid_argument("messages: at most " + std::to_string(limits.max_messages) + " messages");
  }
  for (size_t i = 0; i < f->size(); ++i) {
    const json& m = (*f)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) return invalid_argument(where + " must be an object");
    const json* role = field(m, "role");
    if (!role || !role->is_string()) return invalid_argument(where + ".role must be a string");
    std::string role_name = role->get<std::string>();
    if (role_name == "developer") role_name = "system";
    if (role_name != "system" && role_name != "user" && role_name != "assistant") {
      return unsupported(where + ".role " + role->dump() + " is not supported (system, user, assistant)");
    }
    std::string content;
    BL_ASSIGN_OR_RETURN(content, message_content(m, i));
    r.messages.push_back({std::move(role_name), std::move(content)});
  }
  return Status::Ok();
}

}  // namespace

Expected<CompletionRequest> parse_completion_request(std::string_view body, Endpoint endpoint,
                                                     const SamplerParams& defaults,
                                                     const RequestLimits& limits) {
  json j;
  try {
    j = json::parse(body);
  } catch (const json::parse_error& e) {
    return invalid_argument(std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) return invalid_argument("the request body must be a JSON object");
  if (const json* model = field(j, "model"); model && !model->is_string())
    return wrong_type("model", "a string");

  CompletionRequest r;
  r.endpoint = endpoint;
  r.sampler = defaults;
  BL_RETURN_IF_ERROR(refuse_unsupported(j));
  if (endpoint == Endpoint::completions) {
    BL_RETURN_IF_ERROR(parse_prompt(j, r));
  } else {
    BL_RETURN_IF_ERROR(parse_messages(j, limits, r));
  }
  // max_completion_tokens is the chat API's newer name for max_tokens; it wins when both are given.
  std::optional<int64_t> max_tokens;
  BL_ASSIGN_OR_RETURN(max_tokens, integer_field(j, "max_tokens", 0, INT32_MAX));
  std::optional<int64_t> max_completion_tokens;
  BL_ASSIGN_OR_RETURN(max_completion_tokens, integer_field(j, "max_completion_tokens", 0, INT32_MAX));
  if (max_completion_tokens) max_tokens = max_completion_tokens;
  if (max_tokens)
    r.max_tokens = static_cast<int>(*max_tokens);
  else if (endpoint == Endpoint::completions)
    r.max_tokens = 16;

  BL_RETURN_IF_ERROR(parse_sampling(j, r));
  BL_RETURN_IF_ERROR(parse_stop(j, limits, r));
  BL_ASSIGN_OR_RETURN(r.stream, bool_field(j, "stream"));
  if (field(j, "cache_prompt")) {
    BL_ASSIGN_OR_RETURN(r.cache_prompt, bool_field(j, "cache_prompt"));
  }
  if (const json* opts = field(j, "stream_options")) {
    if (!opts->is_object()) return wrong_type("stream_options", "an object");
    if (!r.stream) return invalid_argument("stream_options is only allowed with \"stream\": true");
    BL_ASSIGN_OR_RETURN(r.stream_include_usage, bool_field(*opts, "include_usage"));
  }
  return r;
}

}  // namespace bl::server
