// Reference quantize / dequantize of the ternary formats (BitNet b1.58 weights in {-1, 0, 1}
// times a per-block fp16 scale). Layouts are ggml's TQ1_0 and TQ2_0.
#include <algorithm>
#include <cmath>

#include "core/half.h"
#include "quant/quant_formats.h"

namespace bl::quant {
namespace {

// A TQ1_0 byte holds 5 trits as a base-3 fraction scaled to 256: trit n of byte q is the
// integer part of (q * 3^n mod 256) * 3 / 256. Returns it mapped to {-1, 0, 1}.
inline int tq1_trit(uint8_t q, int n) {
  static constexpr uint8_t kPow3[6] = {1, 3, 9, 27, 81, 243};
  const uint8_t shifted = static_cast<uint8_t>(q * kPow3[n]);
  return ((static_cast<uint16_t>(shifted) * 3) >> 8) - 1;
}

// Packs trits t[0..k) (each in {0, 1, 2}, most significant first) into one TQ1_0 byte,
// pre-multiplied so that 5 - k leading zero trits are implied, as ceil(v * 256 / 243).
inline uint8_t tq1_pack(const int* t, int k) {
  int q = 0;
  for (int m = 0; m < k; ++m) q = q * 3 + t[m];
  for (int m = k; m < 5; ++m) q *= 3;
  return static_cast<uint8_t>((q * 256 + 242) / 243);
}

}  // namespace

void dequantize_tq1_0(const BlockTQ1_0* x, float* y, int64_t n) {
  constexpr int kQs = sizeof(x->qs);           // 48 bytes: 32 then 16, 5 trits each
  constexpr int kQsMain = kQs - kQs % 32;      // 32
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int tr = 0; tr < 5; ++tr)
      for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(tq1_trit(x[i].qs[m], tr)) * d;
    for (int tr = 0; tr < 5; ++tr)
      for (int m = 0; m < 16; ++m) *y++ = static_cast<float>(tq1_trit(x[i].qs[kQsMain + m], tr)) * d;
    for (int tr = 0; tr < 4; ++tr)
      for (int j = 0; j < static_cast<int>(sizeof(x->qh)); ++j) *y++ = static_cast<float>(tq1_trit(x[i].qh[j], tr)) * d;
  }
}

void dequantize_tq2_0(const BlockTQ2_0* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    const float d = fp16_to_f32(x[i].d);
    for (int j = 0; j < static_cast<int>(sizeof(x->qs)); j += 32)
      for (int l = 0; l < 4; ++l)
        for (int m = 0; m < 32; ++m) *y++ = static_cast<float>(((x[i].qs[j + m] >> (2 * l)) & 3) - 1) * d;
  }
}

void quantize_tq1_0(const float* x, BlockTQ1_0* y, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    float amax = 0;
    for (int j = 0; j < kQKK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax, id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    auto trit = [&](float v) { return static_cast<int>(std::lround(v * id)) + 1; };  // {-1,0,1} -> {0,1,2}
    int t[5];
    for (int m = 0; m < 32; ++m) {  // elements m + 32 * tr, tr = 0..4
      for (int tr = 0; tr < 5; ++tr) t[tr] = trit(x[m + 32 * tr]);
      y[i].qs[m] = tq1_pack(t, 5);
    }
    x += 160;
    for (int m = 0; m < 16; ++m) {  // elements m + 16 * tr
      for (int tr = 0; tr < 5; ++tr) t[tr] = trit(x[m + 16 * tr]);
      y[i].qs[32 + m] = tq1_pack(t, 5);
    }
    x += 80;
    for (int j = 0; j < 4; ++j) {  // elements j + 4 * tr, tr = 0..3
      for (int tr = 0; tr < 4; ++tr) t[tr] = trit(x[j + 4 * tr]);
      y[i].qh[j] = tq1_pack(t, 4);
    }
    x += 16;
  }
}

void quantize_tq2_0(const float* x, BlockTQ2_0* y, int64_t n) {
  for (int64_t i = 0; i < n / kQKK; ++i) {
    float amax = 0;
    for (int j = 0; j < kQKK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax, id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_fp16(d);
    for (int j = 0; j < static_cast<int>(sizeof(y->qs)); j += 32, x += 128) {
      for (int m = 0; m < 32; ++m) {
        int q = 0;
        for (int l = 0; l < 4; ++l) q |= ((static_cast<int>(std::lround(x[m + 32 * l] * id)) + 1) & 3) << (2 * l);
        y[i].qs[j + m] = static_cast<uint8_t>(q);
      }
    }
  }
}

}  // namespace bl::quant
