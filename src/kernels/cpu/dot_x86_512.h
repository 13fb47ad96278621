// 512-bit fp32 dot kernels for F32 / F16 / BF16 weights (16 weights per FMA). Include only
// from files compiled with -mavx512f -mavx512bw.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/cpu/dot_x86_256.h"
#include "kernels/cpu/dot_x86_isa.h"

namespace bl::cpu::x86::inline BL_X86_ISA {

// The 16 lanes folded to 8 (then hsum for the sum): a tree, not 15 dependent adds.
inline __m256 fold512(__m512 v) {
  return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
inline float hsum512(__m512 v) { return hsum(fold512(v)); }

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

// ---- 32-element formats with 512-bit integer dots (Q4_0, Q4_1, Q8_0)
//
// Same two passes as dot_legacy_tile (scales per chunk, then integers), but one block pair
// (64 weights) per zmm register: the activations come in the pair order of
// ActLayout::q8_pairs_scales (j[0:16], j+1[0:16], j[16:32], j+1[16:32]; Q8_0 too), and one
// vpermw puts the weight bytes of blocks j, j+1 in that order straight from the 18 / 20 / 34
// byte blocks (their qs start at an even offset). Per pair and column: one vpdpbusd (or
// maddubs + madd), one convert, one scale permute, one FMA; the weights are unpacked once
// for all columns. With int8x2 (two columns per token) this is ~10 uops per 64 weights,
// against ~22 for the 256-bit kernel.

// 16 int32: sums of 4 products u8 * s8 (no saturation at the magnitudes used here, so both
// forms give identical sums).
template <bool kVnni>
inline __m512i dot_u8s8_512(__m512i u, __m512i s) {
#if defined(__AVX512VNNI__)
  if constexpr (kVnni) return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
#endif
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}

// Word indices that gather the qs bytes of blocks j, j+1 (starting at word `first` of block
// j, block_words apart) in pair order. `half`: which 16 bytes of a 32-byte qs go in lanes 2, 3
// (8 for Q8_0's second half; 0 for nibbles, whose high halves come from shifting lanes 2, 3).
inline __m512i pair_word_index(int first, int block_words, int half) {
  alignas(64) int16_t idx[32];
  for (int lane = 0; lane < 4; ++lane)
    for (int k = 0; k < 8; ++k)
      idx[8 * lane + k] = static_cast<int16_t>(first + (lane & 1) * block_words + (lane >> 1) * half + k);
  return _mm512_load_si512(idx);
}

// d (and m) of 8 consecutive Q4_0 / Q4_1 blocks as fp32, without 16-bit stores and a
// store-forwarding stall: the 8 blocks (144 / 160 bytes) are read as two 64-byte windows
// (Q4_0: bytes [0, 64) and [64, 128), d of block 7 at byte 126; Q4_1: [0, 64) and [80, 144),
// blocks 4-7 in the second), and one vpermt2w picks the fp16 words.
template <Legacy kFmt>
inline void scales8(const void* blk, __m256& dw, __m256& mw) {
  static_assert(kFmt == Legacy::q4_0 || kFmt == Legacy::q4_1);
  constexpr int kWords = kFmt == Legacy::q4_0 ? 9 : 10;
  constexpr int kSecond = kFmt == Legacy::q4_0 ? 32 : 40;  // first word of the second window
  const char* p = static_cast<const char*>(blk);
  const __m512i a = _mm512_loadu_si512(p);
  const __m512i b = _mm512_loadu_si512(p + 2 * kSecond);
  alignas(64) int16_t idx[32] = {};
  for (int j = 0; j < 8; ++j)
    for (int field = 0; field < 2; ++field) {
      const int word = kWords * j + field;
      idx[8 * field + j] = static_cast<int16_t>(word < 32 ? word : 32 + word - kSecond);
    }
  const __m512i words = _mm512_permutex2var_epi16(a, _mm512_load_si512(idx), b);
  dw = _mm256_cvtph_ps(_mm512_castsi512_si128(words));
  if constexpr (kFmt == Legacy::q4_1) mw = _mm256_cvtph_ps(_mm512_extracti32x4_epi32(words, 1));
}

// Pass 1 of dot_legacy_tile_512: legacy_chunk_scales with the d / m of Q4_0 / Q4_1 read by
// scales8.
template <Legacy kFmt, int NC, ActLayout kLayout>
inline void legacy_chunk_scales_512(const typename LegacyBlock<kFmt>::type* blk, int m,
                                    const ActColumns<NC, kLayout>& y, int64_t b0, float (*scale)[kChunkBlocks],
                                    __m256* acc_offset, float* offset_tail) {
  if constexpr (kFmt == Legacy::q8_0) {
    legacy_chunk_scales<kFmt>(blk, 0, m, y, b0, scale, acc_offset, offset_tail);
  } else {
    const int m8 = m / 8 * 8;
    for (int j = 0; j < m8; j += 8) {
      __m256 dw, cw;
      scales8<kFmt>(blk + j, dw, cw);
      if constexpr (kFmt == Legacy::q4_0) cw = _mm256_mul_ps(dw, _mm256_set1_ps(-8.0f));
      for (int c = 0; c < NC; ++c) {
        _mm256_store_ps(scale[c] + j, _mm256_mul_ps(dw, _mm256_loadu_ps(y.d[c] + b0 + j)));
        acc_offset[c] = _mm256_fmadd_ps(cw, _mm256_loadu_ps(y.s[c] + b0 + j), acc_offset[c]);
      }
    }
    if (m8 < m) legacy_chunk_scales<kFmt>(blk, m8, m, y, b0, scale, acc_offset, offset_tail);
  }
}

template <Legacy kFmt, int NC, bool kVnni>
void dot_legacy_tile_512(int64_t cols, const void* w, const void* x, size_t stride, float* out) {
  static_assert(kFmt == Legacy::q4_0 || kFmt == Legacy::q4_1 || kFmt == Legacy::q8_0);
  using Block = typename LegacyBlock<kFmt>::type;
  constexpr bool kQ8 = kFmt == Legacy::q8_0;
  constexpr ActLayout kLayout = ActLayout::q8_pairs_scales;
  constexpr int kBlockWords = static_cast<int>(sizeof(Block)) / 2;          // 9, 10, 17
  constexpr int kFirstWord = (kFmt == Legacy::q4_1 ? 4 : 2) / 2;           // qs after d (, m)
  static_assert(sizeof(Block) % 2 == 0);
  const auto* a = static_cast<const Block*>(w);
  const int64_t nb = cols / kQK;
  const ActColumns<NC, kLayout> y(x, stride, nb);
  auto y_pair = [&](int c, int64_t i) { return reinterpret_cast<const int8_t*>(y.q[c]) + i / 2 * 2 * kQK; };

  // Q8_0: a pair is 68 bytes, read as words [0, 32) and [2, 34) (both inside the pair); the
  // index space of vpermt2w is 64 words, the second register's word k at 32 + k - 2.
  const __m512i widx = [&] {
    if constexpr (!kQ8) return pair_word_index(kFirstWord, kBlockWords, 0);
    alignas(64) int16_t idx[32];
    for (int lane = 0; lane < 4; ++lane)
      for (int k = 0; k < 8; ++k) {
        const int word = kFirstWord + (lane & 1) * kBlockWords + (lane >> 1) * 8 + k;
        idx[8 * lane + k] = static_cast<int16_t>(word < 32 ? word : 32 + word - 2);
      }
    return _mm512_load_si512(idx);
  }();
  const __m512i nibble_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  // Scale of block j in lanes 0-3 and 8-11, of block j+1 in lanes 4-7 and 12-15.
  const __m512i scale_pick = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
  // 18 words of a Q4_0 pair, 20 of Q4_1: a masked load never reads past the pair.
  [[maybe_unused]] constexpr __mmask32 kPairMask = static_cast<__mmask32>((uint64_t{1} << (2 * kBlockWords)) - 1);

  alignas(32) float scale[NC][kChunkBlocks];
  constexpr int kLanes = NC == 1 ? 4 : NC == 2 ? 2 : 1;
  __m512 acc[kLanes][NC];
  __m256 acc_offset[NC], acc_tail[NC];
  float offset_tail[NC] = {};
  for (int c = 0; c < NC; ++c) {
    acc_offset[c] = acc_tail[c] = _mm256_setzero_ps();
    for (int lane = 0; lane < kLanes; ++lane) acc[lane][c] = _mm512_setzero_ps();
  }

  for (int64_t b0 = 0; b0 < nb; b0 += kChunkBlocks) {
    const int m = static_cast<int>(std::min<int64_t>(kChunkBlocks, nb - b0));
    const Block* blk = a + b0;
    legacy_chunk_scales_512<kFmt>(blk, m, y, b0, scale, acc_offset, offset_tail);
    auto pair = [&](int jj, int lane) {
      const Block* p = blk + jj;
      prefetch_weights(p);
      __m512i u;
      __mmask64 negative = 0;
      if constexpr (kQ8) {
        const __m512i lo = _mm512_loadu_si512(p);
        const __m512i hi = _mm512_loadu_si512(reinterpret_cast<const char*>(p) + 4);
        const __m512i t = _mm512_permutex2var_epi16(lo, widx, hi);
        // Signed weights: sum w y = sum |w| * (y negated where w < 0) (|w| <= 127).
        negative = _mm512_movepi8_mask(t);
        u = _mm512_abs_epi8(t);
      } else {
        const __m512i t = _mm512_permutexvar_epi16(widx, _mm512_maskz_loadu_epi16(kPairMask, p));
        u = _mm512_and_si512(_mm512_srlv_epi64(t, nibble_shift), low4);
      }
      for (int c = 0; c < NC; ++c) {
        __m512i yv = _mm512_loadu_si512(y_pair(c, b0 + jj));
        if constexpr (kQ8) yv = _mm512_mask_sub_epi8(yv, negative, _mm512_setzero_si512(), yv);
        const __m512 sums = _mm512_cvtepi32_ps(dot_u8s8_512<kVnni>(u, yv));
        const __m128 two = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(scale[c] + jj)));
        const __m512 sc = _mm512_permutexvar_ps(scale_pick, _mm512_castps128_ps512(two));
        acc[lane][c] = _mm512_fmadd_ps(sc, sums, acc[lane][c]);
      }
    };
    int jj = 0;
    for (; jj + 2 * kLanes <= m; jj += 2 * kLanes)
      for (int lane = 0; lane < kLanes; ++lane) pair(jj + 2 * lane, lane);
    for (; jj + 2 <= m; jj += 2) pair(jj, 0);
    if (jj < m) {  // the unpaired last block of the row, activations in plain order
      const Block& b = blk[jj];
      __m256i u, sign_src;
      if constexpr (kQ8) {
        sign_src = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
        u = _mm256_sign_epi8(sign_src, sign_src);
      } else {
        u = unpack_nibbles(b.qs);
      }
      for (int c = 0; c < NC; ++c) {
        __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y_pair(c, b0 + jj)));
        if constexpr (kQ8) yv = _mm256_sign_epi8(yv, sign_src);
        const __m256 sums = _mm256_cvtepi32_ps(dot_u8s8<kVnni>(u, yv));
        acc_tail[c] = _mm256_fmadd_ps(_mm256_set1_ps(scale[c][jj]), sums, acc_tail[c]);
      }
    }
  }
  for (int c = 0; c < NC; ++c) {
    __m512 total = acc[0][c];
    for (int lane = 1; lane < kLanes; ++lane) total = _mm512_add_ps(total, acc[lane][c]);
    out[c] = hsum(_mm256_add_ps(fold512(total), _mm256_add_ps(acc_tail[c], acc_offset[c]))) + offset_tail[c];
  }
}

template <bool kVnni>
struct Legacy512 {
  template <int NC> struct Q4_0 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_legacy_tile_512<Legacy::q4_0, NC, kVnni>(c, w, x, s, o); } };
  template <int NC> struct Q4_1 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_legacy_tile_512<Legacy::q4_1, NC, kVnni>(c, w, x, s, o); } };
  template <int NC> struct Q8_0 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_legacy_tile_512<Legacy::q8_0, NC, kVnni>(c, w, x, s, o); } };
};

}  // namespace bl::cpu::x86::inline BL_X86_ISA
