// bl<b>g<g> row kernels, AVX-512 level (BW + VL + VNNI, 256-bit vectors): 32 plane bits go
// into a mask register and build 32 u8 codes with b masked byte adds; vpdpbusd multiplies
// them with 32 int8 activations. 256-bit vectors: Zen 4 splits 512-bit ops in two anyway, and
// a 32-weight chunk fits every group size (32, 64, 128).
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/lut_bitplane_kernels.h"

namespace bl::cpu {
namespace {

using quant::BlGroupShape;

constexpr int kChunk = 32;  // weights per vector

// u8 codes of weights [32 * chunk, 32 * chunk + 32) of a group from its b planes.
inline __m256i codes32(const uint8_t* planes, int bits, int64_t plane_bytes, int chunk) {
  const uint8_t* p = planes + chunk * 4;
  __mmask32 m;
  std::memcpy(&m, p, 4);
  __m256i q = _mm256_maskz_mov_epi8(m, _mm256_set1_epi8(1));
  for (int k = 1; k < bits; ++k) {
    std::memcpy(&m, p + k * plane_bytes, 4);
    q = _mm256_mask_add_epi8(q, m, q, _mm256_set1_epi8(static_cast<char>(1 << k)));
  }
  return q;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Shared body: codes come from the planes (FromCodes = false) or from an unpacked row.
template <int NC, bool FromCodes>
void dot_tile(const BlGroupShape& shape, int64_t cols, const uint8_t* w_row, const uint8_t* codes,
              const BitplaneActs* acts, float* out) {
  const int g = shape.group_size;
  const int chunks = g / kChunk;
  __m256 facc[NC];
  float zterm[NC];
  for (int c = 0; c < NC; ++c) facc[c] = _mm256_setzero_ps(), zterm[c] = 0.0f;
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    const uint8_t* planes = w_row + grp * shape.group_bytes() + 4;
    __m256i acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_si256();
    for (int ch = 0; ch < chunks; ++ch) {
      const __m256i q = FromCodes ? _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + grp * g + ch * kChunk))
                                  : codes32(planes, shape.bits, shape.plane_bytes(), ch);
      for (int c = 0; c < NC; ++c) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acts[c].q + grp * g + ch * kChunk));
        acc[c] = _mm256_dpbusd_epi32(acc[c], q, a);
      }
    }
    float s, z;
    bitplane_group_scale(shape, w_row, grp, s, z);
    for (int c = 0; c < NC; ++c) {
      const float sd = s * acts[c].d[grp];
      facc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[c]), _mm256_set1_ps(sd), facc[c]);
      zterm[c] += sd * z * static_cast<float>(acts[c].sum[grp]);
    }
  }
  for (int c = 0; c < NC; ++c) out[c] = hsum(facc[c]) - zterm[c];
}

template <bool FromCodes>
void dot_any(const BlGroupShape& shape, int64_t cols, const uint8_t* w_row, const uint8_t* codes,
             const BitplaneActs* acts, int nc, float* out) {
  switch (nc) {
    case 1: return dot_tile<1, FromCodes>(shape, cols, w_row, codes, acts, out);
    case 2: return dot_tile<2, FromCodes>(shape, cols, w_row, codes, acts, out);
    case 3: return dot_tile<3, FromCodes>(shape, cols, w_row, codes, acts, out);
    default: return dot_tile<4, FromCodes>(shape, cols, w_row, codes, acts, out);
  }
}

void dot(const BlGroupShape& shape, int64_t cols, const uint8_t* w_row, const BitplaneActs* acts, int nc, float* out) {
  dot_any<false>(shape, cols, w_row, nullptr, acts, nc, out);
}

void dot_codes(const BlGroupShape& shape, int64_t cols, const uint8_t* w_row, const uint8_t* codes,
               const BitplaneActs* acts, int nc, float* out) {
  dot_any<true>(shape, cols, w_row, codes, acts, nc, out);
}

void unpack(const BlGroupShape& shape, int64_t cols, const uint8_t* w_row, uint8_t* codes) {
  const int g = shape.group_size;
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    const uint8_t* planes = w_row + grp * shape.group_bytes() + 4;
    for (int ch = 0; ch < g / kChunk; ++ch)
      _mm256_store_si256(reinterpret_cast<__m256i*>(codes + grp * g + ch * kChunk),
                         codes32(planes, shape.bits, shape.plane_bytes(), ch));
  }
}

}  // namespace

const BitplaneKernels* bitplane_kernels_avx512() {
  static const BitplaneKernels k{dot, unpack, dot_codes};
  return &k;
}

}  // namespace bl::cpu
