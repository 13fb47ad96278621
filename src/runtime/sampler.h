// Picks the next token from logits: repetition penalty, then temperature; greedy at
// temperature 0, otherwise top-k, top-p (nucleus) and min-p filtering and a draw from a
// seeded generator, so the same seed gives the same text.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "core/status.h"
#include "kernels/cpu/top_k_draw.h"

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

// Whether the repetition penalty changes anything (then the logits must come to the host).
inline bool applies_repeat_penalty(const SamplerParams& p) {
  return p.repeat_penalty != 1.0f && p.repeat_last_n > 0;
}

// The draw parameters of p (temperature > 0) with the uniform number u.
cpu::TopKDraw top_k_draw(const SamplerParams& p, double u);

class Sampler {
 public:
  explicit Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {}

  // history: tokens so far (prompt and generated), for the repetition penalty.
  TokenId sample(std::span<const float> logits, std::span<const TokenId> history);

  // The next uniform number in [0, 1) of the seeded generator: sample() takes one per draw at
  // temperature > 0; a caller that has the draw done elsewhere (Session::feed_sampled, on the
  // device) passes it on, so the seed's sequence of numbers is the same either way.
  double next_uniform();

 private:
  SamplerParams params_;
  std::mt19937_64 rng_;
  std::vector<cpu::TokenCandidate> candidates_;  // reused: no allocation per token after the first
  std::vector<float> probs_;
};

}  // namespace bl
