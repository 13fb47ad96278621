#include "kernels/cpu/argmax.h"

#include "kernels/cpu/cpu_features.h"

namespace bl::cpu {

RangeMax argmax_range_scalar(const float* row, int64_t begin, int64_t end) {
  // Lane l sees elements l, l + 16, ... of a piece: its largest value and the first offset
  // holding it (a NaN never compares greater, so it is never taken; nor is -inf).
  return argmax_by_pieces(row, begin, end, [](const float* x, int32_t n, int64_t p0) {
    constexpr int kLanes = 16;
    float best[kLanes];
    int32_t at[kLanes];
    for (int l = 0; l < kLanes; ++l) best[l] = -INFINITY, at[l] = -1;
    int32_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
      for (int l = 0; l < kLanes; ++l) {
        const bool greater = x[i + l] > best[l];
        best[l] = greater ? x[i + l] : best[l];
        at[l] = greater ? i + l : at[l];
      }
    for (int l = 0; i + l < n; ++l)
      if (x[i + l] > best[l]) best[l] = x[i + l], at[l] = i + l;
    return fold_lanes(best, at, kLanes, p0, x, n);
  });
}

RangeMax argmax_range(const float* row, int64_t begin, int64_t end) {
  if (active_isa() == Isa::avx512) return argmax_range_avx512(row, begin, end);
  if (active_isa() == Isa::avx2) return argmax_range_avx2(row, begin, end);
  return argmax_range_scalar(row, begin, end);
}

}  // namespace bl::cpu
