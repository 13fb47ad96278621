// Picks the next token from logits: repetition penalty, then temperature; greedy at
// temperature 0, otherwise top-k, top-p (nucleus) and min-p filtering and a draw from a
// seeded generator, so the same seed gives the same text.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "core/status.h"

namespace bl {

using TokenId = int32_t;

struct SamplerParams {
  float temperature = 0.8f;  // 0 = greedy
  int top_k = 40;            // 0 = off
  float top_p = 0.95f;       // 1 = off
  float min_p = 0.05f;       // 0 = off; keeps tokens with p >= min_p * p_max
  float repeat_penalty = 1.0f;  // 1 = off; > 1 discourages tokens seen in the last repeat_last_n
  int repeat_last_n = 64;
  uint64_t seed = 0;
};

Status validate(const SamplerParams& p);  // names the first out-of-range parameter

class Sampler {
 public:
  explicit Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {}

  // history: tokens so far (prompt and generated), for the repetition penalty.
  TokenId sample(std::span<const float> logits, std::span<const TokenId> history);

 private:
  struct Candidate {
    TokenId id;
    float logit;
  };
  SamplerParams params_;
  std::mt19937_64 rng_;
  std::vector<Candidate> candidates_;  // reused: no allocation per token after the first
  std::vector<float> probs_;
};

}  // namespace bl
