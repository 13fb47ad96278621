// 512-bit fp32 dot kernels for F32 / F16 / BF16 weights (16 weights per FMA). Include only
// from files compiled with -mavx512f -mavx512bw.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/dot_x86_256.h"

namespace bl::cpu::x86 {

// Sum of the 16 lanes, once per dot product (_mm512_reduce_add_ps would do the same).
inline float hsum512(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0;
  for (float f : lanes) s += f;
  return s;
}

template <Flt kFmt>
inline __m512 load16(const void* w, int64_t k) {
  if constexpr (kFmt == Flt::f32) {
    return _mm512_loadu_ps(static_cast<const float*>(w) + k);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + k));
    if constexpr (kFmt == Flt::f16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// Two accumulators per column, 32 weights per iteration; 256-bit and scalar tails.
template <Flt kFmt, int NC>
void dot_float_tile_512(int64_t cols, const void* w, const void* x, size_t stride, float* out) {
  const float* y[NC];
  for (int c = 0; c < NC; ++c) y[c] = column<float>(x, stride, c);
  __m512 acc0[NC], acc1[NC];
  for (int c = 0; c < NC; ++c) acc0[c] = acc1[c] = _mm512_setzero_ps();
  int64_t k = 0;
  constexpr int64_t kElemBytes = kFmt == Flt::f32 ? 4 : 2;
  for (; k + 32 <= cols; k += 32) {
    prefetch_weights(static_cast<const char*>(w) + k * kElemBytes);
    if constexpr (kElemBytes == 4) prefetch_weights(static_cast<const char*>(w) + k * kElemBytes + 64);
    const __m512 w0 = load16<kFmt>(w, k), w1 = load16<kFmt>(w, k + 16);
    for (int c = 0; c < NC; ++c) {
      acc0[c] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(y[c] + k), acc0[c]);
      acc1[c] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(y[c] + k + 16), acc1[c]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    float s = hsum512(_mm512_add_ps(acc0[c], acc1[c]));
    __m256 acc8 = _mm256_setzero_ps();
    int64_t t = k;
    for (; t + 8 <= cols; t += 8) acc8 = _mm256_fmadd_ps(load8<kFmt>(w, t), _mm256_loadu_ps(y[c] + t), acc8);
    s += hsum(acc8);
    for (; t < cols; ++t) s += load1<kFmt>(w, t) * y[c][t];
    out[c] = s;
  }
}

struct Kernels512 {
  template <int NC> struct F32 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_float_tile_512<Flt::f32, NC>(c, w, x, s, o); } };
  template <int NC> struct F16 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_float_tile_512<Flt::f16, NC>(c, w, x, s, o); } };
  template <int NC> struct BF16 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_float_tile_512<Flt::bf16, NC>(c, w, x, s, o); } };
};

}  // namespace bl::cpu::x86
