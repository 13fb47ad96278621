// AVX-512 level of lut_matmul (lut_matmul.h): vpermb looks up a 64-byte table (4 quads x 16
// entries) for the 64 lanes of a nibble register, vpdpbusd weights each lane by 2^plane and sums
// the 4 lanes of a row into its int32 accumulator. Needs AVX-512 BW + VNNI + VBMI.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on unmasked intrinsics (see dot_avx512.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "kernels/cpu/lut_matmul_kernels.h"
#include "kernels/cpu/cpu_features.h"

namespace bl::cpu {
namespace {

using quant::BlGroupShape;
using quant::kBlTileRows;

// Per nibble register k % B: lane 4r + i's table offset 16 * quad and multiplier 2^plane.
template <int B>
struct LaneConstants {
  alignas(64) std::array<std::array<uint8_t, 64>, B> offset, mult;
  LaneConstants() {
    for (int k = 0; k < B; ++k)
      for (int lane = 0; lane < 64; ++lane) {
        offset[k][lane] = static_cast<uint8_t>(16 * lut_lane_quad(B, k, lane % 4));
        mult[k][lane] = static_cast<uint8_t>(1 << lut_lane_plane(B, k, lane % 4));
      }
  }
};

template <int B>
const LaneConstants<B>& lane_constants() {
  static const LaneConstants<B> c;
  return c;
}

// (a & b) | c
inline __m512i and_or(__m512i a, __m512i b, __m512i c) { return _mm512_ternarylogic_epi32(a, b, c, 0xEA); }

void build_avx512(const float* x, int64_t cols, int g, int8_t* table, int8_t* residual, float* scale, float* sum) {
  // Entry e of a quad = 0.5 * sum of +-x_m, added in the order m = 0..3, + on the entries with
  // bit m set (mask), - on the others.
  constexpr __mmask16 kHasBit[4] = {0xAAAA, 0xCCCC, 0xF0F0, 0xFF00};
  const __m512 sign = _mm512_set1_ps(-0.0f), half = _mm512_set1_ps(0.5f);
  __m512 entries[128 / 4];
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    const float* xg = x + grp * g;
    __m512 amax = _mm512_setzero_ps();
    for (int quad = 0; quad < g / 4; ++quad) {
      __m512 t = _mm512_setzero_ps();
      for (int m = 0; m < 4; ++m) {
        const __m512 v = _mm512_set1_ps(xg[4 * quad + m]);
        t = _mm512_mask_add_ps(_mm512_sub_ps(t, v), kHasBit[m], t, v);
      }
      entries[quad] = _mm512_mul_ps(t, half);
      amax = _mm512_max_ps(amax, _mm512_andnot_ps(sign, entries[quad]));
    }
    const float m = _mm512_reduce_max_ps(amax);
    const __m512 inv = _mm512_set1_ps(m > 0.0f ? 127.0f / m : 0.0f);
    const __m512 steps = _mm512_set1_ps(static_cast<float>(kLutResidualSteps));
    for (int quad = 0; quad < g / 4; ++quad) {
      const int64_t at = grp * g * 4 + 16 * quad;
      const __m512 u = _mm512_mul_ps(entries[quad], inv);
      const __m512i q = _mm512_cvtps_epi32(u);  // round to nearest even
      _mm_storeu_si128(reinterpret_cast<__m128i*>(table + at), _mm512_cvtepi32_epi8(q));
      if (residual) {
        const __m512i r = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(u, _mm512_cvtepi32_ps(q)), steps));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(residual + at), _mm512_cvtepi32_epi8(r));
      }
    }
    scale[grp] = residual ? m / 127.0f / static_cast<float>(kLutResidualSteps) : m / 127.0f;
    sum[grp] = lut_group_sum(xg, g);
  }
}

// S 16-row tiles times NT tokens (S = kDecodeTiles<B> for decode: that many streams of lines in
// flight, one table load for all). Per weight group: B lines per 32 features (2 chunks), each
// line two nibble registers; then the group's scales and zeros for the 16 rows.
template <int B, int NT, int S, int TERMS>
void tiles_avx512(const BlGroupShape& shape, int64_t cols, const uint8_t* const* tiles, const LutTables* tokens,
                  float* const* outs) {
  const int g = shape.group_size, units = g / 32;
  const int64_t groups = cols / g, tg_bytes = shape.tile_group_bytes();
  const LaneConstants<B>& lc = lane_constants<B>();
  __m512i offset[B], mult[B];
  for (int k = 0; k < B; ++k) {
    offset[k] = _mm512_load_si512(lc.offset[k].data());
    mult[k] = _mm512_load_si512(lc.mult[k].data());
  }
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  const __m512 half_range = _mm512_set1_ps(0.5f * static_cast<float>((1 << B) - 1));
  __m512 result[S][NT];
  for (int i = 0; i < S; ++i)
    for (int t = 0; t < NT; ++t) result[i][t] = _mm512_setzero_ps();

  for (int64_t grp = 0; grp < groups; ++grp) {
    __m512i acc[S][NT], acc2[S][NT];  // acc2: the residual table's sums (TERMS == 2)
    for (int i = 0; i < S; ++i)
      for (int t = 0; t < NT; ++t) acc[i][t] = acc2[i][t] = _mm512_setzero_si512();
    for (int u = 0; u < units; ++u) {
      const int64_t lines_at = grp * tg_bytes + 64 + 64 * B * u;
      const int64_t chunk0 = (grp * shape.chunks() + 2 * u) * 64;  // byte offset of the unit's first table
      [&]<int... L>(std::integer_sequence<int, L...>) {
        (
            [&] {
              // Line L holds registers 2L (low nibbles) and 2L + 1 (high) of the unit.
              constexpr int klo = 2 * L, khi = 2 * L + 1;
              __m512i lo[S], hi[S];
              for (int i = 0; i < S; ++i) {
                const uint8_t* line = tiles[i] + lines_at + 64 * L;
                if constexpr (NT == 1) _mm_prefetch(reinterpret_cast<const char*>(line) + kLutL2Lead, _MM_HINT_T1);
                const __m512i v = _mm512_loadu_si512(line);
                lo[i] = and_or(v, low4, offset[klo % B]);
                hi[i] = and_or(_mm512_srli_epi16(v, 4), low4, offset[khi % B]);
              }
              for (int t = 0; t < NT; ++t) {
                const int8_t* table = tokens[t].table + chunk0;
                const __m512i tlo = _mm512_loadu_si512(table + 64 * (klo / B));
                const __m512i thi = _mm512_loadu_si512(table + 64 * (khi / B));
                for (int i = 0; i < S; ++i) {
                  acc[i][t] = _mm512_dpbusd_epi32(acc[i][t], mult[klo % B], _mm512_permutexvar_epi8(lo[i], tlo));
                  acc[i][t] = _mm512_dpbusd_epi32(acc[i][t], mult[khi % B], _mm512_permutexvar_epi8(hi[i], thi));
                }
                if constexpr (TERMS == 2) {
                  const int8_t* residual = tokens[t].residual + chunk0;
                  const __m512i rlo = _mm512_loadu_si512(residual + 64 * (klo / B));
                  const __m512i rhi = _mm512_loadu_si512(residual + 64 * (khi / B));
                  for (int i = 0; i < S; ++i) {
                    acc2[i][t] = _mm512_dpbusd_epi32(acc2[i][t], mult[klo % B], _mm512_permutexvar_epi8(lo[i], rlo));
                    acc2[i][t] = _mm512_dpbusd_epi32(acc2[i][t], mult[khi % B], _mm512_permutexvar_epi8(hi[i], rhi));
                  }
                }
              }
            }(),
            ...);
      }(std::make_integer_sequence<int, B>{});
    }
    for (int i = 0; i < S; ++i) {
      const uint8_t* tg = tiles[i] + grp * tg_bytes;
      const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tg)));
      const __m512 z = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tg + 32)));
      const __m512 cz = _mm512_sub_ps(half_range, z);
      for (int t = 0; t < NT; ++t) {
        __m512i sum_i = acc[i][t];
        if constexpr (TERMS == 2)
          sum_i = _mm512_add_epi32(_mm512_mullo_epi32(sum_i, _mm512_set1_epi32(kLutResidualSteps)), acc2[i][t]);
        const __m512 v = _mm512_fmadd_ps(cz, _mm512_set1_ps(tokens[t].sum[grp]),
                                         _mm512_mul_ps(_mm512_cvtepi32_ps(sum_i), _mm512_set1_ps(tokens[t].scale[grp])));
        result[i][t] = _mm512_fmadd_ps(s, v, result[i][t]);
      }
    }
  }
  for (int i = 0; i < S; ++i)
    for (int t = 0; t < NT; ++t) _mm512_storeu_ps(outs[i] + t * kBlTileRows, result[i][t]);
}

template <int B, int TERMS>
void tile_tokens(const BlGroupShape& shape, int64_t cols, const uint8_t* tile, const LutTables* tokens, int nt,
                 float* out) {
  const uint8_t* const tiles[1] = {tile};
  float* const outs[1] = {out};
  switch (nt) {
    case 1: return tiles_avx512<B, 1, 1, TERMS>(shape, cols, tiles, tokens, outs);
    case 2: return tiles_avx512<B, 2, 1, TERMS>(shape, cols, tiles, tokens, outs);
    case 3: return tiles_avx512<B, 3, 1, TERMS>(shape, cols, tiles, tokens, outs);
    default: return tiles_avx512<B, 4, 1, TERMS>(shape, cols, tiles, tokens, outs);
  }
}

// One or two table terms, as the tables were built (residual null or not).
template <int B>
void tile_dispatch(const BlGroupShape& shape, int64_t cols, const uint8_t* tile, const LutTables* tokens, int nt,
                   float* out) {
  if (tokens[0].residual) return tile_tokens<B, 2>(shape, cols, tile, tokens, nt, out);
  tile_tokens<B, 1>(shape, cols, tile, tokens, nt, out);
}

// Tiles a decode call takes at B bits (lut_matmul_kernels.h): each is a stream of lines, and on
// AMD Zen 4 (2 cores) a core's share of the DRAM read grows with the streams in flight. Eight at
// 3 and 4 bits, four at 1 and 2 (synthetic llama3-1b, where the VM read ~65 GB/s: 8 against 4
// streams gave bl4g128 73.3 against 67.7-68.5 tok/s and bl2g128 125-128 against 119.5-121.5, but
// bl2g128 91.4-93.7 against 94.7-95.8 where it read ~36 GB/s; one and two streams: 70 and 93
// against 120 at bl2g128, docs/cpu_kernels.md "Twenty-first session"), two above 4 bits (more
// nibble planes per tile). With two table terms (twice the sums) four at most.
template <int B>
constexpr int kDecodeTiles = B <= 2 ? 4 : B <= 4 ? 8 : 2;
template <int B>
constexpr int kDecodeTilesTwoTerms = std::min(kDecodeTiles<B>, 4);
static_assert(kDecodeTiles<3> <= kLutMaxDecodeTiles, "the driver's arrays hold kLutMaxDecodeTiles tiles");

template <int B>
void tile_decode(const BlGroupShape& shape, int64_t cols, const uint8_t* const* tiles, const LutTables* token,
                 float* const* outs) {
  if (token->residual) {
    for (int i = 0; i < kDecodeTiles<B>; i += kDecodeTilesTwoTerms<B>)
      tiles_avx512<B, 1, kDecodeTilesTwoTerms<B>, 2>(shape, cols, tiles + i, token, outs + i);
    return;
  }
  tiles_avx512<B, 1, kDecodeTiles<B>, 1>(shape, cols, tiles, token, outs);
}

template <int B>
constexpr LutKernels kernels_of() {
  return LutKernels{build_avx512, tile_dispatch<B>, tile_decode<B>, kDecodeTiles<B>};
}

static_assert(kLutTokens == 4, "tile_dispatch covers 1..4 tokens");

}  // namespace

const LutKernels* lut_kernels_avx512(const BlGroupShape& shape) {
  const CpuFeatures& f = cpu_features();
  if (!f.has_avx512bw || !f.has_avx512vnni || !f.has_avx512vbmi) return nullptr;
  static const std::array<LutKernels, 8> kernels = {kernels_of<1>(), kernels_of<2>(), kernels_of<3>(), kernels_of<4>(),
                                                     kernels_of<5>(), kernels_of<6>(), kernels_of<7>(), kernels_of<8>()};
  return &kernels[static_cast<size_t>(shape.bits - 1)];
}

}  // namespace bl::cpu
