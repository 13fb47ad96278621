// bl<b>g<g> row kernels, AVX2 level: 32 plane bits are expanded to 32 bytes (broadcast, byte
// shuffle, and, compare: 0xFF where the bit is set) and added into u8 codes; maddubs + madd
// multiply them with 32 int8 activations. maddubs sums two u8 x s8 products into a saturating
// int16, exact for codes <= 127 (2 * 127 * 127 < 2^15), so at 8 bits the top plane is
// multiplied on its own and shifted by 7.
#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/lut_bitplane_kernels.h"

namespace bl::cpu {
namespace {

using quant::BlGroupShape;

constexpr int kChunk = 32;  // weights per vector

// 0xFF in byte j where bit j of the 32 plane bits at p is set.
inline __m256i expand_bits(const uint8_t* p) {
  int32_t bits;
  std::memcpy(&bits, p, 4);
  // Lane 0 takes plane bytes 0 and 1, lane 1 bytes 2 and 3, each byte repeated 8 times.
  const __m256i rep = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                       2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i sel = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(bits), rep), sel);
  return _mm256_cmpeq_epi8(v, sel);
}

// u8 codes of planes [0, bits) for weights [32 * chunk, 32 * chunk + 32) of a group.
template <int BITS, int64_t PLANE_BYTES>
inline __m256i codes32(const uint8_t* planes, int chunk) {
  const uint8_t* p = planes + chunk * 4;
  __m256i q = _mm256_sub_epi8(_mm256_setzero_si256(), expand_bits(p));  // 0xFF -> 1
#pragma GCC unroll 8
  for (int k = 1; k < BITS; ++k)
    q = _mm256_add_epi8(q, _mm256_and_si256(expand_bits(p + k * PLANE_BYTES), _mm256_set1_epi8(static_cast<char>(1 << k))));
  return q;
}

// int32 partial sums of q (u8, <= 127) times a (s8).
inline __m256i dot_u7s8(__m256i q, __m256i a) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(q, a), _mm256_set1_epi16(1));
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The scalar quantizer's bytes, 8 floats at a time (cvtps_epi32 rounds to nearest even under
// the default MXCSR, as nearbyint does).
void quantize_acts(const float* x, int64_t cols, int g, int8_t* q, float* d, int32_t* sum) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    const float* xg = x + grp * g;
    __m256 vmax = _mm256_setzero_ps();
    for (int j = 0; j < g; j += 8) vmax = _mm256_max_ps(vmax, _mm256_and_ps(_mm256_loadu_ps(xg + j), abs_mask));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    const float amax = _mm_cvtss_f32(m);
    const __m256 inv = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
    __m256i vsum = _mm256_setzero_si256();
    for (int j = 0; j < g; j += 32) {
      __m256i v[4];
      for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xg + j + 8 * i), inv));
        vsum = _mm256_add_epi32(vsum, v[i]);
      }
      // packs interleave the 128-bit lanes; the permute puts the 8 dwords back in order.
      const __m256i p8 = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + grp * g + j),
                          _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    }
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(vsum), _mm256_extracti128_si256(vsum, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
    d[grp] = amax / 127.0f;
    sum[grp] = _mm_cvtsi128_si32(s4);
  }
}

template <int BITS, int G, int NC, bool FromCodes>
void dot_tile(int64_t cols, const uint8_t* w_row, const uint8_t* codes,
              const BitplaneActs* acts, float* out) {
  constexpr BlGroupShape shape{BITS, G};
  constexpr int g = G, chunks = G / kChunk;
  // Codes above 127 (8 bits) split into the low 7 planes and the top plane (0/1, times 128).
  constexpr int low_bits = BITS < 8 ? BITS : 7;
  constexpr bool top_plane = BITS == 8;
  __m256 facc[NC];
  float zterm[NC];
  for (int c = 0; c < NC; ++c) facc[c] = _mm256_setzero_ps(), zterm[c] = 0.0f;
  for (int64_t grp = 0; grp < cols / g; ++grp) {
    const uint8_t* planes = w_row + grp * shape.group_bytes() + 4;
    __m256i acc[NC];
    for (int c = 0; c < NC; ++c) acc[c] = _mm256_setzero_si256();
    for (int ch = 0; ch < chunks; ++ch) {
      __m256i q, top = _mm256_setzero_si256();
      if constexpr (FromCodes) {
        q = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + grp * g + ch * kChunk));
        if (top_plane) {
          top = _mm256_and_si256(_mm256_srli_epi16(q, 7), _mm256_set1_epi8(1));
          q = _mm256_and_si256(q, _mm256_set1_epi8(0x7f));
        }
      } else {
        q = codes32<low_bits, shape.plane_bytes()>(planes, ch);
        if (top_plane)
          top = _mm256_sub_epi8(_mm256_setzero_si256(), expand_bits(planes + 7 * shape.plane_bytes() + ch * 4));
      }
      for (int c = 0; c < NC; ++c) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acts[c].q + grp * g + ch * kChunk));
        acc[c] = _mm256_add_epi32(acc[c], dot_u7s8(q, a));
        if (top_plane) acc[c] = _mm256_add_epi32(acc[c], _mm256_slli_epi32(dot_u7s8(top, a), 7));
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
  static constexpr BitplaneKernels table{dot, unpack, dot_codes, quantize_acts};
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

void bitplane_quantize_avx2(const float* x, int64_t cols, int g, int8_t* q, float* d, int32_t* sum) {
  quantize_acts(x, cols, g, q, d, sum);
}

const BitplaneKernels* bitplane_kernels_avx2(const quant::BlGroupShape& shape) {
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
