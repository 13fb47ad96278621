#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace bl {

Status validate(const SamplerParams& p) {
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) return invalid_argument("temperature must be >= 0");
  if (p.top_k < 0) return invalid_argument("top_k must be >= 0");
  if (!(p.top_p > 0 && p.top_p <= 1)) return invalid_argument("top_p must be in (0, 1]");
  if (!(p.min_p >= 0 && p.min_p < 1)) return invalid_argument("min_p must be in [0, 1)");
  if (!(p.repeat_penalty > 0) || !std::isfinite(p.repeat_penalty)) return invalid_argument("repeat_penalty must be > 0");
  if (p.repeat_last_n < 0) return invalid_argument("repeat_last_n must be >= 0");
  return Status::Ok();
}

TokenId Sampler::sample(std::span<const float> logits, std::span<const TokenId> history) {
  const int n_vocab = static_cast<int>(logits.size());
  candidates_.resize(logits.size());
  for (int i = 0; i < n_vocab; ++i) candidates_[static_cast<size_t>(i)] = {i, logits[static_cast<size_t>(i)]};

  // Repetition penalty as in CTRL / llama.cpp: divide positive logits, multiply negative ones.
  if (params_.repeat_penalty != 1.0f && params_.repeat_last_n > 0) {
    const size_t n_recent = std::min(history.size(), static_cast<size_t>(params_.repeat_last_n));
    for (size_t i = history.size() - n_recent; i < history.size(); ++i) {
      const TokenId id = history[i];
      if (id < 0 || id >= n_vocab) continue;
      // Computed from the original logit, so a token seen several times is penalised once.
      float& l = candidates_[static_cast<size_t>(id)].logit;
      const float original = logits[static_cast<size_t>(id)];
      l = original > 0 ? original / params_.repeat_penalty : original * params_.repeat_penalty;
    }
  }

  auto by_logit = [](const Candidate& a, const Candidate& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); };
  if (params_.temperature == 0.0f)
    return std::min_element(candidates_.begin(), candidates_.end(), by_logit)->id;

  // top-k: keep the k largest (all when 0), sorted descending.
  size_t n = candidates_.size();
  if (params_.top_k > 0) n = std::min(n, static_cast<size_t>(params_.top_k));
  std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(n), candidates_.end(), by_logit);
  candidates_.resize(n);

  // Softmax at the temperature.
  probs_.resize(n);
  const float max_logit = candidates_[0].logit;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += probs_[i] = std::exp((candidates_[i].logit - max_logit) / params_.temperature);
  for (size_t i = 0; i < n; ++i) probs_[i] = static_cast<float>(probs_[i] / sum);

  // min-p relative to the most likely token, then top-p over the sorted list.
  size_t keep = n;
  if (params_.min_p > 0) {
    const float threshold = params_.min_p * probs_[0];
    keep = 1;
    while (keep < n && probs_[keep] >= threshold) ++keep;
  }
  if (params_.top_p < 1) {
    double cumulative = 0;
    size_t i = 0;
    for (; i < keep; ++i) {
      cumulative += probs_[i];
      if (cumulative >= params_.top_p) break;
    }
    keep = std::min(keep, i + 1);
  }

  double kept_sum = 0;
  for (size_t i = 0; i < keep; ++i) kept_sum += probs_[i];
  std::uniform_real_distribution<double> uniform(0.0, kept_sum);
  double r = uniform(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= probs_[i];
    if (r <= 0) return candidates_[i].id;
  }
  return candidates_[keep - 1].id;
}

}  // namespace bl
