// AVX-512 level of argmax_range (argmax.h): 4 x 16 lanes, a masked move of the value and of
// its offset where the compare says greater (ordered: a NaN never is).
#include <immintrin.h>

#include "kernels/cpu/argmax.h"

namespace bl::cpu {

RangeMax argmax_range_avx512(const float* row, int64_t begin, int64_t end) {
  return argmax_by_pieces(row, begin, end, [](const float* x, int32_t n, int64_t p0) {
    constexpr int kAcc = 4, kLanes = 16;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512 best[kAcc];
    __m512i at[kAcc];
    for (int a = 0; a < kAcc; ++a) best[a] = _mm512_set1_ps(-INFINITY), at[a] = _mm512_set1_epi32(-1);
    int32_t i = 0;
    for (; i + kAcc * kLanes <= n; i += kAcc * kLanes)
      for (int a = 0; a < kAcc; ++a) {
        const __m512 v = _mm512_loadu_ps(x + i + kLanes * a);
        const __mmask16 greater = _mm512_cmp_ps_mask(v, best[a], _CMP_GT_OQ);
        best[a] = _mm512_mask_mov_ps(best[a], greater, v);
        at[a] = _mm512_mask_mov_epi32(at[a], greater, _mm512_add_epi32(lane, _mm512_set1_epi32(i + kLanes * a)));
      }
    for (; i < n; i += kLanes) {  // the rest, 16 at a time under a mask, into accumulator 0
      const __mmask16 valid = n - i >= kLanes ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (n - i)) - 1);
      const __m512 v = _mm512_maskz_loadu_ps(valid, x + i);
      const __mmask16 greater = _mm512_mask_cmp_ps_mask(valid, v, best[0], _CMP_GT_OQ);
      best[0] = _mm512_mask_mov_ps(best[0], greater, v);
      at[0] = _mm512_mask_mov_epi32(at[0], greater, _mm512_add_epi32(lane, _mm512_set1_epi32(i)));
    }
    alignas(64) float bv[kAcc * kLanes];
    alignas(64) int32_t av[kAcc * kLanes];
    for (int a = 0; a < kAcc; ++a) _mm512_store_ps(bv + kLanes * a, best[a]), _mm512_store_si512(av + kLanes * a, at[a]);
    return fold_lanes(bv, av, kAcc * kLanes, p0, x, n);
  });
}

}  // namespace bl::cpu
