// attend_span with AVX2 + FMA + F16C: blocks of 8 cache slots.
//
// Same scheme as attention_avx512.cpp with 8-wide vectors: 8 dot products q·k reduced
// together by a transpose-reduction, one online-softmax update per block, o += p_j · v_j with
// 32 dims at a time in registers. AVX2 has no masked 16-bit loads, so the last head_dim % 8
// dims of a row are done in scalar code.
#include <immintrin.h>

#include <cmath>  // INFINITY
#include <cstdint>

#include "kernels/cpu/attention_span.h"
#include "kernels/cpu/elementwise_simd.h"

namespace bl::cpu {
namespace {

constexpr int kBlock = 8;  // slots per block = floats per vector

template <bool F16>
static inline __m256 load8(const void* base, int64_t i) {
  if constexpr (F16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(base) + i)));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(base) + i);
  }
}

template <bool F16>
static inline float load1(const void* base, int64_t i) {
  if constexpr (F16) {
    return _cvtsh_ss(static_cast<const uint16_t*>(base)[i]);
  } else {
    return static_cast<const float*>(base)[i];
  }
}

// Lane i of the result = sum of the 8 lanes of a[i].
static inline __m256 transpose_reduce8(const __m256* a) {
  __m256 p[4];  // per 128-bit lane: [x0+x2, y0+y2, x1+x3, y1+y3]
  for (int i = 0; i < 4; ++i)
    p[i] = _mm256_add_ps(_mm256_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm256_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  __m256 r[2];  // per 128-bit lane k: sums over that lane of inputs 4i..4i+3
  for (int i = 0; i < 2; ++i) {
    const __m256d lo = _mm256_unpacklo_pd(_mm256_castps_pd(p[2 * i]), _mm256_castps_pd(p[2 * i + 1]));
    const __m256d hi = _mm256_unpackhi_pd(_mm256_castps_pd(p[2 * i]), _mm256_castps_pd(p[2 * i + 1]));
    r[i] = _mm256_add_ps(_mm256_castpd_ps(lo), _mm256_castpd_ps(hi));
  }
  return _mm256_add_ps(_mm256_permute2f128_ps(r[0], r[1], 0x20), _mm256_permute2f128_ps(r[0], r[1], 0x31));
}

// o[0 .. 8 * kVectors) = o * corr + Σ_j p[j] · v[first + j * stride + (0 .. 8 * kVectors)],
// with the kVectors accumulators in registers.
template <bool F16, int kVectors>
static inline void accumulate_v(float* o, __m256 corr, const float* p, int nb, const void* v, int64_t first,
                                int64_t stride) {
  __m256 acc[kVectors];
  for (int r = 0; r < kVectors; ++r) acc[r] = _mm256_mul_ps(_mm256_loadu_ps(o + 8 * r), corr);
  for (int j = 0; j < nb; ++j) {
    const __m256 pv = _mm256_set1_ps(p[j]);
    const int64_t row = first + j * stride;
    for (int r = 0; r < kVectors; ++r) acc[r] = _mm256_fmadd_ps(pv, load8<F16>(v, row + 8 * r), acc[r]);
  }
  for (int r = 0; r < kVectors; ++r) _mm256_storeu_ps(o + 8 * r, acc[r]);
}

template <bool F16>
void attend(const AttentionSpan& s) {
  const int hd = s.head_dim;
  const int hd_vec = hd / 8 * 8;  // dims done with vectors; the rest in scalar code
  const void* k = s.k;
  const void* v = s.v;
  prefetch_span_rows(s, s.begin, s.begin + kPrefetchSlotsAhead);
  for (int64_t b0 = s.begin; b0 < s.end; b0 += kBlock) {
    const int nb = static_cast<int>(s.end - b0 < kBlock ? s.end - b0 : kBlock);
    prefetch_span_rows(s, b0 + kPrefetchSlotsAhead, b0 + kPrefetchSlotsAhead + kBlock);
    for (int h = 0; h < s.n_heads; ++h) {
      const float* q = s.q + static_cast<int64_t>(h) * hd;

      __m256 dots[kBlock];
      alignas(32) float scores[kBlock];
      for (int j = 0; j < kBlock; ++j) {
        __m256 acc = _mm256_setzero_ps();
        float tail = 0.0f;
        if (j < nb) {
          const int64_t row = (b0 + j) * s.slot_stride;
          for (int c = 0; c < hd_vec; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), load8<F16>(k, row + c), acc);
          for (int c = hd_vec; c < hd; ++c) tail += q[c] * load1<F16>(k, row + c);
        }
        dots[j] = acc;
        scores[j] = tail;
      }
      __m256 sc = _mm256_mul_ps(_mm256_add_ps(transpose_reduce8(dots), _mm256_load_ps(scores)), _mm256_set1_ps(s.scale));
      _mm256_store_ps(scores, sc);
      for (int j = nb; j < kBlock; ++j) scores[j] = -INFINITY;
      sc = _mm256_load_ps(scores);

      const float m_old = s.m[h];
      const float block_max = simd::reduce_max_avx2(sc);
      const float m_new = block_max > m_old ? block_max : m_old;
      const float correction =
          m_old == -INFINITY ? 0.0f
                             : (m_new == m_old ? 1.0f : _mm256_cvtss_f32(simd::exp_avx2(_mm256_set1_ps(m_old - m_new))));
      alignas(32) float pj[kBlock];
      _mm256_store_ps(pj, simd::exp_avx2(_mm256_sub_ps(sc, _mm256_set1_ps(m_new))));
      for (int j = nb; j < kBlock; ++j) pj[j] = 0.0f;
      s.m[h] = m_new;
      s.l[h] = s.l[h] * correction + simd::reduce_add_avx2(_mm256_load_ps(pj));

      float* o = s.o + static_cast<int64_t>(h) * hd;
      const __m256 corr = _mm256_set1_ps(correction);
      int c = 0;
      for (; c + 32 <= hd_vec; c += 32) accumulate_v<F16, 4>(o + c, corr, pj, nb, v, b0 * s.slot_stride + c, s.slot_stride);
      for (; c < hd_vec; c += 8) accumulate_v<F16, 1>(o + c, corr, pj, nb, v, b0 * s.slot_stride + c, s.slot_stride);
      for (; c < hd; ++c) {  // the last head_dim % 8 dims
        float acc = o[c] * correction;
        for (int j = 0; j < nb; ++j) acc += pj[j] * load1<F16>(v, (b0 + j) * s.slot_stride + c);
        o[c] = acc;
      }
    }
  }
}

}  // namespace

void attend_span_avx2(const AttentionSpan& span) {
  if (span.f16) {
    attend<true>(span);
  } else {
    attend<false>(span);
  }
}

}  // namespace bl::cpu
