#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
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

cpu::TopKDraw top_k_draw(const SamplerParams& p, double u) {
  return {.temperature = p.temperature, .top_k = p.top_k, .top_p = p.top_p, .min_p = p.min_p, .u = u};
}

double Sampler::next_uniform() {
  // What std::uniform_real_distribution<double>(0, b) draws before scaling by b (libstdc++), so
  // texts of a seed stay those the sampler gave before the draw moved to kernels/cpu.
  return std::generate_canonical<double, std::numeric_limits<double>::digits>(rng_);
}

TokenId Sampler::sample(std::span<const float> logits, std::span<const TokenId> history) {
  const int n_vocab = static_cast<int>(logits.size());
  candidates_.resize(logits.size());
  for (int i = 0; i < n_vocab; ++i) candidates_[static_cast<size_t>(i)] = {i, logits[static_cast<size_t>(i)]};

  // Repetition penalty as in CTRL / llama.cpp: divide positive logits, multiply negative ones.
  if (applies_repeat_penalty(params_)) {
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

  if (params_.temperature == 0.0f)
    return std::min_element(candidates_.begin(), candidates_.end(), cpu::before)->id;
  return cpu::draw_from_top_k(candidates_, top_k_draw(params_, next_uniform()), probs_);
}

}  // namespace bl
