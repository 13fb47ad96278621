// The two engines behind `bitlight serve`, without HTTP, on a synthetic model with the scalar
// reference backend (where a batch step's logits equal one sequence's to ~1e-6): BatchEngine's
// continuous batching answers as SessionEngine answers one request at a time, with more requests
// than sequences (some wait, sequences are reused, cached prefixes kept), stops a job whose
// client leaves, and refuses past its line.
#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

#include "runtime/sequence_batch.h"
#include "runtime/session.h"
#include "server/batch_engine.h"
#include "server/session_engine.h"
#include "unit/tiny_model.h"

namespace bl::server {
namespace {

TinyModel load_tiny() { return load_tiny_model("bl_server_engine_test_tiny_f32.gguf", "ref"); }

constexpr int kCtx = 64;

CompletionRequest greedy_request(std::vector<TokenId> prompt, int max_tokens) {
  CompletionRequest r;
  r.prompt_ids = std::move(prompt);
  r.max_tokens = max_tokens;
  r.sampler.temperature = 0.0f;
  r.seeded = true;
  return r;
}

struct Answer {
  std::string text;
  CompletionOutcome outcome;
};

Answer ask(Engine& engine, const CompletionRequest& request) {
  Expected<std::vector<TokenId>> prompt = engine.prompt_tokens(request);
  EXPECT_TRUE(prompt.ok()) << prompt.status().message();
  std::optional<Admission> admission = engine.admit();
  EXPECT_TRUE(admission.has_value());
  Answer a;
  Expected<CompletionOutcome> outcome =
      engine.complete(*admission, request, *prompt, [&](const std::string& t) {
        a.text += t;
        return true;
      });
  EXPECT_TRUE(outcome.ok()) << outcome.status().message();
  if (outcome.ok()) a.outcome = *outcome;
  return a;
}

std::vector<CompletionRequest> some_requests() {
  std::vector<CompletionRequest> requests;
  for (int i = 0; i < 6; ++i) {
    std::vector<TokenId> prompt;
    for (int j = 0; j <= 3 * i; ++j) prompt.push_back((i * 97 + j * 31 + 5) % 500);
    requests.push_back(greedy_request(prompt, i == 4 ? 0 : 6 + i));
  }
  return requests;
}

TEST(ServerEngines, BatchEngineAnswersAsTheSessionEngine) {
  TinyModel m = load_tiny();
  const std::vector<CompletionRequest> requests = some_requests();
  std::vector<Answer> alone;
  {
    SessionEngine one(*m.model, *m.tokenizer, std::nullopt,
                      std::move(Session::create(*m.model, {.n_ctx = kCtx, .n_batch = 8})).value(), 8);
    for (const CompletionRequest& r : requests) alone.push_back(ask(one, r));
  }
  // Three sequences for six requests at once: three wait, and sequences are reused.
  BatchEngine batch(
      *m.model, *m.tokenizer, std::nullopt,
      std::move(SequenceBatch::create(*m.model, {.n_seq = 3, .n_ctx = kCtx, .n_batch = 8})).value(),
      /*prefill_chunk=*/8, /*max_waiting=*/8);
  std::vector<Answer> together(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    threads.emplace_back([&, i] { together[i] = ask(batch, requests[i]); });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    SCOPED_TRACE("request " + std::to_string(i));
    EXPECT_EQ(together[i].text, alone[i].text);
    EXPECT_EQ(together[i].outcome.completion_tokens, alone[i].outcome.completion_tokens);
    EXPECT_EQ(together[i].outcome.completion_tokens, *requests[i].max_tokens);  // no end token in 12
    EXPECT_STREQ(together[i].outcome.finish_reason, alone[i].outcome.finish_reason);
    EXPECT_EQ(together[i].outcome.prompt_tokens, static_cast<int>(requests[i].prompt_ids.size()));
  }
  EXPECT_GT(batch.counters().batch_step_sequences.load(), batch.counters().batch_steps.load())
      << "no step carried two sequences";
  // The same request again: its prompt is found where it was cached, the answer unchanged.
  const int64_t reused_before = batch.counters().prompt_tokens_reused;
  const Answer again = ask(batch, requests[5]);
  EXPECT_EQ(again.text, alone[5].text);
  EXPECT_EQ(batch.counters().prompt_tokens_reused - reused_before,
            static_cast<int64_t>(requests[5].prompt_ids.size()) - 1);
  EXPECT_EQ(batch.requests_in_line(), 0);
}

TEST(ServerEngines, BatchEngineStopsTheJobOfAClientThatLeaves) {
  TinyModel m = load_tiny();
  BatchEngine batch(
      *m.model, *m.tokenizer, std::nullopt,
      std::move(SequenceBatch::create(*m.model, {.n_seq = 2, .n_ctx = kCtx, .n_batch = 8})).value(), 8, 4);
  const CompletionRequest r = greedy_request({1, 2, 3}, 40);
  std::optional<Admission> admission = batch.admit();
  ASSERT_TRUE(admission.has_value());
  int calls = 0;
  Expected<CompletionOutcome> outcome = batch.complete(*admission, r, r.prompt_ids, [&](const std::string&) {
    ++calls;
    return false;  // the client has gone
  });
  ASSERT_TRUE(outcome.ok()) << outcome.status().message();
  EXPECT_TRUE(outcome->cancelled);
  EXPECT_EQ(calls, 1) << "no text after the client left";
  EXPECT_LT(outcome->completion_tokens, 40);
  EXPECT_EQ(batch.counters().requests_cancelled, 1);
  admission.reset();
  const Answer next = ask(batch, greedy_request({4, 5}, 5));
  EXPECT_FALSE(next.outcome.cancelled);
  EXPECT_EQ(next.outcome.completion_tokens, 5);
}

TEST(ServerEngines, BatchEngineRefusesPastItsLine) {
  TinyModel m = load_tiny();
  BatchEngine batch(
      *m.model, *m.tokenizer, std::nullopt,
      std::move(SequenceBatch::create(*m.model, {.n_seq = 2, .n_ctx = kCtx, .n_batch = 8})).value(), 8,
      /*max_waiting=*/1);
  std::vector<Admission> held;
  for (int i = 0; i < 3; ++i) {  // two sequences and one waiting
    std::optional<Admission> a = batch.admit();
    ASSERT_TRUE(a.has_value()) << i;
    held.push_back(std::move(*a));
  }
  EXPECT_FALSE(batch.admit().has_value());
  EXPECT_EQ(batch.counters().requests_refused_busy, 1);
  EXPECT_EQ(batch.requests_in_line(), 3);
  held.pop_back();
  EXPECT_TRUE(batch.admit().has_value());
}

}  // namespace
}  // namespace bl::server
