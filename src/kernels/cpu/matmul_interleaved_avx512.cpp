// AVX-512 VNNI kernels of the tiles16 matmul (matmul_interleaved.h): one zmm holds 4 weight
// bytes of each of 16 rows; vpdpbusd multiplies them with 4 activations broadcast to every
// lane, so a block of 32 weights x 16 rows is 8 vpdpbusd per activation column (Q4_K: the
// same per 32-weight sub-block, tile_tokens_q4_k).
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on unmasked intrinsics (see dot_avx512.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include <immintrin.h>

#include <cstring>

#include "kernels/cpu/interleaved_rows.h"
#include "kernels/cpu/matmul_interleaved.h"
#include "quant/blocks.h"

namespace bl::cpu {
namespace {

// Same arithmetic as quantize_token_scalar, 16 lanes at a time (the residual may differ in the
// last bit where the compiler fuses d * q into the subtraction).
void quantize_token_avx512(const float* x, DType type, const TokenActsLayout& layout, void* token) {
  const float factor = interleaved_offset_factor(type);
  float* offset = layout.offset(token);
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
  for (int64_t b = 0; b < layout.nb; ++b) {
    __m512 r0 = _mm512_loadu_ps(x + b * kQK), r1 = _mm512_loadu_ps(x + b * kQK + 16);
    float sum_s = 0.0f;
    for (int term = 0; term < layout.terms; ++term) {
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(r0, abs_mask), _mm512_and_ps(r1, abs_mask)));
      const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
      // vcvtps2dq rounds to nearest even (the default MXCSR mode).
      const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(r0, _mm512_set1_ps(id)));
      const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(r1, _mm512_set1_ps(id)));
      int8_t* q = layout.q(token, term) + b * kQK;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm512_cvtepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm512_cvtepi32_epi8(q1));
      const int sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
      const __m512 vd = _mm512_set1_ps(d);
      r0 = _mm512_sub_ps(r0, _mm512_mul_ps(vd, _mm512_cvtepi32_ps(q0)));
      r1 = _mm512_sub_ps(r1, _mm512_mul_ps(vd, _mm512_cvtepi32_ps(q1)));
      layout.d(token, term)[b] = d;
      sum_s += d * static_cast<float>(sum);
    }
    offset[b] = factor * sum_s;
  }
}

inline __m512i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return _mm512_set1_epi32(v);
}

// Software prefetch into L2, every 64-byte line of quants this far ahead. On the dev box,
// prefetching each line rather than one per block took Q4_0 GEMV from ~70 to ~85 % of the read
// bandwidth (4 KiB pages); with huge pages 1-4 KiB ahead measured alike within the noise.
constexpr int kPrefetchAhead = 2048;

// The line `ahead` bytes into one of a tile's streams (its quants, or its scales: `bytes` from
// `start`), running on into the same stream of the next tile, which is the one this thread reads
// next: without that a tile's first 2 KiB came cold, an eighth of a tile at 2048 columns (the
// whole-model Q4_0 decode went from ~81 to ~86 % of the read bandwidth with it, Q4_K from ~77 to
// ~87 %; docs/cpu_kernels.md).
inline const char* ahead_in_stream(const uint8_t* tile, size_t start, size_t bytes, size_t tile_bytes,
                                   size_t ahead) {
  return reinterpret_cast<const char*>(tile) + start + ahead + (ahead >= bytes ? tile_bytes - bytes : 0);
}

// The quantized activations of NT tokens from t0: column c = t * kTerms + term.
template <int NT, int kTerms>
struct TokenColumns {
  const int8_t* q[NT * kTerms];
  const float* d[NT * kTerms];
  const float* offset[NT];

  TokenColumns(const InterleavedMatmul& m, int64_t t0) {
    for (int t = 0; t < NT; ++t) {
      void* token = const_cast<char*>(m.acts) + m.layout.token_bytes * static_cast<size_t>(t0 + t);
      offset[t] = m.layout.offset(token);
      for (int term = 0; term < kTerms; ++term) {
        q[t * kTerms + term] = m.layout.q(token, term);
        d[t * kTerms + term] = m.layout.d(token, term);
      }
    }
  }
};

// out[t0 + t] rows of each tile (+ bias) from the kernels' accumulators.
template <int NT, int kTiles>
inline void store_tiles(const InterleavedMatmul& m, const int64_t (&tiles)[kTiles], int64_t t0,
                        const __m512 (&out)[kTiles][NT]) {
  for (int i = 0; i < kTiles; ++i) {
    const __m512 bias = m.bias ? _mm512_loadu_ps(m.bias + tiles[i] * kTileRows) : _mm512_setzero_ps();
    for (int t = 0; t < NT; ++t)
      _mm512_storeu_ps(m.out + (t0 + t) * m.rows + tiles[i] * kTileRows, _mm512_add_ps(out[i][t], bias));
  }
}

// Decode multiplies this many tiles at once, one from each of as many equal parts of the
// thread's range: independent weight streams (two a tile: quants and scales) keep more DRAM
// reads in flight per core. Alternating A/B on the dev VM against two tiles (three series):
// q4_0 +0.6 to +1.1 points, q8_0 +0.8 to +4.2, q4_k the same; four tiles: q4_0 -1
// (docs/cpu_kernels.md).
constexpr int kDecodeTiles = 3;

// out rows of kTiles tiles for NT tokens from t0, kTerms activation terms per token.
template <DType kType, int NT, int kTerms, int kTiles>
void tile_tokens(const InterleavedMatmul& m, const TileOffsets& o, const int64_t (&tiles)[kTiles], int64_t t0) {
  constexpr int NC = NT * kTerms;
  const int64_t nb = m.cols / kQK;
  const uint8_t* base[kTiles];
  const uint16_t* d[kTiles];
  const uint16_t* mins[kTiles];
  for (int i = 0; i < kTiles; ++i) {
    base[i] = m.w + o.tile_bytes * static_cast<size_t>(tiles[i]);
    d[i] = reinterpret_cast<const uint16_t*>(base[i] + o.d_offset);
    mins[i] = reinterpret_cast<const uint16_t*>(base[i] + o.m_offset);
  }
  const TokenColumns<NT, kTerms> y(m, t0);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512 out[kTiles][NT];
  for (int i = 0; i < kTiles; ++i)
    for (int t = 0; t < NT; ++t) out[i][t] = _mm512_setzero_ps();
  constexpr size_t d_bytes_per_block = kTileRows * sizeof(uint16_t);
  const size_t d_bytes = d_bytes_per_block * static_cast<size_t>(nb);

  for (int64_t b = 0; b < nb; ++b) {
    const size_t block = static_cast<size_t>(b);
    for (int i = 0; i < kTiles; ++i) {
      const uint8_t* q = base[i] + o.quant_bytes * block;
      const char* quants_ahead =
          ahead_in_stream(base[i], 0, o.d_offset, o.tile_bytes, o.quant_bytes * block + kPrefetchAhead);
      for (int line = 0; line < (kType == DType::Q8_0 ? 8 : 4); ++line)
        _mm_prefetch(quants_ahead + 64 * line, _MM_HINT_T1);
      // A line of scales (and of Q4_1's mins) serves two blocks.
      const size_t scales_ahead = d_bytes_per_block * block + kPrefetchAhead / 8;
      if (b % 2 == 0)
        _mm_prefetch(ahead_in_stream(base[i], o.d_offset, d_bytes, o.tile_bytes, scales_ahead), _MM_HINT_T1);
      if (kType == DType::Q4_1 && b % 2 == 1)
        _mm_prefetch(ahead_in_stream(base[i], o.m_offset, d_bytes, o.tile_bytes, scales_ahead), _MM_HINT_T1);
      __m512i acc[NC];
      for (int c = 0; c < NC; ++c) acc[c] = _mm512_setzero_si512();
      if constexpr (kType == DType::Q8_0) {
        for (int g = 0; g < 8; ++g) {
          const __m512i w = _mm512_loadu_si512(q + 64 * g);
          for (int c = 0; c < NC; ++c) acc[c] = _mm512_dpbusd_epi32(acc[c], w, broadcast4(y.q[c] + b * kQK + 4 * g));
        }
      } else {
        for (int g = 0; g < 4; ++g) {
          const __m512i v = _mm512_loadu_si512(q + 64 * g);
          const __m512i lo = _mm512_and_si512(v, low4);                          // weights 4g .. 4g+3
          const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);  // weights 16+4g ..
          for (int c = 0; c < NC; ++c) {
            acc[c] = _mm512_dpbusd_epi32(acc[c], lo, broadcast4(y.q[c] + b * kQK + 4 * g));
            acc[c] = _mm512_dpbusd_epi32(acc[c], hi, broadcast4(y.q[c] + b * kQK + 16 + 4 * g));
          }
        }
      }
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(d[i] + b * kTileRows)));
      for (int t = 0; t < NT; ++t) {
        const int c = t * kTerms;
        __m512 s;
        if constexpr (kType == DType::Q4_1) {
          s = _mm512_mul_ps(_mm512_cvtepi32_ps(acc[c]), _mm512_set1_ps(y.d[c][b]));
        } else {
          s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[c]), _mm512_set1_ps(y.d[c][b]), _mm512_set1_ps(y.offset[t][b]));
        }
        if constexpr (kTerms == 2) s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[c + 1]), _mm512_set1_ps(y.d[c + 1][b]), s);
        out[i][t] = _mm512_fmadd_ps(dw, s, out[i][t]);
      }
      if constexpr (kType == DType::Q4_1) {
        const __m512 mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(mins[i] + b * kTileRows)));
        for (int t = 0; t < NT; ++t) out[i][t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(y.offset[t][b]), out[i][t]);
      }
    }
  }
  store_tiles<NT, kTiles>(m, tiles, t0, out);
}

// The 6-bit scale and min of sub-block `sub` (0..7) of 16 rows as fp32: get_scale_min_k4 on
// the byte planes of a Q4_K header (planes[k] = byte k of the 16 rows' packed scales).
inline void q4_k_scale_min(const uint8_t* planes, int sub, __m512& scale, __m512& min) {
  auto plane = [&](int k) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(planes + 16 * k)); };
  const __m128i low6 = _mm_set1_epi8(63), low4 = _mm_set1_epi8(15), low2 = _mm_set1_epi8(3);
  __m128i sc, mn;
  if (sub < 4) {
    sc = _mm_and_si128(plane(sub), low6);
    mn = _mm_and_si128(plane(sub + 4), low6);
  } else {  // low 4 bits in byte sub + 4, high 2 bits in the top of bytes sub - 4 (scale), sub (min)
    const __m128i packed = plane(sub + 4);
    const __m128i scale_top = _mm_and_si128(_mm_srli_epi16(plane(sub - 4), 6), low2);
    const __m128i min_top = _mm_and_si128(_mm_srli_epi16(plane(sub), 6), low2);
    sc = _mm_or_si128(_mm_and_si128(packed, low4), _mm_slli_epi16(scale_top, 4));
    mn = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(packed, 4), low4), _mm_slli_epi16(min_top, 4));
  }
  scale = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(sc));
  min = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(mn));
}

// Q4_K rows of kTiles tiles for NT tokens (interleaved_rows.h): per 64-weight chunk, 8 groups
// give the int32 sums of sub-blocks 2j (low nibbles) and 2j+1 (high); each is scaled by the
// activations' block scale and the sub-block's 6-bit scale (and its min by the activations'
// block sum), and d / dmin apply once per super-block.
template <int NT, int kTerms, int kTiles>
void tile_tokens_q4_k(const InterleavedMatmul& m, const TileOffsets& o, const int64_t (&tiles)[kTiles], int64_t t0) {
  constexpr int NC = NT * kTerms;
  const int64_t nbk = m.cols / kQKK;
  const uint8_t* base[kTiles];
  for (int i = 0; i < kTiles; ++i) base[i] = m.w + o.tile_bytes * static_cast<size_t>(tiles[i]);
  const TokenColumns<NT, kTerms> y(m, t0);
  const __m512i low4 = _mm512_set1_epi8(0x0F);
  __m512 out[kTiles][NT];
  for (int i = 0; i < kTiles; ++i)
    for (int t = 0; t < NT; ++t) out[i][t] = _mm512_setzero_ps();
  const size_t headers_bytes = kQ4KHeaderBytes * static_cast<size_t>(nbk);

  for (int64_t b = 0; b < nbk; ++b) {
    for (int i = 0; i < kTiles; ++i) {
      const uint8_t* q = base[i] + o.quant_bytes * static_cast<size_t>(b);
      const uint8_t* header = base[i] + o.d_offset + kQ4KHeaderBytes * static_cast<size_t>(b);
      const size_t two_headers_on = kQ4KHeaderBytes * static_cast<size_t>(b + 2);
      const char* header_ahead =
          ahead_in_stream(base[i], o.d_offset, headers_bytes, o.tile_bytes, two_headers_on);
      for (int line = 0; line < 4; ++line) _mm_prefetch(header_ahead + 64 * line, _MM_HINT_T1);
      __m512 total[NT], total_min[NT];
      for (int t = 0; t < NT; ++t) total[t] = total_min[t] = _mm512_setzero_ps();
      for (int j = 0; j < 4; ++j) {
        const uint8_t* chunk = q + 512 * j;
        const size_t chunk_at = o.quant_bytes * static_cast<size_t>(b) + 512 * j;
        const char* chunk_ahead =
            ahead_in_stream(base[i], 0, o.d_offset, o.tile_bytes, chunk_at + kPrefetchAhead);
        for (int line = 0; line < 8; ++line) _mm_prefetch(chunk_ahead + 64 * line, _MM_HINT_T1);
        __m512i acc_lo[NC], acc_hi[NC];
        for (int c = 0; c < NC; ++c) acc_lo[c] = acc_hi[c] = _mm512_setzero_si512();
        for (int g = 0; g < 8; ++g) {
          const __m512i v = _mm512_loadu_si512(chunk + 64 * g);
          const __m512i lo = _mm512_and_si512(v, low4);                          // sub-block 2j
          const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);  // sub-block 2j+1
          for (int c = 0; c < NC; ++c) {
            const int8_t* x = y.q[c] + b * kQKK + 64 * j + 4 * g;
            acc_lo[c] = _mm512_dpbusd_epi32(acc_lo[c], lo, broadcast4(x));
            acc_hi[c] = _mm512_dpbusd_epi32(acc_hi[c], hi, broadcast4(x + 32));
          }
        }
        __m512 sc0, mn0, sc1, mn1;
        q4_k_scale_min(header + 64, 2 * j, sc0, mn0);
        q4_k_scale_min(header + 64, 2 * j + 1, sc1, mn1);
        const int64_t blk0 = b * 8 + 2 * j, blk1 = blk0 + 1;  // 32-element activation blocks
        for (int t = 0; t < NT; ++t) {
          const int c = t * kTerms;
          __m512 x0 = _mm512_mul_ps(_mm512_cvtepi32_ps(acc_lo[c]), _mm512_set1_ps(y.d[c][blk0]));
          __m512 x1 = _mm512_mul_ps(_mm512_cvtepi32_ps(acc_hi[c]), _mm512_set1_ps(y.d[c][blk1]));
          if constexpr (kTerms == 2) {
            x0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc_lo[c + 1]), _mm512_set1_ps(y.d[c + 1][blk0]), x0);
            x1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc_hi[c + 1]), _mm512_set1_ps(y.d[c + 1][blk1]), x1);
          }
          total[t] = _mm512_fmadd_ps(sc1, x1, _mm512_fmadd_ps(sc0, x0, total[t]));
          total_min[t] = _mm512_fmadd_ps(mn1, _mm512_set1_ps(y.offset[t][blk1]),
                                         _mm512_fmadd_ps(mn0, _mm512_set1_ps(y.offset[t][blk0]), total_min[t]));
        }
      }
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(header)));
      const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(header + 32)));
      for (int t = 0; t < NT; ++t)
        out[i][t] = _mm512_fnmadd_ps(dmin, total_min[t], _mm512_fmadd_ps(d, total[t], out[i][t]));
    }
  }
  store_tiles<NT, kTiles>(m, tiles, t0, out);
}

template <DType kType, int NT, int kTerms, int kTiles>
void tile_dispatch(const InterleavedMatmul& m, const TileOffsets& o, const int64_t (&tiles)[kTiles], int64_t t0) {
  if constexpr (kType == DType::Q4_K) {
    tile_tokens_q4_k<NT, kTerms, kTiles>(m, o, tiles, t0);
  } else {
    tile_tokens<kType, NT, kTerms, kTiles>(m, o, tiles, t0);
  }
}

// Up to 8 activation columns per pass over a tile (4 tokens with two terms): 8 int32
// accumulators, NT fp32 ones and the unpacked weights fit the 32 zmm registers.
template <DType kType, int kTerms>
void tiles_for(const InterleavedMatmul& m, int64_t tile0, int64_t tile1, int64_t t0, int64_t t1) {
  // Q4_K keeps two int32 accumulators per column: at most 4 columns.
  constexpr int kMaxTokens = (kType == DType::Q4_K ? 4 : 8) / kTerms;
  const TileOffsets o = tile_offsets(kType, m.cols / dtype_info(kType)->block_elems);
  if (t1 - t0 == 1) {  // decode: tile i of each of kDecodeTiles equal parts of the range together
    const int64_t part = (tile1 - tile0) / kDecodeTiles;
    for (int64_t i = 0; i < part; ++i) {
      int64_t group[kDecodeTiles];
      for (int s = 0; s < kDecodeTiles; ++s) group[s] = tile0 + s * part + i;
      tile_dispatch<kType, 1, kTerms, kDecodeTiles>(m, o, group, t0);
    }
    int64_t tile = tile0 + kDecodeTiles * part;  // left over: fewer than kDecodeTiles
    for (; tile + 2 <= tile1; tile += 2) {
      const int64_t pair[2] = {tile, tile + 1};
      tile_dispatch<kType, 1, kTerms, 2>(m, o, pair, t0);
    }
    if (tile < tile1) {
      const int64_t last[1] = {tile};
      tile_dispatch<kType, 1, kTerms, 1>(m, o, last, t0);
    }
    return;
  }
  for (int64_t tile = tile0; tile < tile1; ++tile) {
    const int64_t one[1] = {tile};
    int64_t t = t0;
    for (; t + kMaxTokens <= t1; t += kMaxTokens) tile_dispatch<kType, kMaxTokens, kTerms, 1>(m, o, one, t);
    for (; t + 2 <= t1; t += 2) tile_dispatch<kType, 2, kTerms, 1>(m, o, one, t);
    if (t < t1) tile_dispatch<kType, 1, kTerms, 1>(m, o, one, t);
  }
}

template <DType kType>
void tiles_by_terms(const InterleavedMatmul& m, int64_t tile0, int64_t tile1, int64_t t0, int64_t t1) {
  if (m.layout.terms == 2) return tiles_for<kType, 2>(m, tile0, tile1, t0, t1);
  tiles_for<kType, 1>(m, tile0, tile1, t0, t1);
}

void tiles_avx512(const InterleavedMatmul& m, int64_t tile0, int64_t tile1, int64_t t0, int64_t t1) {
  switch (m.type) {
    case DType::Q4_0: return tiles_by_terms<DType::Q4_0>(m, tile0, tile1, t0, t1);
    case DType::Q4_1: return tiles_by_terms<DType::Q4_1>(m, tile0, tile1, t0, t1);
    case DType::Q4_K: return tiles_by_terms<DType::Q4_K>(m, tile0, tile1, t0, t1);
    default: return tiles_by_terms<DType::Q8_0>(m, tile0, tile1, t0, t1);
  }
}

}  // namespace

const InterleavedKernels* interleaved_kernels_avx512() {
  static constexpr InterleavedKernels kernels{quantize_token_avx512, tiles_avx512};
  return cpu_features().has_avx512vnni && isa_supported(Isa::avx512) ? &kernels : nullptr;
}

}  // namespace bl::cpu
