// AVX2 level of lut_matmul (lut_matmul.h), for CPUs without AVX-512 VBMI (AMD Zen 2/3, older
// Intel). vpshufb looks up 16-entry tables within 128-bit lanes, so a nibble register whose
// lanes belong to several quads (b < 4: a row's dword mixes quads) is looked up once per quad
// and the lookups blended by lane; vpmaddubsw then multiplies each lane by 2^plane and adds
// lane pairs into int16. Those int16 sums are accumulated across registers (vpaddw) and widened
// to int32 (vpmaddwd by 1) only every few units, where a bound says an int16 could next
// overflow: at 2-4 bits a register then costs one shuffle (two and a blend below 4 bits), one
// vpmaddubsw and one add per table term instead of adding vpmaddwd and a 32-bit add each time.
// Each half of a 64-lane register (rows 0..7, rows 8..15) is one ymm. Decode reads both halves
// of a line in one pass (a table load serves 16 rows of each of its tiles); prefill too with
// one table term, one half a pass with two (so that two tokens' sums stay in the 16 registers).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "kernels/cpu/lut_matmul_kernels.h"

namespace bl::cpu {
namespace {

using quant::BlGroupShape;
using quant::kBlTileRows;

// Per nibble register k % B: lane multipliers 2^plane, and for each quad the lanes it owns.
template <int B>
struct LaneConstants {
  alignas(32) std::array<std::array<uint8_t, 32>, B> mult;
  alignas(32) std::array<std::array<std::array<uint8_t, 32>, 4>, B> owns;  // 0xFF where the lane's quad is q
  LaneConstants() {
    for (int k = 0; k < B; ++k)
      for (int lane = 0; lane < 32; ++lane) {
        mult[k][lane] = static_cast<uint8_t>(1 << lut_lane_plane(B, k, lane % 4));
        for (int q = 0; q < 4; ++q) owns[k][q][lane] = lut_lane_quad(B, k, lane % 4) == q ? 0xFF : 0;
      }
  }
};

template <int B>
const LaneConstants<B>& lane_constants() {
  static const LaneConstants<B> c;
  return c;
}

// Whether nibble register k of a B-bit tile holds lanes of quad q, and the first quad it holds.
constexpr bool has_quad(int B, int k, int q) {
  for (int i = 0; i < 4; ++i)
    if (lut_lane_quad(B, k, i) == q) return true;
  return false;
}
constexpr int first_quad(int B, int k) { return lut_lane_quad(B, k, 0); }

// The largest int16 that vpmaddubsw can add for register k in one of its lane pairs (0, 1) or
// (2, 3): |entry| <= 127 times the two multipliers.
constexpr int pair_bound(int B, int k) {
  int worst = 0;
  for (int pair = 0; pair < 2; ++pair)
    worst = std::max(worst, 127 * ((1 << lut_lane_plane(B, k, 2 * pair)) + (1 << lut_lane_plane(B, k, 2 * pair + 1))));
  return worst;
}
// The same summed over the 2B registers of a unit (32 features), and over one line's two.
constexpr int unit_bound(int B) {
  int sum = 0;
  for (int k = 0; k < 2 * B; ++k) sum += pair_bound(B, k);
  return sum;
}
constexpr int line_bound(int B) {
  int worst = 0;
  for (int k = 0; k < 2 * B; k += 2) worst = std::max(worst, pair_bound(B, k) + pair_bound(B, k + 1));
  return worst;
}
// Units whose int16 sums can be added before they are widened: 21 at 2 bits (so never within a
// group of 128), 9 at 3, 2 at 4; 0 above 4 bits, where the sums are widened after every line.
template <int B>
constexpr int kUnitsPerWiden = 32767 / unit_bound(B);

// The int8 lookups of nibble half-register idx (values 0..15) of register K in `table` (the
// chunk's 64 bytes: 16 per quad), the quads' lookups blended where a register holds several.
template <int B, int K>
inline __m256i lookup(__m256i idx, const int8_t* table, const LaneConstants<B>& lc) {
  constexpr int q0 = first_quad(B, K);
  __m256i merged =
      _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table + 16 * q0))), idx);
  [&]<int... Q>(std::integer_sequence<int, Q...>) {
    (
        [&] {
          if constexpr (Q > q0 && has_quad(B, K, Q)) {
            const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table + 16 * Q)));
            merged = _mm256_blendv_epi8(merged, _mm256_shuffle_epi8(t, idx),
                                        _mm256_load_si256(reinterpret_cast<const __m256i*>(lc.owns[K % B][Q].data())));
          }
        }(),
        ...);
  }(std::make_integer_sequence<int, 4>{});
  return merged;
}

// Entry e of a quad = 0.5 * sum of +-x_m, added in the order m = 0..3 as the scalar builder
// adds them: t = fma(x_m, +-1, t) rounds t +- x_m once, as t += +-x_m does. Entries 0..7 in one
// ymm, 8..15 in the other; sign_lo[m] / sign_hi[m] are +1 on the entries with bit m, else -1.
void build_avx2(const float* x, int64_t cols, int g, int8_t* table, int8_t* residual, float* scale, float* sum) {
  __m256 sign_lo[4], sign_hi[4];
  for (int m = 0; m < 4; ++m) {
    alignas(32) float lo[8], hi[8];
    for (int e = 0; e < 8; ++e) {
      lo[e] = ((e >> m) & 1) ? 1.0f : -1.0f;
      hi[e] = (((e + 8) >> m) & 1) ? 1.0f : -1.0f;
    }
    sign_lo[m] = _mm256_load_ps(lo);
    sign_hi[m] = _mm256_load_ps(hi);
  }
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)), half = _mm256_set1_ps(0.5f);
  const __m256 steps = _mm256_set1_ps(static_cast<float>(kLutResidualSteps));
  // 16 int32 (entries 0..7 in lo, 8..15 in hi) to 16 int8 in entry order (|value| <= 127).
  auto to_bytes = [](__m256i lo, __m256i hi) {
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);  // int16 e0..15
    return _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
  };
  __m256 entries[128 / 4][2];
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    const float* xg = x + grp * g;
    __m256 amax = _mm256_setzero_ps();
    for (int quad = 0; quad < g / 4; ++quad) {
      __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
      for (int m = 0; m < 4; ++m) {
        const __m256 v = _mm256_broadcast_ss(xg + 4 * quad + m);
        lo = _mm256_fmadd_ps(v, sign_lo[m], lo);
        hi = _mm256_fmadd_ps(v, sign_hi[m], hi);
      }
      entries[quad][0] = _mm256_mul_ps(lo, half);
      entries[quad][1] = _mm256_mul_ps(hi, half);
      amax = _mm256_max_ps(amax, _mm256_max_ps(_mm256_and_ps(abs_mask, entries[quad][0]), _mm256_and_ps(abs_mask, entries[quad][1])));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    const __m256 inv = _mm256_set1_ps(m > 0.0f ? 127.0f / m : 0.0f);
    for (int quad = 0; quad < g / 4; ++quad) {
      const int64_t at = grp * g * 4 + 16 * quad;
      const __m256 u_lo = _mm256_mul_ps(entries[quad][0], inv), u_hi = _mm256_mul_ps(entries[quad][1], inv);
      const __m256i q_lo = _mm256_cvtps_epi32(u_lo), q_hi = _mm256_cvtps_epi32(u_hi);  // round to nearest even
      _mm_storeu_si128(reinterpret_cast<__m128i*>(table + at), to_bytes(q_lo, q_hi));
      if (residual) {
        const __m256i r_lo = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(u_lo, _mm256_cvtepi32_ps(q_lo)), steps));
        const __m256i r_hi = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(u_hi, _mm256_cvtepi32_ps(q_hi)), steps));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(residual + at), to_bytes(r_lo, r_hi));
      }
    }
    scale[grp] = residual ? m / 127.0f / static_cast<float>(kLutResidualSteps) : m / 127.0f;
    sum[grp] = lut_group_sum(xg, g);
  }
}

// S 16-row tiles times NT tokens with TERMS table terms (S > 1 for decode: that many streams of
// lines in flight, one table load for all). A tile group is walked HP halves (8 rows each) at
// a time: per pass B lines per 32 features (2 chunks), each line two nibble registers; then the
// group's scales and zeros of those rows.
template <int B, int NT, int S, int TERMS, int HP>
void tiles_avx2(const BlGroupShape& shape, int64_t cols, const uint8_t* const* tiles, const LutTables* tokens,
                float* const* outs) {
  static_assert(kUnitsPerWiden<B> > 0 || line_bound(B) <= 32767, "a line's int16 sums must fit where a unit's do not");
  const int g = shape.group_size, units = g / 32;
  const int64_t groups = cols / g, tg_bytes = shape.tile_group_bytes();
  const LaneConstants<B>& lc = lane_constants<B>();
  const __m256i low4 = _mm256_set1_epi8(0x0F), ones16 = _mm256_set1_epi16(1);
  const __m256 half_range = _mm256_set1_ps(0.5f * static_cast<float>((1 << B) - 1));
  __m256 result[2][S][NT];
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < S; ++i)
      for (int t = 0; t < NT; ++t) result[h][i][t] = _mm256_setzero_ps();

  for (int64_t grp = 0; grp < groups; ++grp) {
    for (int h0 = 0; h0 < 2; h0 += HP) {
      // Per tile, half, token and term: int32 row sums (wide), fed from int16 lane-pair sums
      // (narrow) every kUnitsPerWiden units (every line above 4 bits).
      __m256i wide[S][HP][NT][TERMS];
      for (int i = 0; i < S; ++i)
        for (int hh = 0; hh < HP; ++hh)
          for (int t = 0; t < NT; ++t)
            for (int term = 0; term < TERMS; ++term) wide[i][hh][t][term] = _mm256_setzero_si256();
      auto widen = [&](__m256i (&narrow)[S][HP][NT][TERMS]) {
        for (int i = 0; i < S; ++i)
          for (int hh = 0; hh < HP; ++hh)
            for (int t = 0; t < NT; ++t)
              for (int term = 0; term < TERMS; ++term) {
                wide[i][hh][t][term] =
                    _mm256_add_epi32(wide[i][hh][t][term], _mm256_madd_epi16(narrow[i][hh][t][term], ones16));
                narrow[i][hh][t][term] = _mm256_setzero_si256();
              }
      };
      constexpr int kStep = kUnitsPerWiden<B> > 0 ? kUnitsPerWiden<B> : 1;
      for (int u0 = 0; u0 < units; u0 += kStep) {
        __m256i narrow[S][HP][NT][TERMS];
        for (int i = 0; i < S; ++i)
          for (int hh = 0; hh < HP; ++hh)
            for (int t = 0; t < NT; ++t)
              for (int term = 0; term < TERMS; ++term) narrow[i][hh][t][term] = _mm256_setzero_si256();
        const int u1 = std::min(units, u0 + kStep);
        for (int u = u0; u < u1; ++u) {
          const int64_t lines_at = grp * tg_bytes + 64 + 64 * B * u + 32 * h0;
          const int64_t chunk0 = (grp * shape.chunks() + 2 * u) * 64;  // byte offset of the unit's first table
          [&]<int... L>(std::integer_sequence<int, L...>) {
            (
                [&] {
                  // Line L holds registers 2L (low nibbles) and 2L + 1 (high) of the unit.
                  constexpr int klo = 2 * L, khi = 2 * L + 1;
                  const __m256i mlo = _mm256_load_si256(reinterpret_cast<const __m256i*>(lc.mult[klo % B].data()));
                  const __m256i mhi = _mm256_load_si256(reinterpret_cast<const __m256i*>(lc.mult[khi % B].data()));
                  __m256i lo[S][HP], hi[S][HP];
                  for (int i = 0; i < S; ++i)
                    for (int hh = 0; hh < HP; ++hh) {
                      const uint8_t* line = tiles[i] + lines_at + 64 * L + 32 * hh;
                      if (NT == 1 && hh == 0 && h0 == 0)
                        _mm_prefetch(reinterpret_cast<const char*>(line) + kLutStreamLead, _MM_HINT_T0);
                      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(line));
                      lo[i][hh] = _mm256_and_si256(v, low4);
                      hi[i][hh] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                    }
                  for (int t = 0; t < NT; ++t)
                    for (int term = 0; term < TERMS; ++term) {
                      const int8_t* table = (term == 0 ? tokens[t].table : tokens[t].residual) + chunk0;
                      for (int i = 0; i < S; ++i)
                        for (int hh = 0; hh < HP; ++hh) {
                          const __m256i plo =
                              _mm256_maddubs_epi16(mlo, lookup<B, klo>(lo[i][hh], table + 64 * (klo / B), lc));
                          const __m256i phi =
                              _mm256_maddubs_epi16(mhi, lookup<B, khi>(hi[i][hh], table + 64 * (khi / B), lc));
                          narrow[i][hh][t][term] = _mm256_add_epi16(narrow[i][hh][t][term], _mm256_add_epi16(plo, phi));
                        }
                    }
                  if constexpr (kUnitsPerWiden<B> == 0) widen(narrow);
                }(),
                ...);
          }(std::make_integer_sequence<int, B>{});
        }
        if constexpr (kUnitsPerWiden<B> > 0) widen(narrow);
      }
      for (int i = 0; i < S; ++i)
        for (int hh = 0; hh < HP; ++hh) {
          const int h = h0 + hh;
          const uint8_t* tg = tiles[i] + grp * tg_bytes;
          const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tg + 16 * h)));
          const __m256 z = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tg + 32 + 16 * h)));
          const __m256 cz = _mm256_sub_ps(half_range, z);
          for (int t = 0; t < NT; ++t) {
            __m256i sum_i = wide[i][hh][t][0];
            if constexpr (TERMS == 2)
              sum_i = _mm256_add_epi32(_mm256_mullo_epi32(sum_i, _mm256_set1_epi32(kLutResidualSteps)), wide[i][hh][t][1]);
            const __m256 v = _mm256_fmadd_ps(cz, _mm256_set1_ps(tokens[t].sum[grp]),
                                             _mm256_mul_ps(_mm256_cvtepi32_ps(sum_i), _mm256_set1_ps(tokens[t].scale[grp])));
            result[h][i][t] = _mm256_fmadd_ps(s, v, result[h][i][t]);
          }
        }
    }
  }
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < S; ++i)
      for (int t = 0; t < NT; ++t) _mm256_storeu_ps(outs[i] + t * kBlTileRows + 8 * h, result[h][i][t]);
}

// Prefill: the tokens two at a time, both halves a pass with one term (synthetic llama3-1b pp64
// on Zen 3: bl4g128 83-88 -> 104-105 tok/s, bl2g128 103-109 -> 132-138 against one half), one
// half with two (two tokens' sums of both terms fill the registers).
template <int B, int TERMS>
void tile_tokens(const BlGroupShape& shape, int64_t cols, const uint8_t* tile, const LutTables* tokens, int nt,
                 float* out) {
  const uint8_t* const tiles[1] = {tile};
  for (int t = 0; t < nt; t += 2) {
    float* const outs[1] = {out + t * kBlTileRows};
    if (nt - t >= 2)
      tiles_avx2<B, 2, 1, TERMS, TERMS == 1 ? 2 : 1>(shape, cols, tiles, tokens + t, outs);
    else
      tiles_avx2<B, 1, 1, TERMS, TERMS == 1 ? 2 : 1>(shape, cols, tiles, tokens + t, outs);
  }
}

// One or two table terms, as the tables were built (residual null or not).
template <int B>
void tile_dispatch(const BlGroupShape& shape, int64_t cols, const uint8_t* tile, const LutTables* tokens, int nt,
                   float* out) {
  if (tokens[0].residual) return tile_tokens<B, 2>(shape, cols, tile, tokens, nt, out);
  tile_tokens<B, 1>(shape, cols, tile, tokens, nt, out);
}

// Tiles a decode call takes (lut_matmul_kernels.h), and halves of a line it reads in one pass
// (a table load serves 16 rows of each tile). Four tiles up to 4 bits, two above. Zen 3,
// synthetic llama3-1b, one term, alternating runs: tiles a call 1 / 2 / 4 gave bl2g128 73.1 /
// 76.3 / 80.1 tok/s, bl4g128 37.0 / 39.3 / 42.7; one half a pass (8 rows a table load) took
// 21.3 cycles per 64-byte line in cache against 17.4 for two (bl2g128, two terms).
template <int B>
constexpr int kDecodeTiles = B <= 4 ? 4 : 2;
constexpr int kDecodeHalves = 2;
static_assert(kDecodeTiles<1> <= kLutMaxDecodeTiles, "the driver's arrays hold kLutMaxDecodeTiles tiles");

template <int B>
void tile_decode(const BlGroupShape& shape, int64_t cols, const uint8_t* const* tiles, const LutTables* token,
                 float* const* outs) {
  if (token->residual) {  // two terms: one tile a pass (in cache, bl4g128: 12.9 cycles a line vs 20.9 for four)
    for (int i = 0; i < kDecodeTiles<B>; ++i) tiles_avx2<B, 1, 1, 2, kDecodeHalves>(shape, cols, tiles + i, token, outs + i);
    return;
  }
  tiles_avx2<B, 1, kDecodeTiles<B>, 1, kDecodeHalves>(shape, cols, tiles, token, outs);
}

template <int B>
constexpr LutKernels kernels_of() {
  return LutKernels{build_avx2, tile_dispatch<B>, tile_decode<B>, kDecodeTiles<B>};
}

}  // namespace

const LutKernels* lut_kernels_avx2(const BlGroupShape& shape) {
  static const std::array<LutKernels, 8> kernels = {kernels_of<1>(), kernels_of<2>(), kernels_of<3>(), kernels_of<4>(),
                                                     kernels_of<5>(), kernels_of<6>(), kernels_of<7>(), kernels_of<8>()};
  return &kernels[static_cast<size_t>(shape.bits - 1)];
}

}  // namespace bl::cpu
