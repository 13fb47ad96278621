// The draw of the next token from the k largest logits: top-k, softmax at a temperature,
// min-p, top-p, then one uniform number placed in the kept probability mass. It is the sampling
// step of runtime/Sampler (after its repetition penalty), of host-memory backends'
// Backend::sample_top_k, and the reference the CUDA sampling kernel is tested against, so that
// a seed gives the same text whichever of them draws.
#pragma once

#include <math.h>

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

#if defined(__CUDACC__)
#define BL_HOST_DEVICE __host__ __device__
#else
#define BL_HOST_DEVICE
#endif

// The draw over n candidates already sorted largest first (logit_at(i): the i-th logit): softmax
// at the temperature (float exponentials, a double sum), min-p relative to the first, top-p over
// the sorted list, then d.u placed in the kept mass. probs: scratch of n floats. Returns the
// index of the drawn candidate. One piece of code for the host and the CUDA kernel
// (sample_top_k.cu), so both draw with the same operations in the same order.
template <typename LogitAt>
BL_HOST_DEVICE int draw_sorted(int n, const LogitAt& logit_at, const TopKDraw& d, float* probs) {
  const float max_logit = logit_at(0);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += probs[i] = expf((logit_at(i) - max_logit) / d.temperature);
  for (int i = 0; i < n; ++i) probs[i] = static_cast<float>(probs[i] / sum);
  int keep = n;
  if (d.min_p > 0) {
    const float threshold = d.min_p * probs[0];
    keep = 1;
    while (keep < n && probs[keep] >= threshold) ++keep;
  }
  if (d.top_p < 1) {
    double cumulative = 0;
    int i = 0;
    for (; i < keep; ++i) {
      cumulative += probs[i];
      if (cumulative >= d.top_p) break;
    }
    keep = keep < i + 1 ? keep : i + 1;
  }
  double kept_sum = 0;
  for (int i = 0; i < keep; ++i) kept_sum += probs[i];
  double r = d.u * kept_sum;
  for (int i = 0; i < keep; ++i) {
    r -= probs[i];
    if (r <= 0) return i;
  }
  return keep - 1;
}

// candidates: every token with its (penalised) logit, reordered and shrunk by the call to the
// top k, sorted. probs: scratch. Returns the drawn id.
int32_t draw_from_top_k(std::vector<TokenCandidate>& candidates, const TopKDraw& d,
                        std::vector<float>& probs);

// The same draw from a row of logits [n_vocab].
int32_t draw_from_top_k(std::span<const float> logits, const TopKDraw& d);

}  // namespace bl::cpu
