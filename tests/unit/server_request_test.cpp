// parse_completion_request: every field read, the server's defaults kept where a request gives
// none, and every bad or unsupported field refused with a message that names it.
#include <gtest/gtest.h>

#include <string>

#include "server/completion_request.h"

namespace bl::server {
namespace {

const SamplerParams kDefaults{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .seed = 0};

CompletionRequest parse_ok(const std::string& body, Endpoint endpoint = Endpoint::completions) {
  Expected<CompletionRequest> r = parse_completion_request(body, endpoint, kDefaults);
  EXPECT_TRUE(r.ok()) << body << ": " << r.status().message();
  return r.ok() ? *r : CompletionRequest{};
}

Status parse_error(const std::string& body, Endpoint endpoint = Endpoint::completions) {
  Expected<CompletionRequest> r = parse_completion_request(body, endpoint, kDefaults);
  EXPECT_FALSE(r.ok()) << body << " was accepted";
  return r.ok() ? Status::Ok() : r.status();
}

TEST(CompletionRequest, ReadsEveryField) {
  const CompletionRequest r =
      parse_ok(R"({"model": "m", "prompt": "Hello", "max_tokens": 7, "temperature": 0.5,
      "top_p": 0.9, "top_k": 12, "min_p": 0.1, "repeat_penalty": 1.1, "repeat_last_n": 32, "seed": 42,
      "stop": ["\n", "END"], "stream": true, "stream_options": {"include_usage": true}, "cache_prompt": false})");
  EXPECT_EQ(r.endpoint, Endpoint::completions);
  EXPECT_EQ(r.prompt, "Hello");
  EXPECT_TRUE(r.prompt_ids.empty());
  ASSERT_TRUE(r.max_tokens.has_value());
  EXPECT_EQ(*r.max_tokens, 7);
  EXPECT_FLOAT_EQ(r.sampler.temperature, 0.5f);
  EXPECT_FLOAT_EQ(r.sampler.top_p, 0.9f);
  EXPECT_EQ(r.sampler.top_k, 12);
  EXPECT_FLOAT_EQ(r.sampler.min_p, 0.1f);
  EXPECT_FLOAT_EQ(r.sampler.repeat_penalty, 1.1f);
  EXPECT_EQ(r.sampler.repeat_last_n, 32);
  EXPECT_EQ(r.sampler.seed, 42u);
  EXPECT_TRUE(r.seeded);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"\n", "END"}));
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.stream_include_usage);
  EXPECT_FALSE(r.cache_prompt);
}

TEST(CompletionRequest, KeepsTheServersDefaultsWhereTheRequestIsSilent) {
  const CompletionRequest c = parse_ok(R"({"prompt": "x", "temperature": null, "stop": null})");
  EXPECT_EQ(*c.max_tokens, 16);  // OpenAI's default for /v1/completions
  EXPECT_FLOAT_EQ(c.sampler.temperature, kDefaults.temperature);
  EXPECT_EQ(c.sampler.top_k, kDefaults.top_k);
  EXPECT_FLOAT_EQ(c.sampler.top_p, kDefaults.top_p);
  EXPECT_FLOAT_EQ(c.sampler.min_p, kDefaults.min_p);
  EXPECT_FALSE(c.seeded);
  EXPECT_TRUE(c.stop.empty());
  EXPECT_FALSE(c.stream);
  EXPECT_TRUE(c.cache_prompt);
  // Chat: until the end of the turn or a full context.
  const CompletionRequest chat =
      parse_ok(R"({"messages": [{"role": "user", "content": "hi"}]})", Endpoint::chat_completions);
  EXPECT_FALSE(chat.max_tokens.has_value());
}

TEST(CompletionRequest, ReadsEveryFormOfPrompt) {
  EXPECT_EQ(parse_ok(R"({"prompt": ""})").prompt, "");
  EXPECT_EQ(parse_ok(R"({"prompt": ["one string"]})").prompt, "one string");
  EXPECT_EQ(parse_ok(R"({"prompt": [1, 2, 3]})").prompt_ids, (std::vector<TokenId>{1, 2, 3}));
  EXPECT_EQ(parse_ok(R"({"prompt": [[4, 5]]})").prompt_ids, (std::vector<TokenId>{4, 5}));
  EXPECT_EQ(parse_error(R"({"prompt": ["a", "b"]})").code(), StatusCode::unsupported);
  EXPECT_NE(parse_error(R"({"prompt": [1, -2]})").message().find("-2"), std::string::npos);
  EXPECT_NE(parse_error(R"({"prompt": [1, 2.5]})").message().find("2.5"), std::string::npos);
  EXPECT_NE(parse_error(R"({"prompt": [1, 4294967296]})").message().find("4294967296"), std::string::npos);
  EXPECT_NE(parse_error(R"({"prompt": []})").message().find("prompt"), std::string::npos);
  EXPECT_NE(parse_error(R"({"prompt": 3})").message().find("prompt"), std::string::npos);
  EXPECT_NE(parse_error(R"({"max_tokens": 3})").message().find("prompt is required"), std::string::npos);
}

TEST(CompletionRequest, ReadsChatMessages) {
  const CompletionRequest r = parse_ok(R"({"messages": [
      {"role": "developer", "content": "Be brief."},
      {"role": "user", "content": [{"type": "text", "text": "Hello, "}, {"type": "text", "text": "there"}]},
      {"role": "assistant", "content": "Hi."},
      {"role": "user", "content": "Bye", "name": "sam"}], "max_completion_tokens": 5, "max_tokens": 9})",
                                       Endpoint::chat_completions);
  ASSERT_EQ(r.messages.size(), 4u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[0].content, "Be brief.");
  EXPECT_EQ(r.messages[1].role, "user");
  EXPECT_EQ(r.messages[1].content, "Hello, there");
  EXPECT_EQ(r.messages[2].role, "assistant");
  EXPECT_EQ(r.messages[3].content, "Bye");
  EXPECT_EQ(*r.max_tokens, 5);  // the newer name wins
}

TEST(CompletionRequest, RefusesBadChatMessages) {
  struct Case {
    const char* body;
    const char* names;
    StatusCode code;
  };
  const Case cases[] = {
      {R"({})", "messages is required", StatusCode::invalid_argument},
      {R"({"messages": []})", "non-empty", StatusCode::invalid_argument},
      {R"({"messages": "hi"})", "non-empty array", StatusCode::invalid_argument},
      {R"({"messages": [3]})", "messages[0] must be an object", StatusCode::invalid_argument},
      {R"({"messages": [{"content": "x"}]})", "messages[0].role", StatusCode::invalid_argument},
      {R"({"messages": [{"role": "user"}]})", "messages[0].content is required",
       StatusCode::invalid_argument},
      {R"({"messages": [{"role": "user", "content": 5}]})", "messages[0].content",
       StatusCode::invalid_argument},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "x"}]})",
       "messages[1].role", StatusCode::unsupported},
      {R"({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})",
       "image_url", StatusCode::unsupported},
      {R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})", "\"text\"",
       StatusCode::invalid_argument},
  };
  for (const Case& c : cases) {
    const Status s = parse_error(c.body, Endpoint::chat_completions);
    EXPECT_EQ(s.code(), c.code) << c.body << ": " << s.message();
    EXPECT_NE(s.message().find(c.names), std::string::npos) << c.body << ": " << s.message();
  }
}

TEST(CompletionRequest, RefusesBadValuesNamingTheField) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({bad json)", "not valid JSON"},
      {R"([1, 2])", "JSON object"},
      {R"({"prompt": "x", "model": 3})", "model"},
      {R"({"prompt": "x", "max_tokens": -1})", "max_tokens"},
      {R"({"prompt": "x", "max_tokens": "9"})", "max_tokens must be an integer"},
      {R"({"prompt": "x", "max_tokens": 1.5})", "max_tokens must be an integer"},
      {R"({"prompt": "x", "max_tokens": 99999999999999999999})", "max_tokens"},
      {R"({"prompt": "x", "temperature": 2.5})", "temperature"},
      {R"({"prompt": "x", "temperature": -0.1})", "temperature"},
      {R"({"prompt": "x", "temperature": "hot"})", "temperature must be a number"},
      {R"({"prompt": "x", "top_p": 0})", "top_p"},
      {R"({"prompt": "x", "top_k": -3})", "top_k"},
      {R"({"prompt": "x", "min_p": 1})", "min_p"},
      {R"({"prompt": "x", "repeat_penalty": 0})", "repeat_penalty"},
      {R"({"prompt": "x", "seed": "s"})", "seed"},
      {R"({"prompt": "x", "stop": 5})", "stop"},
      {R"({"prompt": "x", "stop": [""]})", "stop"},
      {R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", "at most 4"},
      {R"({"prompt": "x", "stream": "yes"})", "stream"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options"},
      {R"({"prompt": "x", "stream": true, "stream_options": 1})", "stream_options"},
      {R"({"prompt": "x", "cache_prompt": 1})", "cache_prompt"},
      {R"({"prompt": "x", "n": "2"})", "n must be an integer"},
  };
  for (const auto& [body, names] : cases) {
    const Status s = parse_error(body);
    EXPECT_EQ(s.code(), StatusCode::invalid_argument) << body << ": " << s.message();
    EXPECT_NE(s.message().find(names), std::string::npos) << body << ": " << s.message();
  }
  const std::string long_stop(300, 'a');
  EXPECT_NE(parse_error(R"({"prompt": "x", "stop": ")" + long_stop + "\"}").message().find("256 bytes"),
            std::string::npos);
}

TEST(CompletionRequest, RefusesWhatItDoesNotImplementButAcceptsTheirDefaults) {
  const std::pair<const char*, const char*> refused[] = {
      {R"({"prompt": "x", "n": 2})", "n"},
      {R"({"prompt": "x", "best_of": 3})", "best_of"},
      {R"({"prompt": "x", "presence_penalty": 0.5})", "presence_penalty"},
      {R"({"prompt": "x", "frequency_penalty": -1})", "frequency_penalty"},
      {R"({"prompt": "x", "logprobs": 5})", "logprobs"},
      {R"({"prompt": "x", "logprobs": true})", "logprobs"},
      {R"({"prompt": "x", "top_logprobs": 2})", "top_logprobs"},
      {R"({"prompt": "x", "echo": true})", "echo"},
      {R"({"prompt": "x", "suffix": "end"})", "suffix"},
      {R"({"prompt": "x", "logit_bias": {"50": 10}})", "logit_bias"},
      {R"({"prompt": "x", "tools": [{"type": "function"}]})", "tools"},
      {R"({"prompt": "x", "response_format": {"type": "json_object"}})", "response_format"},
  };
  for (const auto& [body, names] : refused) {
    const Status s = parse_error(body);
    EXPECT_EQ(s.code(), StatusCode::unsupported) << body << ": " << s.message();
    EXPECT_NE(s.message().find(names), std::string::npos) << body << ": " << s.message();
  }
  // What OpenAI's clients send by default.
  parse_ok(R"({"prompt": "x", "n": 1, "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0.0,
      "logprobs": null, "top_logprobs": null, "echo": false, "suffix": "", "logit_bias": {}, "tools": [],
      "response_format": {"type": "text"}, "user": "me"})");
}

}  // namespace
}  // namespace bl::server
