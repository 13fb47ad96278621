// AVX2 level of lut_matmul (lut_matmul.h). vpshufb looks up 16-entry tables within 128-bit
// lanes, so a nibble register whose lanes belong to several quads (b < 4: a row's dword mixes
// quads) is looked up once per quad and the results merged by masks; then maddubs + madd
// (vpdpbusd's work in two steps) weight each lane by 2^plane and sum a row's 4 lanes in int32.
// Each half of a 64-lane register (rows 0..7, rows 8..15) is one ymm.
#include <immintrin.h>

#include <array>
#include <cstring>
#include <utility>

#include "kernels/cpu/lut_matmul_kernels.h"

namespace bl::cpu {
namespace {

using quant::BlGroupShape;
using quant::kBlTileRows;

// Tokens per pass: two tokens' accumulators (2 x 2 ymm) fit the 16 registers with the rest.
constexpr int kTokensPerPass = 2;

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

// Whether nibble register k of a B-bit tile holds lanes of quad q.
constexpr bool has_quad(int B, int k, int q) {
  for (int i = 0; i < 4; ++i)
    if (lut_lane_quad(B, k, i) == q) return true;
  return false;
}

// The int8 lookups of one nibble half-register idx (values 0..15) of register K in `table` (64 bytes).
template <int B, int K>
inline __m256i lookup(__m256i idx, const int8_t* table, const LaneConstants<B>& lc) {
  __m256i merged = _mm256_setzero_si256();
  [&]<int... Q>(std::integer_sequence<int, Q...>) {
    (
        [&] {
          if constexpr (has_quad(B, K, Q)) {
            const __m256i t = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table + 16 * Q)));
            __m256i v = _mm256_shuffle_epi8(t, idx);
            if constexpr (!(has_quad(B, K, 0) + has_quad(B, K, 1) + has_quad(B, K, 2) + has_quad(B, K, 3) == 1))
              v = _mm256_and_si256(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(lc.owns[K % B][Q].data())));
            merged = _mm256_or_si256(merged, v);
          }
        }(),
        ...);
  }(std::make_integer_sequence<int, 4>{});
  return merged;
}

void build_avx2(const float* x, int64_t cols, int g, int8_t* table, int8_t* residual, float* scale, float* sum) {
  // The scalar builder: it defines the bytes, and this level is the fallback for CPUs without
  // AVX-512, whose speed the targets do not measure.
  lut_kernels_scalar().build(x, cols, g, table, residual, scale, sum);
}

template <int B, int NT, int TERMS>
void tile_avx2(const BlGroupShape& shape, int64_t cols, const uint8_t* tile, const LutTables* tokens, float* out) {
  const int g = shape.group_size, units = g / 32;
  const int64_t groups = cols / g, tg_bytes = shape.tile_group_bytes();
  const LaneConstants<B>& lc = lane_constants<B>();
  const __m256i low4 = _mm256_set1_epi8(0x0F), ones16 = _mm256_set1_epi16(1);
  const __m256 half_range = _mm256_set1_ps(0.5f * static_cast<float>((1 << B) - 1));
  __m256 result[NT][2];
  for (int t = 0; t < NT; ++t) result[t][0] = result[t][1] = _mm256_setzero_ps();

  for (int64_t grp = 0; grp < groups; ++grp) {
    const uint8_t* tg = tile + grp * tg_bytes;
    __m256i acc[NT][2], acc2[NT][2];  // acc2: the residual table's sums (TERMS == 2)
    for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = acc2[t][0] = acc2[t][1] = _mm256_setzero_si256();
    for (int u = 0; u < units; ++u) {
      const uint8_t* lines = tg + 64 + 64 * B * u;
      const int64_t chunk0 = (grp * shape.chunks() + 2 * u) * 64;
      [&]<int... L>(std::integer_sequence<int, L...>) {
        (
            [&] {
              constexpr int klo = 2 * L, khi = 2 * L + 1;
              const __m256i mlo = _mm256_load_si256(reinterpret_cast<const __m256i*>(lc.mult[klo % B].data()));
              const __m256i mhi = _mm256_load_si256(reinterpret_cast<const __m256i*>(lc.mult[khi % B].data()));
              for (int half = 0; half < 2; ++half) {
                const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lines + 64 * L + 32 * half));
                const __m256i lo = _mm256_and_si256(v, low4);
                const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
                for (int t = 0; t < NT; ++t) {
                  const int8_t* table = tokens[t].table + chunk0;
                  const __m256i plo = _mm256_maddubs_epi16(mlo, lookup<B, klo>(lo, table + 64 * (klo / B), lc));
                  const __m256i phi = _mm256_maddubs_epi16(mhi, lookup<B, khi>(hi, table + 64 * (khi / B), lc));
                  // Summed in int32: two int16 pair sums of 8-bit planes could overflow int16.
                  acc[t][half] = _mm256_add_epi32(acc[t][half], _mm256_add_epi32(_mm256_madd_epi16(plo, ones16),
                                                                                 _mm256_madd_epi16(phi, ones16)));
                  if constexpr (TERMS == 2) {
                    const int8_t* residual = tokens[t].residual + chunk0;
                    const __m256i rlo = _mm256_maddubs_epi16(mlo, lookup<B, klo>(lo, residual + 64 * (klo / B), lc));
                    const __m256i rhi = _mm256_maddubs_epi16(mhi, lookup<B, khi>(hi, residual + 64 * (khi / B), lc));
                    acc2[t][half] = _mm256_add_epi32(acc2[t][half], _mm256_add_epi32(_mm256_madd_epi16(rlo, ones16),
                                                                                     _mm256_madd_epi16(rhi, ones16)));
                  }
                }
              }
            }(),
            ...);
      }(std::make_integer_sequence<int, B>{});
    }
    for (int half = 0; half < 2; ++half) {
      const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tg + 16 * half)));
      const __m256 z = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tg + 32 + 16 * half)));
      const __m256 cz = _mm256_sub_ps(half_range, z);
      for (int t = 0; t < NT; ++t) {
        __m256i sum_i = acc[t][half];
        if constexpr (TERMS == 2)
          sum_i = _mm256_add_epi32(_mm256_mullo_epi32(sum_i, _mm256_set1_epi32(kLutResidualSteps)), acc2[t][half]);
        const __m256 v = _mm256_fmadd_ps(cz, _mm256_set1_ps(tokens[t].sum[grp]),
                                         _mm256_mul_ps(_mm256_cvtepi32_ps(sum_i), _mm256_set1_ps(tokens[t].scale[grp])));
        result[t][half] = _mm256_fmadd_ps(s, v, result[t][half]);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int half = 0; half < 2; ++half) _mm256_storeu_ps(out + t * kBlTileRows + 8 * half, result[t][half]);
}

template <int B>
void tile_dispatch(const BlGroupShape& shape, int64_t cols, const uint8_t* tile, const LutTables* tokens, int nt,
                   float* out) {
  const bool two_terms = tokens[0].residual != nullptr;
  for (int t = 0; t < nt; t += kTokensPerPass) {
    const bool pair = nt - t >= 2;
    float* o = out + t * kBlTileRows;
    if (two_terms)
      pair ? tile_avx2<B, 2, 2>(shape, cols, tile, tokens + t, o) : tile_avx2<B, 1, 2>(shape, cols, tile, tokens + t, o);
    else
      pair ? tile_avx2<B, 2, 1>(shape, cols, tile, tokens + t, o) : tile_avx2<B, 1, 1>(shape, cols, tile, tokens + t, o);
  }
}

}  // namespace

const LutKernels* lut_kernels_avx2(const BlGroupShape& shape) {
  static const std::array<LutKernels, 8> kernels = {
      LutKernels{build_avx2, tile_dispatch<1>}, LutKernels{build_avx2, tile_dispatch<2>},
      LutKernels{build_avx2, tile_dispatch<3>}, LutKernels{build_avx2, tile_dispatch<4>},
      LutKernels{build_avx2, tile_dispatch<5>}, LutKernels{build_avx2, tile_dispatch<6>},
      LutKernels{build_avx2, tile_dispatch<7>}, LutKernels{build_avx2, tile_dispatch<8>},
  };
  return &kernels[static_cast<size_t>(shape.bits - 1)];
}

}  // namespace bl::cpu
