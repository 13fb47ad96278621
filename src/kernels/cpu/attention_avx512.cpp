// attend_span with AVX-512 (F, BW, VL): blocks of 16 cache slots.
//
// Up to 4 query heads of a GQA group go together, so each k and v row is loaded (and widened
// from fp16 with vcvtph2ps) once for all of them. Per block and head: 16 dot products q·k
// (16-wide FMAs over head_dim, then one transpose-reduction of the 16 partial vectors into one
// vector of 16 scores), one online-softmax update for the whole block, and o += p_j · v_j into
// accumulators that stay in registers for the whole span. head_dim is a compile-time multiple
// of 16 rounded up; the last vector of a row is a masked load.
//
// Measured (one core of the lent H100 host, SmolLM2 shapes: head_dim 64, 9/3 heads, 600 slots):
// ~21 GFLOP/s, against ~29 GFLOP/s for a pure 16-wide FMA loop on the same core.
//
// GCC 12 reports its own AVX-512 intrinsics (their _mm512_undefined_ps() self-initialisation)
// as "may be used uninitialized" once inlined; the warning is about the header, not this code.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

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

// exp(x) of one float with the vector code (no libm call in the per-block path).
static inline float exp1(float x) { return _mm512_cvtss_f32(simd::exp_avx512(_mm512_set1_ps(x))); }

// Query heads [h0, h0 + kHeads) of the span, which share one kv head: each k_j and v_j row is
// loaded (and widened from fp16) once for all kHeads heads. kVectors = ceil(head_dim / 16) is a
// compile-time constant so that the output accumulators (kHeads × kVectors) stay in registers
// for the whole span; only the last vector of a row is masked.
template <bool F16, int kVectors, int kHeads>
void attend_heads(const AttentionSpan& s, int h0) {
  static_assert(kHeads * kVectors <= 24, "the output accumulators must fit in the 32 zmm registers");
  const int hd = s.head_dim;
  const __mmask16 last = tail_mask(hd - 16 * (kVectors - 1));
  auto mask_of = [last](int r) { return r == kVectors - 1 ? last : static_cast<__mmask16>(0xffff); };
  const float* q = s.q + static_cast<int64_t>(h0) * hd;
  float* o = s.o + static_cast<int64_t>(h0) * hd;
  float* m = s.m + h0;
  float* l = s.l + h0;

  __m512 acc[kHeads][kVectors];  // o of each head, unnormalized
  for (int h = 0; h < kHeads; ++h)
    for (int r = 0; r < kVectors; ++r) acc[h][r] = _mm512_maskz_loadu_ps(mask_of(r), o + h * hd + 16 * r);

  prefetch_span_rows(s, s.begin, s.begin + kPrefetchSlotsAhead);
  for (int64_t b0 = s.begin; b0 < s.end; b0 += kBlock) {
    const int nb = static_cast<int>(s.end - b0 < kBlock ? s.end - b0 : kBlock);
    prefetch_span_rows(s, b0 + kPrefetchSlotsAhead, b0 + kPrefetchSlotsAhead + kBlock);
    const __mmask16 valid = tail_mask(nb);

    // dots[h][j]: 16 partial sums of q_h · k_j.
    __m512 dots[kHeads][kBlock];
    for (int j = 0; j < kBlock; ++j) {
      if (j >= nb) {
        for (int h = 0; h < kHeads; ++h) dots[h][j] = _mm512_setzero_ps();
        continue;
      }
      const int64_t row = (b0 + j) * s.slot_stride;
      __m512 kv[kVectors];
      for (int r = 0; r < kVectors; ++r) kv[r] = load16<F16>(s.k, row + 16 * r, mask_of(r));
      for (int h = 0; h < kHeads; ++h) {
        __m512 d0 = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask_of(0), q + h * hd), kv[0]);
        __m512 d1 = _mm512_setzero_ps();
        for (int r = 1; r < kVectors; ++r) {
          const __m512 qr = _mm512_maskz_loadu_ps(mask_of(r), q + h * hd + 16 * r);
          if (r % 2) {
            d1 = _mm512_fmadd_ps(qr, kv[r], d1);
          } else {
            d0 = _mm512_fmadd_ps(qr, kv[r], d0);
          }
        }
        dots[h][j] = _mm512_add_ps(d0, d1);
      }
    }

    // Online softmax per head: rescale the running state to the new max, add the block.
    alignas(64) float p[kHeads][kBlock];
    for (int h = 0; h < kHeads; ++h) {
      __m512 scores = _mm512_mul_ps(transpose_reduce16(dots[h]), _mm512_set1_ps(s.scale));
      scores = _mm512_mask_blend_ps(valid, _mm512_set1_ps(-INFINITY), scores);
      const float m_old = m[h];
      const float block_max = _mm512_reduce_max_ps(scores);
      const float m_new = block_max > m_old ? block_max : m_old;
      const float correction = m_old == -INFINITY ? 0.0f : (m_new == m_old ? 1.0f : exp1(m_old - m_new));
      const __m512 ph = _mm512_maskz_mov_ps(valid, simd::exp_avx512(_mm512_sub_ps(scores, _mm512_set1_ps(m_new))));
      m[h] = m_new;
      l[h] = l[h] * correction + _mm512_reduce_add_ps(ph);
      _mm512_store_ps(p[h], ph);
      if (correction != 1.0f) {
        const __m512 corr = _mm512_set1_ps(correction);
        for (int r = 0; r < kVectors; ++r) acc[h][r] = _mm512_mul_ps(acc[h][r], corr);
      }
    }

    // o_h += Σ_j p_hj v_j.
    for (int j = 0; j < nb; ++j) {
      const int64_t row = (b0 + j) * s.slot_stride;
      __m512 vv[kVectors];
      for (int r = 0; r < kVectors; ++r) vv[r] = load16<F16>(s.v, row + 16 * r, mask_of(r));
      for (int h = 0; h < kHeads; ++h) {
        const __m512 pv = _mm512_set1_ps(p[h][j]);
        for (int r = 0; r < kVectors; ++r) acc[h][r] = _mm512_fmadd_ps(pv, vv[r], acc[h][r]);
      }
    }
  }

  for (int h = 0; h < kHeads; ++h)
    for (int r = 0; r < kVectors; ++r) _mm512_mask_storeu_ps(o + h * hd + 16 * r, mask_of(r), acc[h][r]);
}

// As many heads at a time as the registers allow (up to 4), the rest in a smaller group.
template <bool F16, int kVectors>
void attend_fixed_head_dim(const AttentionSpan& s) {
  constexpr int kMaxHeads = 24 / kVectors < 4 ? 24 / kVectors : 4;
  int h = 0;
  for (; h + kMaxHeads <= s.n_heads; h += kMaxHeads) attend_heads<F16, kVectors, kMaxHeads>(s, h);
  switch (s.n_heads - h) {
    case 3:
      if constexpr (kMaxHeads > 3) return attend_heads<F16, kVectors, 3>(s, h);
      break;
    case 2:
      if constexpr (kMaxHeads > 2) return attend_heads<F16, kVectors, 2>(s, h);
      break;
    case 1:
      if constexpr (kMaxHeads > 1) return attend_heads<F16, kVectors, 1>(s, h);
      break;
    default:
      break;
  }
}

template <bool F16>
void attend_any_head_dim(const AttentionSpan& s) {
  // One instantiation per vector count up to head_dim 256; larger heads (no model this
  // targets has them) take the scalar path.
  switch ((s.head_dim + 15) / 16) {
    case 1: return attend_fixed_head_dim<F16, 1>(s);
    case 2: return attend_fixed_head_dim<F16, 2>(s);
    case 3: return attend_fixed_head_dim<F16, 3>(s);
    case 4: return attend_fixed_head_dim<F16, 4>(s);
    case 5: return attend_fixed_head_dim<F16, 5>(s);
    case 6: return attend_fixed_head_dim<F16, 6>(s);
    case 7: return attend_fixed_head_dim<F16, 7>(s);
    case 8: return attend_fixed_head_dim<F16, 8>(s);
    case 9: return attend_fixed_head_dim<F16, 9>(s);
    case 10: return attend_fixed_head_dim<F16, 10>(s);
    case 11: return attend_fixed_head_dim<F16, 11>(s);
    case 12: return attend_fixed_head_dim<F16, 12>(s);
    case 13: return attend_fixed_head_dim<F16, 13>(s);
    case 14: return attend_fixed_head_dim<F16, 14>(s);
    case 15: return attend_fixed_head_dim<F16, 15>(s);
    case 16: return attend_fixed_head_dim<F16, 16>(s);
    default: return attend_span_scalar(s);
  }
}

}  // namespace

void attend_span_avx512(const AttentionSpan& span) {
  if (span.f16) {
    attend_any_head_dim<true>(span);
  } else {
    attend_any_head_dim<false>(span);
  }
}

}  // namespace bl::cpu
