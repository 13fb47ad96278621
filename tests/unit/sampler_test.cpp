#include "runtime/sampler.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace bl {
namespace {

std::vector<float> random_logits(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(n));
  for (float& l : logits) l = normal(rng);
  return logits;
}

TEST(Sampler, GreedyTakesTheArgmax) {
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::vector<float> logits = random_logits(1000, seed);
    Sampler sampler({.temperature = 0.0f});
    const TokenId expected = static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    EXPECT_EQ(sampler.sample(logits, {}), expected);
  }
}

TEST(Sampler, SameSeedSameSequenceAndOtherSeedDiffers) {
  std::vector<float> logits = random_logits(500, 7);
  for (float& l : logits) l *= 0.1f;  // flat distribution: many plausible tokens
  SamplerParams p{.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f, .seed = 42};
  Sampler a(p), b(p);
  p.seed = 43;
  Sampler c(p);
  std::vector<TokenId> sa, sb, sc;
  for (int i = 0; i < 64; ++i) {
    sa.push_back(a.sample(logits, {}));
    sb.push_back(b.sample(logits, {}));
    sc.push_back(c.sample(logits, {}));
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST(Sampler, TopKOneIsGreedy) {
  std::vector<float> logits = random_logits(300, 3);
  const TokenId argmax = static_cast<TokenId>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  Sampler s({.temperature = 5.0f, .top_k = 1, .top_p = 1.0f, .min_p = 0.0f, .seed = 1});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.sample(logits, {}), argmax);
}

TEST(Sampler, TopKKeepsOnlyTheKLargest) {
  std::vector<float> logits = random_logits(300, 4);
  std::vector<float> sorted = logits;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  Sampler s({.temperature = 10.0f, .top_k = 5, .top_p = 1.0f, .min_p = 0.0f, .seed = 2});
  for (int i = 0; i < 500; ++i) EXPECT_GE(logits[static_cast<size_t>(s.sample(logits, {}))], sorted[4]);
}

TEST(Sampler, MinPDropsUnlikelyTokens) {
  // p_i / p_max = exp(l_i - 3): token 1 0.05 and token 3 0.0003 fall under min_p = 0.2;
  // token 2 (0.37) stays.
  std::vector<float> logits = {3.0f, 0.0f, 2.0f, -5.0f};
  Sampler s({.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.2f, .seed = 3});
  for (int i = 0; i < 500; ++i) {
    const TokenId id = s.sample(logits, {});
    EXPECT_TRUE(id == 0 || id == 2) << id;
  }
}

TEST(Sampler, TopPKeepsTheNucleus) {
  std::vector<float> logits = {5.0f, 4.0f, 0.0f, 0.0f, 0.0f};  // p ~ 0.72, 0.26, then ~0.005 each
  Sampler s({.temperature = 1.0f, .top_k = 0, .top_p = 0.9f, .min_p = 0.0f, .seed = 4});
  for (int i = 0; i < 500; ++i) EXPECT_LE(s.sample(logits, {}), 1);
}

TEST(Sampler, RepetitionPenaltyChangesTheGreedyChoice) {
  std::vector<float> logits = {2.0f, 1.9f, -1.0f};
  const std::vector<TokenId> history = {0};
  Sampler plain({.temperature = 0.0f});
  Sampler penalised({.temperature = 0.0f, .repeat_penalty = 1.5f, .repeat_last_n = 8});
  EXPECT_EQ(plain.sample(logits, history), 0);
  EXPECT_EQ(penalised.sample(logits, history), 1);  // 2.0 / 1.5 < 1.9
}

TEST(Sampler, ValidateNamesTheBadParameter) {
  EXPECT_NE(validate({.temperature = -1.0f}).message().find("temperature"), std::string::npos);
  EXPECT_NE(validate({.top_p = 0.0f}).message().find("top_p"), std::string::npos);
  EXPECT_NE(validate({.min_p = 1.5f}).message().find("min_p"), std::string::npos);
  EXPECT_NE(validate({.repeat_penalty = 0.0f}).message().find("repeat_penalty"), std::string::npos);
  EXPECT_TRUE(validate({}).ok());
}

}  // namespace
}  // namespace bl
