#include "kernels/cpu/rope.h"

#include <algorithm>
#include <cmath>
#include <iterator>

namespace bl::cpu {

void RopeTable::update(const RopeConfig& config, const int32_t* positions, int64_t n_tokens) {
  // The factors by value: the same pointer may hold other values later (a freed vector's memory).
  const bool same_factors = config.freq_factors
                                ? std::ssize(factors_) == config.n_dims / 2 &&
                                      std::equal(factors_.begin(), factors_.end(), config.freq_factors)
                                : factors_.empty();
  const bool same_config = valid_ && config == config_ && same_factors;
  if (same_config && static_cast<int64_t>(positions_.size()) == n_tokens &&
      std::equal(positions_.begin(), positions_.end(), positions))
    return;
  if (!same_config) {
    config_ = config;
    pairs_ = config.n_dims / 2;
    inv_freq_.resize(static_cast<size_t>(pairs_));
    factors_.assign(config.freq_factors, config.freq_factors ? config.freq_factors + pairs_ : nullptr);
    for (int i = 0; i < pairs_; ++i) {
      double f = std::pow(static_cast<double>(config.freq_base), -2.0 * i / config.n_dims);
      if (config.freq_factors) f /= config.freq_factors[i];
      inv_freq_[i] = f;
    }
  }
  valid_ = true;
  positions_.assign(positions, positions + n_tokens);
  cos_.resize(static_cast<size_t>(n_tokens * pairs_));
  sin_.resize(static_cast<size_t>(n_tokens * pairs_));
  for (int64_t t = 0; t < n_tokens; ++t) {
    const double pos = static_cast<double>(positions[t]) * config.freq_scale;
    for (int i = 0; i < pairs_; ++i) {
      const double theta = pos * inv_freq_[i];
      cos_[t * pairs_ + i] = static_cast<float>(std::cos(theta));
      sin_[t * pairs_ + i] = static_cast<float>(std::sin(theta));
    }
  }
}

void rope(float* x, int64_t head_dim, int64_t n_heads, bool neox, const RopeTable& table, int64_t t_begin,
          int64_t t_end) {
  const int pairs = table.pairs();
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* c = table.cos_row(t);
    const float* s = table.sin_row(t);
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + (t * n_heads + h) * head_dim;
      if (neox) {
        float* lo = v;
        float* hi = v + pairs;
        for (int i = 0; i < pairs; ++i) {
          const float x0 = lo[i], x1 = hi[i];
          lo[i] = x0 * c[i] - x1 * s[i];
          hi[i] = x0 * s[i] + x1 * c[i];
        }
      } else {
        for (int i = 0; i < pairs; ++i) {
          const float x0 = v[2 * i], x1 = v[2 * i + 1];
          v[2 * i] = x0 * c[i] - x1 * s[i];
          v[2 * i + 1] = x0 * s[i] + x1 * c[i];
        }
      }
    }
  }
}

}  // namespace bl::cpu
