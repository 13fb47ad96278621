// The index of a row's largest value, for greedy decoding on the host.
#pragma once

#include <cmath>
#include <cstdint>

namespace bl::cpu {

// The largest non-NaN value of a range and the first index holding it; index -1 when the range
// holds only NaN (or nothing).
struct RangeMax {
  int64_t index = -1;
  float value = -INFINITY;
};

// RangeMax of row[begin, end), in one pass of independent lanes: 128k logits in ~10 us
// (AVX-512) / ~18 us (AVX2 on Zen 3; the portable loop 80 us there) / ~40 us (the portable
// loop on the Xeon dev box), where the compare chain of a plain loop took ~200 us
// a token on the dev box. Picks the widest ISA the CPU (and BITLIGHT_ISA) allows; the variants
// are exposed for the tests, an _avx2 / _avx512 one to be called only where the CPU has it.
RangeMax argmax_range(const float* row, int64_t begin, int64_t end);
RangeMax argmax_range_scalar(const float* row, int64_t begin, int64_t end);
RangeMax argmax_range_avx2(const float* row, int64_t begin, int64_t end);
RangeMax argmax_range_avx512(const float* row, int64_t begin, int64_t end);

// Folds `next`, a range after those `so_far` covers, in: the earlier index wins a tie. (static:
// this header is also compiled with AVX-512 flags, and the linker must not pick that build.)
static inline RangeMax later_range(RangeMax so_far, RangeMax next) {
  return next.index >= 0 && (so_far.index < 0 || next.value > so_far.value) ? next : so_far;
}

// The RangeMax of x[0, n) at offset p0 from its lanes' results (each lane's largest value and
// the first offset holding it, -1 for none): the largest value, at the lowest offset among ties;
// when no lane took a value (nothing above -inf), the first -inf. Both levels end with this.
static inline RangeMax fold_lanes(const float* best, const int32_t* at, int lanes, int64_t p0, const float* x,
                                  int32_t n) {
  RangeMax m;
  for (int l = 0; l < lanes; ++l)
    if (at[l] >= 0 && (m.index < 0 || best[l] > m.value || (best[l] == m.value && p0 + at[l] < m.index)))
      m = {p0 + at[l], best[l]};
  for (int32_t j = 0; m.index < 0 && j < n; ++j)
    if (!std::isnan(x[j])) m = {p0 + j, x[j]};
  return m;
}

// The RangeMax of row[begin, end) from piece_max(x, n, p0), the RangeMax of the piece x =
// row + p0 of n values, over pieces of at most 2^30 values: every level keeps its lanes' offsets
// in int32, as wide as the values, so that one compare mask selects both.
template <class PieceMax>
static inline RangeMax argmax_by_pieces(const float* row, int64_t begin, int64_t end, PieceMax piece_max) {
  constexpr int64_t kPiece = int64_t{1} << 30;
  RangeMax m;
  for (int64_t p0 = begin; p0 < end; p0 += kPiece)
    m = later_range(m, piece_max(row + p0, static_cast<int32_t>(end - p0 < kPiece ? end - p0 : kPiece), p0));
  return m;
}

// What Backend::argmax defines for one row: the first index of the largest non-NaN value, 0
// when every value is NaN.
static inline int64_t argmax_row(const float* row, int64_t n) {
  const RangeMax m = argmax_range(row, 0, n);
  return m.index < 0 ? 0 : m.index;
}

}  // namespace bl::cpu
