#include "kernels/cpu/top_k_draw.h"

#include <algorithm>
#include <cmath>

namespace bl::cpu {

int32_t draw_from_top_k(std::vector<TokenCandidate>& candidates, const TopKDraw& d,
                        std::vector<float>& probs) {
  // top-k: keep the k largest (all when 0), sorted descending.
  size_t n = candidates.size();
  if (d.top_k > 0) n = std::min(n, static_cast<size_t>(d.top_k));
  std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(n), candidates.end(),
                    before);
  candidates.resize(n);

  // Softmax at the temperature: float exponentials, a double sum.
  probs.resize(n);
  const float max_logit = candidates[0].logit;
  double sum = 0;
  for (size_t i = 0; i < n; ++i)
    sum += probs[i] = std::exp((candidates[i].logit - max_logit) / d.temperature);
  for (size_t i = 0; i < n; ++i) probs[i] = static_cast<float>(probs[i] / sum);

  // min-p relative to the most likely token, then top-p over the sorted list.
  size_t keep = n;
  if (d.min_p > 0) {
    const float threshold = d.min_p * probs[0];
    keep = 1;
    while (keep < n && probs[keep] >= threshold) ++keep;
  }
  if (d.top_p < 1) {
    double cumulative = 0;
    size_t i = 0;
    for (; i < keep; ++i) {
      cumulative += probs[i];
      if (cumulative >= d.top_p) break;
    }
    keep = std::min(keep, i + 1);
  }

  double kept_sum = 0;
  for (size_t i = 0; i < keep; ++i) kept_sum += probs[i];
  double r = d.u * kept_sum;
  for (size_t i = 0; i < keep; ++i) {
    r -= probs[i];
    if (r <= 0) return candidates[i].id;
  }
  return candidates[keep - 1].id;
}

int32_t draw_from_top_k(std::span<const float> logits, const TopKDraw& d) {
  std::vector<TokenCandidate> candidates(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) candidates[i] = {static_cast<int32_t>(i), logits[i]};
  std::vector<float> probs;
  return draw_from_top_k(candidates, d, probs);
}

}  // namespace bl::cpu
