// 256-bit x86 dot kernels, shared by the AVX2 level (dot_avx2.cpp) and the AVX-512 level
// (dot_avx512.cpp, compiled with AVX-512 so it gets EVEX encodings and 32 registers; kVnni
// selects AVX512-VNNI vpdpbusd on ymm registers). Include only from files compiled with at
// least -mavx2 -mfma -mf16c.
//
// Each kernel is a template over NC, the number of activation columns (1..kMaxDotCols): the
// weight block is loaded and unpacked once, then multiplied with NC columns, so prefill
// decodes each weight once per tile of tokens. Integer sums are formed per block and scaled
// by d_w * d_x in fp32, as in ggml.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/dot_x86_isa.h"
#include "quant/blocks.h"

namespace bl::cpu::x86::inline BL_X86_ISA {

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float fp16(uint16_t h) { return _cvtsh_ss(h); }

// Software prefetch of the weight stream, this far ahead (bytes), into L2 (T1): the L2 miss
// queue keeps more lines in flight than L1's fill buffers, and the integer kernels leave too
// few cycles for the hardware prefetcher alone. Measured on the H100 host's Xeon, 2 threads,
// ffn_gate_up decode: Q4_0 11.9-13.7 -> 15.1-15.9 GB/s, Q8_0 15.6-16.2 -> 16.9-19.1 GB/s
// against 1 KiB / T0; 8 KiB or T2 were no better. Rows are contiguous, so running past a
// row's end fetches the next one; prefetches never fault.
constexpr int kPrefetchBytes = 4096;
inline void prefetch_weights(const void* p) {
  _mm_prefetch(static_cast<const char*>(p) + kPrefetchBytes, _MM_HINT_T1);
}
// The same for every 64-byte line of a block of kBytes (K-quant super-blocks span 2-4 lines;
// one prefetch a block left the rest to the hardware prefetcher, and Q6_K decode from DRAM ran
// at ~40 % of the read bandwidth).
template <size_t kBytes>
inline void prefetch_weight_block(const void* p) {
  const char* ahead = static_cast<const char*>(p) + kPrefetchBytes;
  for (size_t at = 0; at < kBytes; at += 64) _mm_prefetch(ahead + at, _MM_HINT_T1);
  _mm_prefetch(ahead + kBytes - 1, _MM_HINT_T1);  // the last line, where the block ends inside it
}

// 8 int32: sums of 4 products u8 * s8 each (u < 128 or products small enough that the
// pairwise int16 sums of maddubs cannot saturate: true for every caller here).
template <bool kVnni>
inline __m256i dot_u8s8(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  if constexpr (kVnni) return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#endif
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// 0xFF in byte j where bit j of the 32-bit mask is set (the fifth bits of Q5_0 / Q5_1).
inline __m256i bytes_from_bits(uint32_t bits) {
  const __m256i shuffle = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
  const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), shuffle);
  const __m256i others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);  // every bit but "its own"
  return _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1));
}
inline __m256i bytes_from_bits(const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, sizeof(bits));
  return bytes_from_bits(bits);
}

// dot_u8s8(a, x) + dot_u8s8(b, y) (pairwise int16 sums stay below 2 * 2 * 31 * 127).
template <bool kVnni>
inline __m256i dot2_u8s8(__m256i a, __m256i x, __m256i b, __m256i y) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  if constexpr (kVnni) return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), a, x), b, y);
#endif
  const __m256i p16 = _mm256_add_epi16(_mm256_maddubs_epi16(a, x), _mm256_maddubs_epi16(b, y));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

template <typename XBlock>
inline const XBlock* column(const void* x, size_t stride, int c) {
  return reinterpret_cast<const XBlock*>(static_cast<const char*>(x) + stride * c);
}

// ---- 32-element formats against Q8_0 blocks with fp32 side arrays d[] and s[] = d * sum(q)

template <int NC, ActLayout kLayout = ActLayout::q8_0_scales>
struct ActColumns {
  const BlockQ8_0* q[NC];  // for q8_pairs_scales: the int8 data, see ActLayout
  const float* d[NC];
  const float* s[NC];
  ActColumns(const void* x, size_t stride, int64_t nb) {
    for (int c = 0; c < NC; ++c) {
      q[c] = column<BlockQ8_0>(x, stride, c);
      d[c] = reinterpret_cast<const float*>(reinterpret_cast<const char*>(q[c]) + act_scales_offset(kLayout, nb));
      s[c] = d[c] + nb;
    }
  }
};

// The 32-element kernels run over a row in chunks of kChunkBlocks blocks, in two passes:
//  1. scales, 8 blocks per instruction: the fp16 d_w (and m_w) are gathered and converted
//     with F16C, multiplied by the activation scales d_y into scale[c][j], and the offset
//     term sum_j c_w * s_y (see below) is accumulated, all in fp32 vectors;
//  2. integers: the nibble formats put two blocks in one register (low nibbles of both, then
//     high nibbles of both; the activations come in that pair order, ActLayout), then
//     maddubs + madd (or vpdpbusd), one convert and one FMA per pair with the two blocks'
//     scales; Q8_0 goes block by block with a scale broadcast from memory.
// This keeps fp16 converts, inserts and register broadcasts out of the per-block work: a
// one-pass loop took ~4.5 cycles per block, bound on port 5.
constexpr int kChunkBlocks = 128;

// Legacy formats as u * d_w + c_w with unsigned levels u, or signed levels (Q8_0):
//   Q4_0: u in [0, 16), c_w = -8 d_w     Q5_0: u in [0, 32), c_w = -16 d_w
//   Q4_1: u in [0, 16), c_w = m_w        Q5_1: u in [0, 32), c_w = m_w
// so sum_k w_k y_k = d_w d_y sum(u q_y) + c_w s_y with s_y = d_y sum(q_y).
enum class Legacy { q4_0, q5_0, q4_1, q5_1, q8_0 };

template <Legacy kFmt> struct LegacyBlock;
template <> struct LegacyBlock<Legacy::q4_0> { using type = BlockQ4_0; };
template <> struct LegacyBlock<Legacy::q5_0> { using type = BlockQ5_0; };
template <> struct LegacyBlock<Legacy::q4_1> { using type = BlockQ4_1; };
template <> struct LegacyBlock<Legacy::q5_1> { using type = BlockQ5_1; };
template <> struct LegacyBlock<Legacy::q8_0> { using type = BlockQ8_0; };

// Pass 1 of a chunk of m blocks starting at block b0 (see kChunkBlocks), from its block j0
// (a multiple of 8) on: scale[c][j] = d_w * d_y, and the offset term c_w * s_y added to
// acc_offset / offset_tail (not for Q8_0, whose kernels take signed weights).
template <Legacy kFmt, int NC, ActLayout kLayout>
inline void legacy_chunk_scales(const typename LegacyBlock<kFmt>::type* blk, int j0, int m,
                                const ActColumns<NC, kLayout>& y, int64_t b0, float (*scale)[kChunkBlocks],
                                __m256* acc_offset, float* offset_tail) {
  constexpr bool kHasMin = kFmt == Legacy::q4_1 || kFmt == Legacy::q5_1;
  constexpr bool kFive = kFmt == Legacy::q5_0 || kFmt == Legacy::q5_1;
  alignas(32) uint16_t d_half[kChunkBlocks];
  alignas(32) uint16_t m_half[kChunkBlocks];
  for (int j = j0; j < m; ++j) {
    d_half[j] = blk[j].d;
    if constexpr (kHasMin) m_half[j] = blk[j].m;
  }
  int j = j0;
  for (; j + 8 <= m; j += 8) {
    const __m256 dw = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(d_half + j)));
    __m256 cw;
    if constexpr (kHasMin) cw = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(m_half + j)));
    else cw = _mm256_mul_ps(dw, _mm256_set1_ps(kFive ? -16.0f : -8.0f));
    for (int c = 0; c < NC; ++c) {
      _mm256_store_ps(scale[c] + j, _mm256_mul_ps(dw, _mm256_loadu_ps(y.d[c] + b0 + j)));
      if constexpr (kFmt != Legacy::q8_0) acc_offset[c] = _mm256_fmadd_ps(cw, _mm256_loadu_ps(y.s[c] + b0 + j), acc_offset[c]);
    }
  }
  for (; j < m; ++j) {
    const float dw = fp16(d_half[j]);
    float cw;
    if constexpr (kHasMin) cw = fp16(m_half[j]);
    else cw = (kFive ? -16.0f : -8.0f) * dw;
    for (int c = 0; c < NC; ++c) {
      scale[c][j] = dw * y.d[c][b0 + j];
      if constexpr (kFmt != Legacy::q8_0) offset_tail[c] += cw * y.s[c][b0 + j];
    }
  }
}

// 32 nibbles as bytes without a cross-lane shuffle: the 16 bytes broadcast to both lanes
// (a load), the high lane shifted right by 4 (vpsrlvd), then masked.
inline __m256i unpack_nibbles(const uint8_t* qs) {
  const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i shifted = _mm256_srlv_epi32(both, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
  return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
}

template <Legacy kFmt, int NC, bool kVnni>
void dot_legacy_tile(int64_t cols, const void* w, const void* x, size_t stride, float* out) {
  using Block = typename LegacyBlock<kFmt>::type;
  constexpr bool kFive = kFmt == Legacy::q5_0 || kFmt == Legacy::q5_1;
  // The nibble formats take their activations in block pairs (ActLayout::q8_pairs_scales).
  constexpr bool kPairs = kFmt != Legacy::q8_0;
  constexpr ActLayout kLayout = kPairs ? ActLayout::q8_pairs_scales : ActLayout::q8_0_scales;
  const auto* a = static_cast<const Block*>(w);
  const int64_t nb = cols / kQK;
  const ActColumns<NC, kLayout> y(x, stride, nb);
  // Start of the 32 int8 activations of block i (plain order unless inside a pair).
  auto y_plain = [&](int c, int64_t i) -> const int8_t* {
    if constexpr (kPairs) return reinterpret_cast<const int8_t*>(y.q[c]) + i / 2 * 2 * kQK;
    else return y.q[c][i].qs;
  };

  alignas(32) float scale[NC][kChunkBlocks];
  constexpr int kLanes = NC == 1 ? 4 : NC == 2 ? 2 : 1;
  __m256 acc[kLanes][NC], acc_offset[NC];
  float offset_tail[NC] = {};
  for (int c = 0; c < NC; ++c) {
    acc_offset[c] = _mm256_setzero_ps();
    for (int lane = 0; lane < kLanes; ++lane) acc[lane][c] = _mm256_setzero_ps();
  }

  for (int64_t b0 = 0; b0 < nb; b0 += kChunkBlocks) {
    const int m = static_cast<int>(std::min<int64_t>(kChunkBlocks, nb - b0));
    const Block* blk = a + b0;
    // Pass 1: scales.
    legacy_chunk_scales<kFmt>(blk, 0, m, y, b0, scale, acc_offset, offset_tail);
    // Pass 2: integer dot products; kLanes independent accumulators per column so that the
    // 4-cycle FMA latency is not the bound at NC = 1 (NC columns already interleave).
    auto block = [&](int jj, int lane) {
      const Block& b = blk[jj];
      __m256i u;
      if constexpr (kFmt == Legacy::q8_0) {
        u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
      } else {
        u = unpack_nibbles(b.qs);
        if constexpr (kFive) u = _mm256_or_si256(u, _mm256_and_si256(bytes_from_bits(b.qh), _mm256_set1_epi8(0x10)));
      }
      // Q8_0 is signed: sum w y = sum |w| * sign(y, w), since maddubs / vpdpbusd take u8 * s8.
      __m256i abs_u = u;
      if constexpr (kFmt == Legacy::q8_0) abs_u = _mm256_sign_epi8(u, u);
      for (int c = 0; c < NC; ++c) {
        __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y_plain(c, b0 + jj)));
        if constexpr (kFmt == Legacy::q8_0) yv = _mm256_sign_epi8(yv, u);
        const __m256 sums = _mm256_cvtepi32_ps(dot_u8s8<kVnni>(abs_u, yv));
        acc[lane][c] = _mm256_fmadd_ps(_mm256_broadcast_ss(scale[c] + jj), sums, acc[lane][c]);
      }
    };
    // Blocks jj, jj + 1 in one register: low nibbles of both in t & 0xF, high in t >> 4, the
    // order of the paired activations; lanes 0-3 sum block jj, lanes 4-7 block jj + 1.
    auto pair = [&](int jj, int lane) {
      const Block& p0 = blk[jj];
      const Block& p1 = blk[jj + 1];
      const __m256i t = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p0.qs))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(p1.qs)), 1);
      __m256i lo = _mm256_and_si256(t, _mm256_set1_epi8(0x0F));
      __m256i hi = _mm256_and_si256(_mm256_srli_epi16(t, 4), _mm256_set1_epi8(0x0F));
      if constexpr (kFive) {
        uint32_t h0, h1;
        std::memcpy(&h0, p0.qh, sizeof(h0));
        std::memcpy(&h1, p1.qh, sizeof(h1));
        const __m256i bit4 = _mm256_set1_epi8(0x10);
        lo = _mm256_or_si256(lo, _mm256_and_si256(bytes_from_bits((h0 & 0xFFFF) | (h1 << 16)), bit4));
        hi = _mm256_or_si256(hi, _mm256_and_si256(bytes_from_bits((h0 >> 16) | (h1 & 0xFFFF0000u)), bit4));
      }
      const __m256i pick = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
      for (int c = 0; c < NC; ++c) {
        const auto* yp = reinterpret_cast<const __m256i*>(y_plain(c, b0 + jj));
        const __m256i sums = dot2_u8s8<kVnni>(lo, _mm256_loadu_si256(yp), hi, _mm256_loadu_si256(yp + 1));
        const __m128 two = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(scale[c] + jj)));
        const __m256 sc = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), pick);
        acc[lane][c] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(sums), acc[lane][c]);
      }
    };
    int jj = 0;
    if constexpr (kPairs) {
      for (; jj + 2 * kLanes <= m; jj += 2 * kLanes) {
        prefetch_weights(blk + jj);
        for (int lane = 0; lane < kLanes; ++lane) pair(jj + 2 * lane, lane);
      }
      for (; jj + 2 <= m; jj += 2) pair(jj, 0);
    } else {
      for (; jj + kLanes <= m; jj += kLanes) {
        prefetch_weights(blk + jj);
        for (int lane = 0; lane < kLanes; ++lane) block(jj + lane, lane);
      }
    }
    for (; jj < m; ++jj) block(jj, 0);  // the unpaired last block is in plain order
  }
  for (int c = 0; c < NC; ++c) {
    __m256 total = acc[0][c];
    for (int lane = 1; lane < kLanes; ++lane) total = _mm256_add_ps(total, acc[lane][c]);
    out[c] = hsum(total) + hsum(acc_offset[c]) + offset_tail[c];
  }
}

// ---- K-quants against Q8_K

// Broadcast int16 lane k of a 128-bit vector (k = 0..7) to all 16 lanes of a 256-bit one,
// with one in-lane byte shuffle of the vector broadcast to both halves (no port-5 scalar
// broadcasts per sub-block). With k_high != k_low, the high half gets lane k_high instead.
inline __m256i shuffle_for_lanes(int k_low, int k_high) {
  const char lo0 = static_cast<char>(2 * k_low), lo1 = static_cast<char>(2 * k_low + 1);
  const char hi0 = static_cast<char>(2 * k_high), hi1 = static_cast<char>(2 * k_high + 1);
  return _mm256_setr_epi8(lo0, lo1, lo0, lo1, lo0, lo1, lo0, lo1, lo0, lo1, lo0, lo1, lo0, lo1, lo0, lo1,
                          hi0, hi1, hi0, hi1, hi0, hi1, hi0, hi1, hi0, hi1, hi0, hi1, hi0, hi1, hi0, hi1);
}

// Q4_K / Q5_K: 8 sub-blocks of 32 with 6-bit scales and mins:
//   sum w y = d_y (d_w sum_j sc_j sum(q y)_j - dmin_w sum_j mn_j (bsum_2j + bsum_2j+1)).
template <bool kFive, typename Block, int NC>
void dot_q45k_tile(int64_t cols, const void* w, const void* x, size_t stride, float* out) {
  const auto* a = static_cast<const Block*>(w);
  const BlockQ8_K* y[NC];
  for (int c = 0; c < NC; ++c) y[c] = column<BlockQ8_K>(x, stride, c);
  __m256 acc[NC];
  __m128 acc_min[NC];
  for (int c = 0; c < NC; ++c) {
    acc[c] = _mm256_setzero_ps();
    acc_min[c] = _mm_setzero_ps();
  }
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256i pick[8];
  for (int j = 0; j < 8; ++j) pick[j] = shuffle_for_lanes(j, j);
  for (int64_t i = 0; i < cols / kQKK; ++i) {
    prefetch_weight_block<sizeof(a[i])>(a + i);
    // The 12 bytes of 6-bit scales and mins -> sc[0..8) in words 0-1, mn[0..8) in words 2-3,
    // four at a time (sc_j = s_j & 63, mn_j = s_j+4 & 63 for j < 4; the high bits of s_0..7
    // complete the nibbles of s_8..11 for j >= 4), as the reference's get_scale_min_k4.
    uint32_t u[4];
    std::memcpy(u, a[i].scales, 12);
    const uint32_t mins_low = u[1] & 0x3f3f3f3fu;
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4);
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);
    u[2] = mins_low;
    u[0] &= 0x3f3f3f3fu;
    const uint64_t sc_bytes = u[0] | (static_cast<uint64_t>(u[1]) << 32);
    const uint64_t mn_bytes = u[2] | (static_cast<uint64_t>(u[3]) << 32);
    const __m256i sc16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(sc_bytes))));
    const __m128i mn16 = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<int64_t>(mn_bytes)));
    const float dw = fp16(a[i].d), dminw = fp16(a[i].dmin);
    __m256i q[8];
    __m256i high_bits;
    if constexpr (kFive) high_bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh));
    for (int k = 0; k < 4; ++k) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs + 32 * k));
      q[2 * k] = _mm256_and_si256(raw, low4);
      q[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
      if constexpr (kFive) {
        // Sub-block j takes bit j of qh[l] as its bit 4.
        for (int h = 0; h < 2; ++h) {
          const int j = 2 * k + h;
          const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(high_bits, j), _mm256_set1_epi8(1));
          q[j] = _mm256_or_si256(q[j], _mm256_slli_epi16(bit, 4));
        }
      }
    }
    for (int c = 0; c < NC; ++c) {
      __m256i sumi = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) {
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].qs + 32 * j));
        const __m256i p16 = _mm256_maddubs_epi16(q[j], yv);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p16, _mm256_shuffle_epi8(sc16, pick[j])));
      }
      // bsums of 16 -> sums of 32 (hadd), times the 8 mins.
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].bsums));
      const __m128i bsums32 = _mm_hadd_epi16(_mm256_castsi256_si128(bsums), _mm256_extracti128_si256(bsums, 1));
      const __m128i mins = _mm_madd_epi16(mn16, bsums32);
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y[c][i].d), _mm256_cvtepi32_ps(sumi), acc[c]);
      acc_min[c] = _mm_fmadd_ps(_mm_set1_ps(-dminw * y[c][i].d), _mm_cvtepi32_ps(mins), acc_min[c]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    __m128 m = acc_min[c];
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_movehdup_ps(m));
    out[c] = hsum(acc[c]) + _mm_cvtss_f32(m);
  }
}

// Q6_K: 16 groups of 16 with int8 scales; levels stored as q + 32 in [0, 64), so
// sum (q - 32) y = sum q y - 32 sum y, the second term from Q8_K's bsums.
template <int NC>
void dot_q6k_tile(int64_t cols, const void* w, const void* x, size_t stride, float* out) {
  const auto* a = static_cast<const BlockQ6_K*>(w);
  const BlockQ8_K* y[NC];
  for (int c = 0; c < NC; ++c) y[c] = column<BlockQ8_K>(x, stride, c);
  __m256 acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0F), two = _mm256_set1_epi8(3);
  // 32 elements j use groups 2j (low 128-bit half) and 2j + 1 (high half).
  __m256i pick[4];
  for (int j = 0; j < 4; ++j) pick[j] = shuffle_for_lanes(2 * j, 2 * j + 1);
  for (int64_t i = 0; i < cols / kQKK; ++i) {
    prefetch_weight_block<sizeof(a[i])>(a + i);
    __m256i q[8];  // 32 elements each, in element order
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].ql + 64 * h));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].ql + 64 * h + 32));
      const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qh + 32 * h));
      auto high = [&](int shift) {
        return _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, shift), two), 4);
      };
      q[4 * h + 0] = _mm256_or_si256(_mm256_and_si256(l0, low4), high(0));
      q[4 * h + 1] = _mm256_or_si256(_mm256_and_si256(l1, low4), high(2));
      q[4 * h + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), low4), high(4));
      q[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), low4), high(6));
    }
    const float dw = fp16(a[i].d);
    const __m128i sc8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[i].scales));
    const __m256i sc_all = _mm256_cvtepi8_epi16(sc8);  // 16 int16 in group order
    const __m256i sc_lo = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc_all));
    const __m256i sc_hi = _mm256_broadcastsi128_si256(_mm256_extracti128_si256(sc_all, 1));
    for (int c = 0; c < NC; ++c) {
      __m256i sumi = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) {
        const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].qs + 32 * j));
        const __m256i scales = _mm256_shuffle_epi8(j < 4 ? sc_lo : sc_hi, pick[j % 4]);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[j], yv), scales));
      }
      // 32 * sum_g sc_g bsum_g, as 8 int32 lanes.
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].bsums));
      sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(_mm256_madd_epi16(sc_all, bsums), 5));
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y[c][i].d), _mm256_cvtepi32_ps(sumi), acc[c]);
    }
  }
  for (int c = 0; c < NC; ++c) out[c] = hsum(acc[c]);
}

// Q2_K and Q3_K: 16 groups of 16 with their elements in Q6_K's order: the 32 elements 32j ..
// 32j + 31 (j = 4h + k) are bits 2k, 2k + 1 of bytes qs[32h .. 32h + 32), so chunk j's low
// 128-bit lane holds group 2j and its high lane group 2j + 1 (the scales are picked as Q6_K's).
inline void unpack_2bit_chunks(const uint8_t* qs, __m256i q[8]) {
  const __m256i three = _mm256_set1_epi8(3);
  for (int h = 0; h < 2; ++h) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * h));
    for (int k = 0; k < 4; ++k) q[4 * h + k] = _mm256_and_si256(_mm256_srli_epi16(raw, 2 * k), three);
  }
}

// sum_j madd(maddubs(q_j, y_j), scale of the chunk's two groups): sum_g sc_g sum(q y)_g as 8
// int32 lanes. sc_all: the 16 scales as int16 in group order; pick[j] = shuffle_for_lanes(2j,
// 2j + 1) (made once per call of the tile function).
inline __m256i group_scaled_sums(const __m256i q[8], const int8_t* y, __m256i sc_all, const __m256i pick[4]) {
  const __m256i sc_lo = _mm256_broadcastsi128_si256(_mm256_castsi256_si128(sc_all));
  const __m256i sc_hi = _mm256_broadcastsi128_si256(_mm256_extracti128_si256(sc_all, 1));
  __m256i sumi = _mm256_setzero_si256();
  for (int j = 0; j < 8; ++j) {
    const __m256i yv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 32 * j));
    const __m256i scales = _mm256_shuffle_epi8(j < 4 ? sc_lo : sc_hi, pick[j % 4]);
    sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(_mm256_maddubs_epi16(q[j], yv), scales));
  }
  return sumi;
}

// Q2_K: levels q in [0, 4), scales byte g = sc_g | m_g << 4:
//   sum w y = d_y (d_w sum_g sc_g sum(q y)_g - dmin_w sum_g m_g bsum_g).
template <int NC>
void dot_q2k_tile(int64_t cols, const void* w, const void* x, size_t stride, float* out) {
  const auto* a = static_cast<const BlockQ2_K*>(w);
  const BlockQ8_K* y[NC];
  for (int c = 0; c < NC; ++c) y[c] = column<BlockQ8_K>(x, stride, c);
  __m256 acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps();
  const __m128i low4 = _mm_set1_epi8(0x0F);
  __m256i pick[4];
  for (int j = 0; j < 4; ++j) pick[j] = shuffle_for_lanes(2 * j, 2 * j + 1);
  for (int64_t i = 0; i < cols / kQKK; ++i) {
    prefetch_weight_block<sizeof(a[i])>(a + i);
    __m256i q[8];
    unpack_2bit_chunks(a[i].qs, q);
    const __m128i sb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a[i].scales));
    const __m256i sc_all = _mm256_cvtepu8_epi16(_mm_and_si128(sb, low4));
    const __m256i mn_all = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sb, 4), low4));
    const float dw = fp16(a[i].d), dminw = fp16(a[i].dmin);
    for (int c = 0; c < NC; ++c) {
      const __m256i sumi = group_scaled_sums(q, y[c][i].qs, sc_all, pick);
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].bsums));
      const __m256i mins = _mm256_madd_epi16(mn_all, bsums);
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y[c][i].d), _mm256_cvtepi32_ps(sumi), acc[c]);
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(-dminw * y[c][i].d), _mm256_cvtepi32_ps(mins), acc[c]);
    }
  }
  for (int c = 0; c < NC; ++c) out[c] = hsum(acc[c]);
}

// Q3_K: levels q in [-4, 4): the 2 bits of qs plus bit j of hmask[l] for element 32j + l (set:
// q = low, clear: q = low - 4), and 6-bit scales stored + 32 (as quant::unpack_q3_k_scales):
//   sum w y = d_y d_w sum_g sc_g (sum(q' y)_g - 4 bsum_g),  q' = q + 4 = low | bit << 2 in [0, 8).
template <int NC>
void dot_q3k_tile(int64_t cols, const void* w, const void* x, size_t stride, float* out) {
  const auto* a = static_cast<const BlockQ3_K*>(w);
  const BlockQ8_K* y[NC];
  for (int c = 0; c < NC; ++c) y[c] = column<BlockQ8_K>(x, stride, c);
  __m256 acc[NC];
  for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_ps();
  const __m256i four = _mm256_set1_epi8(4);
  __m256i pick[4];
  for (int j = 0; j < 4; ++j) pick[j] = shuffle_for_lanes(2 * j, 2 * j + 1);
  for (int64_t i = 0; i < cols / kQKK; ++i) {
    prefetch_weight_block<sizeof(a[i])>(a + i);
    __m256i q[8];
    unpack_2bit_chunks(a[i].qs, q);
    // Bit j of each hmask byte moved to bit 2 by one 16-bit shift (by 2 - j or j - 2: at most 5
    // places, so bit 2 of each byte still comes from that byte), then masked: q' = low | bit << 2.
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].hmask));
    q[0] = _mm256_or_si256(q[0], _mm256_and_si256(_mm256_slli_epi16(hm, 2), four));
    q[1] = _mm256_or_si256(q[1], _mm256_and_si256(_mm256_slli_epi16(hm, 1), four));
    q[2] = _mm256_or_si256(q[2], _mm256_and_si256(hm, four));
    for (int j = 3; j < 8; ++j) q[j] = _mm256_or_si256(q[j], _mm256_and_si256(_mm256_srli_epi16(hm, j - 2), four));
    // The 12 scale bytes: low nibbles of s_0..7 in bytes 0-7, of s_8..15 in their high nibbles;
    // the 2 high bits of s_j in byte 8 + j % 4 at bit 2 (j / 4). Stored + 32.
    uint64_t lo_bytes;
    uint32_t hi_bytes;
    std::memcpy(&lo_bytes, a[i].scales, 8);
    std::memcpy(&hi_bytes, a[i].scales + 8, 4);
    const __m128i lo8 = _mm_cvtsi64_si128(static_cast<int64_t>(lo_bytes));
    const __m128i low4 = _mm_set1_epi8(0x0F), two_bits = _mm_set1_epi32(0x03030303);
    const __m128i lo = _mm_unpacklo_epi64(_mm_and_si128(lo8, low4), _mm_and_si128(_mm_srli_epi16(lo8, 4), low4));
    const __m128i hi = _mm_and_si128(_mm_setr_epi32(static_cast<int>(hi_bytes), static_cast<int>(hi_bytes >> 2),
                                                    static_cast<int>(hi_bytes >> 4), static_cast<int>(hi_bytes >> 6)),
                                     two_bits);
    const __m128i sc8 = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
    const __m256i sc_all = _mm256_cvtepi8_epi16(sc8);
    const float dw = fp16(a[i].d);
    for (int c = 0; c < NC; ++c) {
      __m256i sumi = group_scaled_sums(q, y[c][i].qs, sc_all, pick);
      const __m256i bsums = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y[c][i].bsums));
      sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(_mm256_madd_epi16(sc_all, bsums), 2));
      acc[c] = _mm256_fmadd_ps(_mm256_set1_ps(dw * y[c][i].d), _mm256_cvtepi32_ps(sumi), acc[c]);
    }
  }
  for (int c = 0; c < NC; ++c) out[c] = hsum(acc[c]);
}

// ---- float weights against fp32 activations

enum class Flt { f32, f16, bf16 };

template <Flt kFmt>
inline __m256 load8(const void* w, int64_t k) {
  if constexpr (kFmt == Flt::f32) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + k);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + k));
    if constexpr (kFmt == Flt::f16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <Flt kFmt>
inline float load1(const void* w, int64_t k) {
  if constexpr (kFmt == Flt::f32) return static_cast<const float*>(w)[k];
  const uint16_t h = static_cast<const uint16_t*>(w)[k];
  if constexpr (kFmt == Flt::f16) return fp16(h);
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Two independent accumulators per column hide the FMA latency at NC = 1.
template <Flt kFmt, int NC>
void dot_float_tile(int64_t cols, const void* w, const void* x, size_t stride, float* out) {
  const float* y[NC];
  for (int c = 0; c < NC; ++c) y[c] = column<float>(x, stride, c);
  __m256 acc0[NC], acc1[NC];
  for (int c = 0; c < NC; ++c) acc0[c] = acc1[c] = _mm256_setzero_ps();
  int64_t k = 0;
  constexpr int64_t kElemBytes = kFmt == Flt::f32 ? 4 : 2;
  for (; k + 16 <= cols; k += 16) {
    prefetch_weights(static_cast<const char*>(w) + k * kElemBytes);  // 32 or 64 bytes per step
    const __m256 w0 = load8<kFmt>(w, k), w1 = load8<kFmt>(w, k + 8);
    for (int c = 0; c < NC; ++c) {
      acc0[c] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(y[c] + k), acc0[c]);
      acc1[c] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(y[c] + k + 8), acc1[c]);
    }
  }
  for (int c = 0; c < NC; ++c) {
    float s = hsum(_mm256_add_ps(acc0[c], acc1[c]));
    for (int64_t t = k; t < cols; ++t) s += load1<kFmt>(w, t) * y[c][t];
    out[c] = s;
  }
}

// ---- column-count dispatch: DotFn from a tile template

template <template <int> class Tile>
void dot_tiles(int64_t cols, const void* w, const void* x, size_t stride, int ncols, float* out) {
  static_assert(kMaxDotCols == 4, "dispatch below covers 1..4 columns");
  switch (ncols) {
    case 4: return Tile<4>::run(cols, w, x, stride, out);
    case 3: return Tile<3>::run(cols, w, x, stride, out);
    case 2: return Tile<2>::run(cols, w, x, stride, out);
    default: return Tile<1>::run(cols, w, x, stride, out);
  }
}

template <bool kVnni>
struct Kernels256 {
  template <int NC> struct Q4_0 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_legacy_tile<Legacy::q4_0, NC, kVnni>(c, w, x, s, o); } };
  template <int NC> struct Q5_0 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_legacy_tile<Legacy::q5_0, NC, kVnni>(c, w, x, s, o); } };
  template <int NC> struct Q4_1 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_legacy_tile<Legacy::q4_1, NC, kVnni>(c, w, x, s, o); } };
  template <int NC> struct Q5_1 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_legacy_tile<Legacy::q5_1, NC, kVnni>(c, w, x, s, o); } };
  template <int NC> struct Q8_0 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_legacy_tile<Legacy::q8_0, NC, kVnni>(c, w, x, s, o); } };
  template <int NC> struct Q4_K { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_q45k_tile<false, BlockQ4_K, NC>(c, w, x, s, o); } };
  template <int NC> struct Q5_K { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_q45k_tile<true, BlockQ5_K, NC>(c, w, x, s, o); } };
  template <int NC> struct Q6_K { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_q6k_tile<NC>(c, w, x, s, o); } };
  template <int NC> struct Q2_K { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_q2k_tile<NC>(c, w, x, s, o); } };
  template <int NC> struct Q3_K { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_q3k_tile<NC>(c, w, x, s, o); } };
  template <int NC> struct F32 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_float_tile<Flt::f32, NC>(c, w, x, s, o); } };
  template <int NC> struct F16 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_float_tile<Flt::f16, NC>(c, w, x, s, o); } };
  template <int NC> struct BF16 { static void run(int64_t c, const void* w, const void* x, size_t s, float* o) { dot_float_tile<Flt::bf16, NC>(c, w, x, s, o); } };
};

}  // namespace bl::cpu::x86::inline BL_X86_ISA
