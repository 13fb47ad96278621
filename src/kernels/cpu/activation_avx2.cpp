// silu_mul and gelu_mul with AVX2 + FMA: 8 floats per step, vector exp (elementwise_simd.h).
#include "kernels/cpu/activation.h"
#include "kernels/cpu/elementwise_simd.h"

namespace bl::cpu {

void silu_mul_avx2(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = simd::exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  if (i < n) silu_mul_scalar(gate + i, up + i, out + i, n - i);
}

void gelu_mul_avx2(const float* gate, const float* up, float* out, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 exp_factor = _mm256_set1_ps(kGeluExpFactor), cubic = _mm256_set1_ps(kGeluCubic);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 inner = _mm256_fmadd_ps(_mm256_mul_ps(cubic, g), _mm256_mul_ps(g, g), g);  // g + c g^3
    const __m256 e = simd::exp_avx2(_mm256_mul_ps(exp_factor, inner));
    const __m256 gelu = _mm256_div_ps(g, _mm256_add_ps(one, e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(gelu, _mm256_loadu_ps(up + i)));
  }
  if (i < n) gelu_mul_scalar(gate + i, up + i, out + i, n - i);
}

}  // namespace bl::cpu
