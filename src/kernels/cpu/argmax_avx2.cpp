// AVX2 level of argmax_range (argmax.h): 4 x 8 lanes, the value and its offset blended in where
// the compare says greater (ordered: a NaN never is); the last n % 32 values one by one into
// the same lanes, in order, so each lane keeps the first offset of its largest.
#include <immintrin.h>

#include "kernels/cpu/argmax.h"

namespace bl::cpu {

RangeMax argmax_range_avx2(const float* row, int64_t begin, int64_t end) {
  return argmax_by_pieces(row, begin, end, [](const float* x, int32_t n, int64_t p0) {
    constexpr int kAcc = 4, kLanes = 8;
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 best[kAcc];
    __m256i at[kAcc];
    for (int a = 0; a < kAcc; ++a) best[a] = _mm256_set1_ps(-INFINITY), at[a] = _mm256_set1_epi32(-1);
    int32_t i = 0;
    for (; i + kAcc * kLanes <= n; i += kAcc * kLanes)
      for (int a = 0; a < kAcc; ++a) {
        const __m256 v = _mm256_loadu_ps(x + i + kLanes * a);
        const __m256 greater = _mm256_cmp_ps(v, best[a], _CMP_GT_OQ);
        best[a] = _mm256_blendv_ps(best[a], v, greater);
        at[a] = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(at[a]), _mm256_castsi256_ps(_mm256_add_epi32(lane, _mm256_set1_epi32(i + kLanes * a))),
            greater));
      }
    alignas(32) float bv[kAcc * kLanes];
    alignas(32) int32_t av[kAcc * kLanes];
    for (int a = 0; a < kAcc; ++a)
      _mm256_store_ps(bv + kLanes * a, best[a]), _mm256_store_si256(reinterpret_cast<__m256i*>(av + kLanes * a), at[a]);
    for (int l = 0; i + l < n; ++l)  // fewer than 32 left: offset i + l into lane l of the 32
      if (x[i + l] > bv[l]) bv[l] = x[i + l], av[l] = i + l;
    return fold_lanes(bv, av, kAcc * kLanes, p0, x, n);
  });
}

}  // namespace bl::cpu
