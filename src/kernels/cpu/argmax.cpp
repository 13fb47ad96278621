#include "kernels/cpu/argmax.h"

#include "kernels/cpu/cpu_features.h"

namespace bl::cpu {

RangeMax argmax_range_scalar(const float* row, int64_t begin, int64_t end) {
  // Lane l sees elements begin + l, begin + l + 16, ...: its largest value and the first offset
  // holding it (a NaN never compares greater, so it is never taken; nor is -inf). Offsets are
  // int32, as wide as the values, so one compare mask can select both; a range is taken 2^30
  // elements at a time.
  constexpr int kLanes = 16;
  constexpr int64_t kPiece = int64_t{1} << 30;
  RangeMax m;
  for (int64_t p0 = begin; p0 < end; p0 += kPiece) {
    const float* x = row + p0;
    const int32_t n = static_cast<int32_t>(end - p0 < kPiece ? end - p0 : kPiece);
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
    m = later_range(m, fold_lanes(best, at, kLanes, p0, x, n));
  }
  return m;
}

RangeMax argmax_range(const float* row, int64_t begin, int64_t end) {
  if (active_isa() == Isa::avx512) return argmax_range_avx512(row, begin, end);
  if (active_isa() == Isa::avx2) return argmax_range_avx2(row, begin, end);
  return argmax_range_scalar(row, begin, end);
}

}  // namespace bl::cpu
