// attend_span with AVX-512 (F, BW, VL): blocks of 16 cache slots.
//
// Per block and query head: 16 dot products q·k (16-wide FMAs over head_dim, then one
// transpose-reduction of the 16 partial vectors into one vector of 16 scores), one online
// softmax update for the whole block, and o += p_j · v_j with the accumulators of up to 64
// dims in registers. F16 caches are widened with vcvtph2ps. head_dim need not be a multiple
// of 16: the last vector of a row is a masked load.
// GCC 12 reports its own AVX-512 intrinsics (their _mm512_undefined_ps() self-initialisation)
// as "may be used uninitialized" once inlined; the warning is about the header, not this code.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <cmath>
#include <cstdint>

#include "kernels/cpu/attention_span.h"
#include "kernels/cpu/elementwise_simd.h"

namespace bl::cpu {
namespace {

constexpr int kBlock = 16;  // slots per block = floats per vector

static inline __mmask16 tail_mask(int64_t remaining) {
  if (remaining >= 16) return static_cast<__mmask16>(0xffff);
  if (remaining <= 0) return 0;
  return static_cast<__mmask16>((1u << remaining) - 1);
}

// 16 elements starting at element i of an F32 or F16 row; masked-off lanes are 0 and not read.
template <bool F16>
static inline __m512 load16(const void* base, int64_t i, __mmask16 mask) {
  if constexpr (F16) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(base) + i));
  } else {
    return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(base) + i);
  }
}

// Lane i of the result = sum of the 16 lanes of a[i].
static inline __m512 transpose_reduce16(const __m512* a) {
  // Within 128-bit lanes, pairs: [x0+x2, y0+y2, x1+x3, y1+y3].
  __m512 p[8];
  for (int i = 0; i < 8; ++i)
    p[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
  // Quads: per 128-bit lane k, [x_k, y_k, z_k, w_k] = sums over that lane of 4 inputs.
  __m512 r[4];
  for (int i = 0; i < 4; ++i) {
    const __m512d lo = _mm512_unpacklo_pd(_mm512_castps_pd(p[2 * i]), _mm512_castps_pd(p[2 * i + 1]));
    const __m512d hi = _mm512_unpackhi_pd(_mm512_castps_pd(p[2 * i]), _mm512_castps_pd(p[2 * i + 1]));
    r[i] = _mm512_add_ps(_mm512_castpd_ps(lo), _mm512_castpd_ps(hi));
  }
  // Sum the four 128-bit lanes, placing inputs 4i..4i+3 in 128-bit lane i.
  const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(r[0], r[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(r[0], r[1], _MM_SHUFFLE(3, 1, 3, 1)));
  const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(r[2], r[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(r[2], r[3], _MM_SHUFFLE(3, 1, 3, 1)));
  return _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(2, 0, 2, 0)),
                       _mm512_shuffle_f32x4(s01, s23, _MM_SHUFFLE(3, 1, 3, 1)));
}

template <bool F16>
void attend(const AttentionSpan& s) {
  const int hd = s.head_dim;
  const void* k = s.k;
  const void* v = s.v;
  for (int64_t b0 = s.begin; b0 < s.end; b0 += kBlock) {
    const int nb = static_cast<int>(s.end - b0 < kBlock ? s.end - b0 : kBlock);
    const __mmask16 valid = tail_mask(nb);
    for (int h = 0; h < s.n_heads; ++h) {
      const float* q = s.q + static_cast<int64_t>(h) * hd;

      // Scores of the block: dots[j] holds 16 partial sums of q · k_j.
      __m512 dots[kBlock];
      for (int j = 0; j < kBlock; ++j) {
        __m512 acc = _mm512_setzero_ps();
        if (j < nb) {
          const int64_t row = (b0 + j) * s.slot_stride;
          for (int c = 0; c < hd; c += 16) {
            const __mmask16 mc = tail_mask(hd - c);
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mc, q + c), load16<F16>(k, row + c, mc), acc);
          }
        }
        dots[j] = acc;
      }
      __m512 scores = _mm512_mul_ps(transpose_reduce16(dots), _mm512_set1_ps(s.scale));
      scores = _mm512_mask_blend_ps(valid, _mm512_set1_ps(-INFINITY), scores);

      // Online softmax: rescale the running state to the new max, add the block's weights.
      const float m_old = s.m[h];
      const float block_max = _mm512_reduce_max_ps(scores);
      const float m_new = block_max > m_old ? block_max : m_old;
      const float correction = m_old == -INFINITY ? 0.0f : std::exp(m_old - m_new);
      const __m512 p = _mm512_maskz_mov_ps(valid, simd::exp_avx512(_mm512_sub_ps(scores, _mm512_set1_ps(m_new))));
      s.m[h] = m_new;
      s.l[h] = s.l[h] * correction + _mm512_reduce_add_ps(p);
      alignas(64) float pj[kBlock];
      _mm512_store_ps(pj, p);

      // o = o * correction + Σ_j p_j v_j, 64 dims at a time in 4 registers.
      float* o = s.o + static_cast<int64_t>(h) * hd;
      const __m512 corr = _mm512_set1_ps(correction);
      for (int c = 0; c < hd; c += 64) {
        __mmask16 mask[4];
        __m512 acc[4];
        for (int r = 0; r < 4; ++r) {
          mask[r] = tail_mask(hd - c - 16 * r);
          acc[r] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask[r], o + c + 16 * r), corr);
        }
        for (int j = 0; j < nb; ++j) {
          const __m512 pv = _mm512_set1_ps(pj[j]);
          const int64_t row = (b0 + j) * s.slot_stride + c;
          for (int r = 0; r < 4; ++r) acc[r] = _mm512_fmadd_ps(pv, load16<F16>(v, row + 16 * r, mask[r]), acc[r]);
        }
        for (int r = 0; r < 4; ++r) _mm512_mask_storeu_ps(o + c + 16 * r, mask[r], acc[r]);
      }
    }
  }
}

}  // namespace

void attend_span_avx512(const AttentionSpan& span) {
  if (span.f16) {
    attend<true>(span);
  } else {
    attend<false>(span);
  }
}

}  // namespace bl::cpu
