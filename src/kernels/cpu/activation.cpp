#include "kernels/cpu/activation.h"

#include <cmath>

#include "kernels/cpu/cpu_features.h"

namespace bl::cpu {

void silu_mul_scalar(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  switch (active_isa()) {
    case Isa::avx512: return silu_mul_avx512(gate, up, out, n);
    case Isa::avx2: return silu_mul_avx2(gate, up, out, n);
    case Isa::scalar: break;
  }
  silu_mul_scalar(gate, up, out, n);
}

void gelu_mul_scalar(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(kGeluExpFactor * (g + kGeluCubic * g * g * g))) * up[i];
  }
}

void gelu_mul(const float* gate, const float* up, float* out, int64_t n) {
  switch (active_isa()) {
    case Isa::avx512: return gelu_mul_avx512(gate, up, out, n);
    case Isa::avx2: return gelu_mul_avx2(gate, up, out, n);
    case Isa::scalar: break;
  }
  gelu_mul_scalar(gate, up, out, n);
}

}  // namespace bl::cpu
