// RMS normalisation (Llama family).
#pragma once

#include <cstdint>

namespace bl::cpu {

// One row of d floats: out = x / sqrt(mean(x²) + eps) * weight. out may alias x.
void rms_norm_row(const float* x, const float* weight, float eps, float* out, int64_t d);

// The sum of x² over d floats as rms_norm_row takes it: 16 fp32 partial sums, then in fp64.
double sum_of_squares(const float* x, int64_t d);

}  // namespace bl::cpu
