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
template <int BITS, int64_t PLANE_BYTES>
inline __m256i codes32(const uint8_t* planes, int chunk) {
  const uint8_t* p = planes + chunk * 4;
  __mmask32 m;
  std::memcpy(&m, p, 4);
  __m256i q = _mm256_maskz_mov_epi8(m, _mm256_set1_epi8(1));
#pragma GCC unroll 8
  for (int k = 1; k < BITS; ++k) {
    std::memcpy(&m, p + k * PLANE_BYTES, 4);
    q = _mm256_mask_add_epi8(q, m, q, _mm256_set1_epi8(static_cast<char>(1 << k)));
  }
  return q;
}

// The same for 64 weights [64 * chunk, 64 * chunk + 64) (group sizes 64 and 128).
template <int BITS, int64_t PLANE_BYTES>
inline __m512i codes64(const uint8_t* planes, int chunk) {
  const uint8_t* p = planes + chunk * 8;
  __mmask64 m;
  std::memcpy(&m, p, 8);
  __m512i q = _mm512_maskz_mov_epi8(m, _mm512_set1_epi8(1));
#pragma GCC unroll 8
  for (int k = 1; k < BITS; ++k) {
    std::memcpy(&m, p + k * PLANE_BYTES, 8);
    q = _mm512_mask_add_epi8(q, m, q, _mm512_set1_epi8(static_cast<char>(1 << k)));
  }
  return q;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Once per row. Through memory: the 512-bit shuffle / reduce intrinsics are built on
// _mm512_undefined_ps, which trips GCC 12's -Wuninitialized (so does _mm512_cvtepi32_ps,
// hence its maskz form below).
inline float hsum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float s = 0;
  for (float f : lanes) s += f;
  return s;
}

// Group sizes 64 and 128: 64 weights per vector (half the instructions of 32 per vector; the
// loop is bound by instruction throughput, not by the 512-bit units).
template <int BITS, int G, int NC, bool FromCodes>
void dot_tile_zmm(int64_t cols, const uint8_t* w_row, const uint8_t* codes, const BitplaneActs* acts, float* out) {
  constexpr BlGroupShape shape{BITS, G};
  constexpr int chunks = G / 64;
  __m512 facc[NC];
  float zterm[NC];
  for (int c = 0; c < NC; ++c) facc[c] = _mm512_setzero_ps(), zterm[c] = 0.0f;
  for (int64_t grp = 0; grp < cols / G; ++grp) {
    const uint8_t* planes = w_row + grp * shape.group_bytes() + 4;
    __m512i acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm512_setzero_si512();
    for (int ch = 0; ch < chunks; ++ch) {
      __m512i q;
      if constexpr (FromCodes) q = _mm512_load_si512(codes + grp * G + ch * 64);
      else q = codes64<BITS, shape.plane_bytes()>(planes, ch);
      for (int c = 0; c < NC; ++c)
        acc[c] = _mm512_dpbusd_epi32(acc[c], q, _mm512_loadu_si512(acts[c].q + grp * G + ch * 64));
    }
    int32_t sz;
    std::memcpy(&sz, planes - 4, 4);
    const __m128 szf = _mm_cvtph_ps(_mm_cvtsi32_si128(sz));
    const float s = _mm_cvtss_f32(szf), z = _mm_cvtss_f32(_mm_movehdup_ps(szf));
    for (int c = 0; c < NC; ++c) {
      const float sd = s * acts[c].d[grp];
      facc[c] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xffff, acc[c]), _mm512_set1_ps(sd), facc[c]);
      zterm[c] += sd * z * static_cast<float>(acts[c].sum[grp]);
    }
  }
  for (int c = 0; c < NC; ++c) out[c] = hsum(facc[c]) - zterm[c];
}

// Group size 32 (or any): 32 weights per vector. Codes come from the planes
// (FromCodes = false) or from an unpacked row.
template <int BITS, int G, int NC, bool FromCodes>
void dot_tile_ymm(int64_t cols, const uint8_t* w_row, const uint8_t* codes,
              const BitplaneActs* acts, float* out) {
  constexpr BlGroupShape shape{BITS, G};
  constexpr int g = G, chunks = G / kChunk;
  __m256 facc[NC];
  float zterm[NC];
  for (int c = 0; c < NC; ++c) facc[c] = _mm256_setzero_ps(), zterm[c] = 0.0f;
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    const uint8_t* planes = w_row + grp * shape.group_bytes() + 4;
    __m256i acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_si256();
    for (int ch = 0; ch < chunks; ++ch) {
      const __m256i q = FromCodes ? _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + grp * g + ch * kChunk))
                                  : codes32<BITS, shape.plane_bytes()>(planes, ch);
      for (int c = 0; c < NC; ++c) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acts[c].q + grp * g + ch * kChunk));
        acc[c] = _mm256_dpbusd_epi32(acc[c], q, a);
      }
    }
    // s and z with one F16C conversion (the scalar fp16 decode costs as much as the planes).
    int32_t sz;
    std::memcpy(&sz, planes - 4, 4);
    const __m128 szf = _mm_cvtph_ps(_mm_cvtsi32_si128(sz));
    const float s = _mm_cvtss_f32(szf), z = _mm_cvtss_f32(_mm_movehdup_ps(szf));
    for (int c = 0; c < NC; ++c) {
      const float sd = s * acts[c].d[grp];
      facc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[c]), _mm256_set1_ps(sd), facc[c]);
      zterm[c] += sd * z * static_cast<float>(acts[c].sum[grp]);
    }
  }
  for (int c = 0; c < NC; ++c) out[c] = hsum(facc[c]) - zterm[c];
}

template <int BITS, int G, int NC, bool FromCodes>
void dot_tile(int64_t cols, const uint8_t* w_row, const uint8_t* codes, const BitplaneActs* acts, float* out) {
  if constexpr (G % 64 == 0) dot_tile_zmm<BITS, G, NC, FromCodes>(cols, w_row, codes, acts, out);
  else dot_tile_ymm<BITS, G, NC, FromCodes>(cols, w_row, codes, acts, out);
}

// nc in [1, kBitplaneTile]: tiles of 2 or 3 columns run the 4-column kernel with the last
// column repeated (their extra outputs are dropped), so only NC = 1 and 4 are instantiated.
template <int BITS, int G, bool FromCodes>
void dot_any(int64_t cols, const uint8_t* w_row, const uint8_t* codes, const BitplaneActs* acts, int nc, float* out) {
  if (nc == 1) return dot_tile<BITS, G, 1, FromCodes>(cols, w_row, codes, acts, out);
  if (nc == kBitplaneTile) return dot_tile<BITS, G, kBitplaneTile, FromCodes>(cols, w_row, codes, acts, out);
  BitplaneActs padded[kBitplaneTile];
  float tile[kBitplaneTile];
  for (int c = 0; c < kBitplaneTile; ++c) padded[c] = acts[c < nc ? c : nc - 1];
  dot_tile<BITS, G, kBitplaneTile, FromCodes>(cols, w_row, codes, padded, tile);
  for (int c = 0; c < nc; ++c) out[c] = tile[c];
}

template <int BITS, int G>
struct ShapeKernels {
  static void dot(const BlGroupShape&, int64_t cols, const uint8_t* w_row, const BitplaneActs* acts, int nc,
                  float* out) {
    dot_any<BITS, G, false>(cols, w_row, nullptr, acts, nc, out);
  }
  static void dot_codes(const BlGroupShape&, int64_t cols, const uint8_t* w_row, const uint8_t* codes,
                        const BitplaneActs* acts, int nc, float* out) {
    dot_any<BITS, G, true>(cols, w_row, codes, acts, nc, out);
  }
  static void unpack(const BlGroupShape&, int64_t cols, const uint8_t* w_row, uint8_t* codes) {
    constexpr BlGroupShape shape{BITS, G};
    for (int64_t grp = 0; grp < cols / G; ++grp) {
      const uint8_t* planes = w_row + grp * shape.group_bytes() + 4;
      for (int ch = 0; ch < G / kChunk; ++ch)
        _mm256_store_si256(reinterpret_cast<__m256i*>(codes + grp * G + ch * kChunk),
                           codes32<BITS, shape.plane_bytes()>(planes, ch));
    }
  }
  static constexpr BitplaneKernels table{dot, unpack, dot_codes, bitplane_quantize_avx2};
};

template <int BITS>
const BitplaneKernels* for_group(int g) {
  switch (g) {
    case 32: return &ShapeKernels<BITS, 32>::table;
    case 64: return &ShapeKernels<BITS, 64>::table;
    case 128: return &ShapeKernels<BITS, 128>::table;
    default: return nullptr;
  }
}

}  // namespace

const BitplaneKernels* bitplane_kernels_avx512(const quant::BlGroupShape& shape) {
  switch (shape.bits) {
    case 1: return for_group<1>(shape.group_size);
    case 2: return for_group<2>(shape.group_size);
    case 3: return for_group<3>(shape.group_size);
    case 4: return for_group<4>(shape.group_size);
    case 5: return for_group<5>(shape.group_size);
    case 6: return for_group<6>(shape.group_size);
    case 7: return for_group<7>(shape.group_size);
    case 8: return for_group<8>(shape.group_size);
    default: return nullptr;
  }
}

}  // namespace bl::cpu
