#include "kernels/cpu/rms_norm.h"

#include <cmath>

namespace bl::cpu {

double sum_of_squares(const float* x, int64_t d) {
  // 16 independent partial sums: the compiler vectorises them (a single float accumulator
  // would be a serial dependency chain, as IEEE addition is not reassociated), and the sum of
  // squares keeps ~1e-7 relative accuracy for any d a model uses.
  constexpr int kLanes = 16;
  float partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= d; i += kLanes)
    for (int l = 0; l < kLanes; ++l) partial[l] += x[i + l] * x[i + l];
  double sum_sq = 0.0;
  for (; i < d; ++i) sum_sq += static_cast<double>(x[i]) * x[i];
  for (float p : partial) sum_sq += p;
  return sum_sq;
}

void rms_norm_row(const float* x, const float* weight, float eps, float* out, int64_t d) {
  const float inv_rms = static_cast<float>(1.0 / std::sqrt(sum_of_squares(x, d) / static_cast<double>(d) + eps));
  for (int64_t j = 0; j < d; ++j) out[j] = x[j] * inv_rms * weight[j];
}

}  // namespace bl::cpu
