// The response bodies in OpenAI's shapes, and the HTTP status of each kind of error.
#include <gtest/gtest.h>

#include "server/completion_response.h"

namespace bl::server {
namespace {

using nlohmann::json;

const ResponseHeader kCompletion{Endpoint::completions, "cmpl-1", 1700000000, "smol"};
const ResponseHeader kChat{Endpoint::chat_completions, "chatcmpl-1", 1700000000, "smol"};

TEST(CompletionResponse, WholeCompletionBodies) {
  const json c = completion_body(kCompletion, "Paris.", "stop", {.prompt_tokens = 5, .completion_tokens = 2});
  EXPECT_EQ(c["object"], "text_completion");
  EXPECT_EQ(c["id"], "cmpl-1");
  EXPECT_EQ(c["created"], 1700000000);
  EXPECT_EQ(c["model"], "smol");
  ASSERT_EQ(c["choices"].size(), 1u);
  EXPECT_EQ(c["choices"][0]["text"], "Paris.");
  EXPECT_EQ(c["choices"][0]["index"], 0);
  EXPECT_EQ(c["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(c["usage"], (json{{"prompt_tokens", 5}, {"completion_tokens", 2}, {"total_tokens", 7}}));

  const json chat = completion_body(kChat, "Hi.", "length", {.prompt_tokens = 30, .completion_tokens = 4});
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["choices"][0]["message"], (json{{"role", "assistant"}, {"content", "Hi."}}));
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chat["usage"]["total_tokens"], 34);
}

TEST(CompletionResponse, StreamChunks) {
  const json role = role_chunk(kChat);
  EXPECT_EQ(role["object"], "chat.completion.chunk");
  EXPECT_EQ(role["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(role["choices"][0]["finish_reason"].is_null());

  const json piece = stream_chunk(kChat, " world", nullptr);
  EXPECT_EQ(piece["choices"][0]["delta"], (json{{"content", " world"}}));
  EXPECT_TRUE(piece["choices"][0]["finish_reason"].is_null());
  const json last = stream_chunk(kChat, "", "stop");
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");

  const json text = stream_chunk(kCompletion, "abc", nullptr);
  EXPECT_EQ(text["object"], "text_completion");
  EXPECT_EQ(text["choices"][0]["text"], "abc");

  const json usage = usage_chunk(kChat, {.prompt_tokens = 3, .completion_tokens = 1});
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 4);

  EXPECT_EQ(server_sent_event(json{{"a", 1}}), "data: {\"a\":1}\n\n");
}

TEST(CompletionResponse, ErrorsAndTheirStatus) {
  EXPECT_EQ(http_status_of(invalid_argument("x")), 400);
  EXPECT_EQ(http_status_of(unsupported("x")), 400);
  EXPECT_EQ(http_status_of(not_found("x")), 404);
  EXPECT_EQ(http_status_of(out_of_memory("x")), 503);
  EXPECT_EQ(http_status_of(internal_error("x")), 500);
  const json e = error_body(400, "temperature must be in [0, 2]");
  EXPECT_EQ(e["error"]["message"], "temperature must be in [0, 2]");
  EXPECT_EQ(e["error"]["type"], "invalid_request_error");
  EXPECT_EQ(e["error"]["code"], 400);
  EXPECT_EQ(error_body(500, "boom")["error"]["type"], "server_error");
}

}  // namespace
}  // namespace bl::server
