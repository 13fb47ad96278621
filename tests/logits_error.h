// How far one run's logits are from another's, for the whole-model tests (CPU and GPU).
#pragma once

#include <algorithm>
#include <cmath>
#include <span>

namespace bl {

// max |got - want| / max |want| over want.size() values; infinity when got has a NaN or inf.
// An all-zero reference gives NaN (or infinity), which no bound accepts: logits are never all 0.
inline double relative_max_error(std::span<const float> got, std::span<const float> want) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    max_diff = std::max(max_diff, std::fabs(static_cast<double>(got[i]) - want[i]));
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(want[i])));
  }
  return max_diff / max_ref;
}

// sqrt(sum (got - want)^2 / sum want^2); infinity when got has a NaN or inf.
inline double relative_rms(std::span<const float> got, std::span<const float> want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return std::sqrt(num / den);
}

}  // namespace bl
