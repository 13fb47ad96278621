#include "kernels/cpu/top_k_draw.h"

#include <algorithm>

namespace bl::cpu {

int32_t draw_from_top_k(std::vector<TokenCandidate>& candidates, const TopKDraw& d,
                        std::vector<float>& probs) {
  // top-k: keep the k largest (all when 0), sorted descending.
  size_t n = candidates.size();
  if (d.top_k > 0) n = std::min(n, static_cast<size_t>(d.top_k));
  std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(n), candidates.end(),
                    before);
  candidates.resize(n);

  probs.resize(n);
  const int drawn = draw_sorted(static_cast<int>(n), [&](int i) { return candidates[static_cast<size_t>(i)].logit; }, d,
                                probs.data());
  return candidates[static_cast<size_t>(drawn)].id;
}

int32_t draw_from_top_k(std::span<const float> logits, const TopKDraw& d) {
  std::vector<TokenCandidate> candidates(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) candidates[i] = {static_cast<int32_t>(i), logits[i]};
  std::vector<float> probs;
  return draw_from_top_k(candidates, d, probs);
}

}  // namespace bl::cpu
