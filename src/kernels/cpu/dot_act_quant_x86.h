// AVX2 activation quantizer to Q8_0 (32 fp32 -> 32 int8 + fp16 scale per block) with fp32
// side arrays of the scales and scaled sums.
// Rounding is to nearest-even (vroundps) where the reference rounds halves away from zero;
// the two differ only on exact ties, well inside the matmul tolerance. Include only from
// files compiled with -mavx2 -mf16c.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/dot_x86_isa.h"
#include "quant/blocks.h"

namespace bl::cpu::x86::inline BL_X86_ISA {

// Quantizes one block of 32 floats; returns the int8 sum (for Q8_1's s) through *sum.
inline void quantize_block_q8(const float* x, uint16_t* d_out, int8_t* qs, int* sum) {
  __m256 v[4];
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  __m256 amax = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(x + 8 * k);
    amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign_bit, v[k]));
  }
  __m128 m4 = _mm_max_ps(_mm256_extractf128_ps(amax, 1), _mm256_castps256_ps128(amax));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  const float max_scalar = _mm_cvtss_f32(m4);
  const float d = max_scalar / 127.f;
  *d_out = static_cast<uint16_t>(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
  const __m256 id = _mm256_set1_ps(max_scalar != 0.0f ? 127.f / max_scalar : 0.0f);
  __m256i i32[4];
  for (int k = 0; k < 4; ++k)
    i32[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], id), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  if (sum) {
    const __m256i s = _mm256_add_epi32(_mm256_add_epi32(i32[0], i32[1]), _mm256_add_epi32(i32[2], i32[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_hadd_epi32(s4, s4);
    s4 = _mm_hadd_epi32(s4, s4);
    *sum = _mm_cvtsi128_si32(s4);
  }
  // Pack 32 int32 -> 32 int8; packs work within 128-bit lanes, so restore the order after.
  const __m256i p01 = _mm256_packs_epi32(i32[0], i32[1]);
  const __m256i p23 = _mm256_packs_epi32(i32[2], i32[3]);
  const __m256i p = _mm256_packs_epi16(p01, p23);
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), _mm256_permutevar8x32_epi32(p, order));
}

// Q8_0 blocks plus fp32 d[] and s[] = d * sum(q) (layout: dot_kernels.h, act_scales_offset).
inline void quantize_q8_0_scales_avx2(const float* x, void* dst, int64_t n) {
  const int64_t nb = n / kQK;
  auto* y = static_cast<BlockQ8_0*>(dst);
  auto* d = reinterpret_cast<float*>(static_cast<char*>(dst) + act_scales_offset(ActLayout::q8_0_scales, nb));
  float* s = d + nb;
  for (int64_t i = 0; i < nb; ++i) {
    int sum = 0;
    quantize_block_q8(x + i * kQK, &y[i].d, y[i].qs, &sum);
    d[i] = _cvtsh_ss(y[i].d);  // exactly the scale the integer sums are multiplied with
    s[i] = d[i] * static_cast<float>(sum);
  }
}

// Q8_K blocks (256 fp32 -> int8 with an fp32 scale, plus sums of 16) as quantize_q8_k: the
// element of largest magnitude maps to -127 exactly, the rest round to nearest even.
inline void quantize_q8_k_avx2(const float* x, void* dst, int64_t n) {
  auto* y = static_cast<BlockQ8_K*>(dst);
  for (int64_t i = 0; i < n / kQKK; ++i, x += kQKK) {
    __m256 vmax = _mm256_set1_ps(-INFINITY), vmin = _mm256_set1_ps(INFINITY);
    for (int k = 0; k < kQKK; k += 8) {
      const __m256 v = _mm256_loadu_ps(x + k);
      vmax = _mm256_max_ps(vmax, v);
      vmin = _mm256_min_ps(vmin, v);
    }
    alignas(32) float hi[8], lo[8];
    _mm256_store_ps(hi, vmax);
    _mm256_store_ps(lo, vmin);
    float mx = hi[0], mn = lo[0];
    for (int k = 1; k < 8; ++k) {
      mx = std::max(mx, hi[k]);
      mn = std::min(mn, lo[k]);
    }
    const float max = mx >= -mn ? mx : mn;  // signed value of largest magnitude
    if (max == 0.0f) {
      std::memset(&y[i], 0, sizeof(y[i]));
      continue;
    }
    const float iscale = -127.f / max;
    const __m256 vs = _mm256_set1_ps(iscale);
    for (int g = 0; g < kQKK / 16; ++g) {
      const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + 16 * g)));
      const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(vs, _mm256_loadu_ps(x + 16 * g + 8)));
      // 16 int32 -> 16 int8 (saturating, so +128 from rounding becomes 127 as in the reference)
      const __m128i a16 = _mm_packs_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
      const __m128i b16 = _mm_packs_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y[i].qs + 16 * g), _mm_packs_epi16(a16, b16));
      __m128i s = _mm_add_epi32(_mm_madd_epi16(a16, _mm_set1_epi16(1)), _mm_madd_epi16(b16, _mm_set1_epi16(1)));
      s = _mm_hadd_epi32(s, s);
      s = _mm_hadd_epi32(s, s);
      y[i].bsums[g] = static_cast<int16_t>(_mm_cvtsi128_si32(s));
    }
    y[i].d = 1 / iscale;
  }
}

// int8 data in block pairs plus fp32 d[] and s[] (ActLayout::q8_pairs_scales).
inline void quantize_q8_pairs_avx2(const float* x, void* dst, int64_t n) {
  const int64_t nb = n / kQK;
  auto* q = static_cast<int8_t*>(dst);
  auto* d = reinterpret_cast<float*>(static_cast<char*>(dst) + act_scales_offset(ActLayout::q8_pairs_scales, nb));
  float* s = d + nb;
  for (int64_t i = 0; i < nb; ++i) {
    int sum = 0;
    uint16_t d_half;
    alignas(32) int8_t block[kQK];
    quantize_block_q8(x + i * kQK, &d_half, block, &sum);
    d[i] = _cvtsh_ss(d_half);
    s[i] = d[i] * static_cast<float>(sum);
    int8_t* pair = q + (i / 2) * 2 * kQK;
    if (i % 2 == 0 && i + 1 == nb) {  // unpaired last block: plain order
      std::memcpy(pair, block, kQK);
    } else {
      const int half = static_cast<int>(i % 2) * 16;
      std::memcpy(pair + half, block, 16);
      std::memcpy(pair + 32 + half, block + 16, 16);
    }
  }
}

// Inverse of quantize_q8_pairs_avx2 (for tests): x[k] = d[b] * q[b][k].
inline void dequantize_q8_pairs(const void* column, float* x, int64_t n) {
  const int64_t nb = n / kQK;
  const auto* q = static_cast<const int8_t*>(column);
  const auto* d = reinterpret_cast<const float*>(static_cast<const char*>(column) +
                                                 act_scales_offset(ActLayout::q8_pairs_scales, nb));
  for (int64_t i = 0; i < nb; ++i) {
    const int8_t* pair = q + (i / 2) * 2 * kQK;
    for (int k = 0; k < kQK; ++k) {
      int8_t v;
      if (i % 2 == 0 && i + 1 == nb) v = pair[k];
      else v = pair[(k < 16 ? 0 : 32) + static_cast<int>(i % 2) * 16 + k % 16];
      x[i * kQK + k] = d[i] * static_cast<float>(v);
    }
  }
}

// Q8_0 blocks back to fp32 for the q8_0_scales layout (its d[] equals the blocks' fp16 d).
inline void dequantize_q8_0_scales(const void* column, float* x, int64_t n) {
  const auto* b = static_cast<const BlockQ8_0*>(column);
  for (int64_t i = 0; i < n / kQK; ++i)
    for (int k = 0; k < kQK; ++k) x[i * kQK + k] = _cvtsh_ss(b[i].d) * static_cast<float>(b[i].qs[k]);
}

}  // namespace bl::cpu::x86::inline BL_X86_ISA
