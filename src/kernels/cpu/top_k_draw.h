// The draw of the next token from the k largest logits: top-k, softmax at a temperature,
// min-p, top-p, then one uniform number placed in the kept probability mass. It is the sampling
// step of runtime/Sampler (after its repetition penalty), of host-memory backends'
// Backend::sample_top_k, and the reference the CUDA sampling kernel is tested against, so that
// a seed gives the same text whichever of them draws.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace bl::cpu {

// One draw's parameters, laid out as the device reads them (24 bytes, no padding).
struct TopKDraw {
  float temperature;  // > 0
  int32_t top_k;      // >= 1, or 0 = every token
  float top_p;        // (0, 1]; 1 = off
  float min_p;        // [0, 1); 0 = off; keeps tokens with p >= min_p * p_max
  double u;           // uniform in [0, 1): where the draw falls in the kept mass
};
static_assert(sizeof(TopKDraw) == 24, "TopKDraw is copied to devices as 24 bytes");

struct TokenCandidate {
  int32_t id;
  float logit;
};

// Orders candidates by logit, largest first, the lower id first among equal logits.
inline bool before(const TokenCandidate& a, const TokenCandidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// candidates: every token with its (penalised) logit, reordered and shrunk by the call. probs:
// scratch. Returns the drawn id.
int32_t draw_from_top_k(std::vector<TokenCandidate>& candidates, const TopKDraw& d,
                        std::vector<float>& probs);

// The same draw from a row of logits [n_vocab].
int32_t draw_from_top_k(std::span<const float> logits, const TopKDraw& d);

}  // namespace bl::cpu
