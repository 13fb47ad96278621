// generate() continuing a session that already holds a prefix (a chat's or the server's reused
// cache): with GenerateOptions::context naming that prefix, the repetition penalty sees it, and
// the tokens are those of a fresh session fed the whole prompt.
#include "runtime/generator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "runtime/session.h"
#include "unit/tiny_model.h"

namespace bl {
namespace {

constexpr int kCtx = 128;

std::vector<TokenId> generate_tokens(Session& session, const Tokenizer& tokenizer,
                                     std::span<const TokenId> prompt, const GenerateOptions& options) {
  Expected<GenerateResult> r = generate(session, tokenizer, prompt, options, nullptr);
  EXPECT_TRUE(r.ok()) << r.status().message();
  return r.ok() ? r->tokens : std::vector<TokenId>{};
}

TEST(Generate, ReusedPrefixCountsForTheRepetitionPenalty) {
  TinyModel m = load_tiny_model("bl_generator_test_tiny_f32.gguf", "ref");
  const SamplerParams greedy{.temperature = 0.0f};
  // A prefix that holds the token greedy decoding would pick next, so that a penalty which saw
  // the prefix must pick another: the 24 most likely next tokens after some short prompt, then
  // that prompt again (the pick after it must lie in the prefix; other prompts are tried until
  // one does).
  std::vector<TokenId> prefix, tail;
  TokenId unpenalized_pick = -1;
  for (int attempt = 0; attempt < 20 && unpenalized_pick < 0; ++attempt) {
    tail = {static_cast<TokenId>(300 + attempt), static_cast<TokenId>(40 + 7 * attempt), 7, 99};
    auto probe = std::move(Session::create(*m.model, {.n_ctx = kCtx})).value();
    EXPECT_TRUE(probe->feed(tail).ok());
    const auto logits = probe->last_logits();
    std::vector<TokenId> order(logits.size());
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + 24, order.end(),
                      [&](TokenId a, TokenId b) { return logits[a] > logits[b]; });
    prefix.assign(order.begin(), order.begin() + 24);
    std::vector<TokenId> whole = prefix;
    whole.insert(whole.end(), tail.begin(), tail.end());
    auto session = std::move(Session::create(*m.model, {.n_ctx = kCtx})).value();
    const std::vector<TokenId> plain =
        generate_tokens(*session, *m.tokenizer, whole, {.n_predict = 1, .sampler = greedy});
    ASSERT_EQ(plain.size(), 1u);
    const bool in_prefix = std::find(prefix.begin(), prefix.end(), plain[0]) != prefix.end();
    const bool in_tail = std::find(tail.begin(), tail.end(), plain[0]) != tail.end();
    if (in_prefix && !in_tail) unpenalized_pick = plain[0];
  }
  ASSERT_GE(unpenalized_pick, 0) << "no prompt whose greedy pick lies in its prefix";

  SamplerParams penalized = greedy;
  penalized.repeat_penalty = 50.0f;
  penalized.repeat_last_n = kCtx;
  std::vector<TokenId> whole = prefix;
  whole.insert(whole.end(), tail.begin(), tail.end());
  auto fresh = std::move(Session::create(*m.model, {.n_ctx = kCtx})).value();
  const std::vector<TokenId> want =
      generate_tokens(*fresh, *m.tokenizer, whole, {.n_predict = 6, .sampler = penalized});
  ASSERT_FALSE(want.empty());
  EXPECT_NE(want[0], unpenalized_pick) << "the penalty did not act on the prefix";

  auto continued = std::move(Session::create(*m.model, {.n_ctx = kCtx})).value();
  ASSERT_TRUE(continued->feed(prefix).ok());
  const std::vector<TokenId> got = generate_tokens(*continued, *m.tokenizer, tail,
                                                   {.n_predict = 6, .sampler = penalized, .context = prefix});
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace bl
