// K-quant super-blocks (256 weights) unpacked to one common form for the scalar dot kernels:
//   w_e = d * scale[e / 16] * q[e] - dmin * min[e / 16],   e in [0, 256).
// Q4_K / Q5_K have 32-element sub-blocks, so their scales and mins repeat over pairs of 16.
#pragma once

#include <cstdint>

#include "core/half.h"
#include "quant/blocks.h"
#include "quant/quant_formats.h"

namespace bl::cpu {

struct KQuantUnpacked {
  int8_t q[kQKK];
  int16_t scale[kQKK / 16];
  int16_t min[kQKK / 16];
  float d;
  float dmin;
};

inline void unpack_kquant(const BlockQ2_K& b, KQuantUnpacked* u) {
  u->d = fp16_to_f32(b.d);
  u->dmin = fp16_to_f32(b.dmin);
  for (int g = 0; g < 16; ++g) {
    u->scale[g] = b.scales[g] & 0xF;
    u->min[g] = b.scales[g] >> 4;
  }
  // Element order as dequantize_q2_k: halves of 128, then 2-bit shifts, then 32 bytes.
  int e = 0;
  for (int half = 0; half < 2; ++half)
    for (int shift = 0; shift < 8; shift += 2)
      for (int l = 0; l < 32; ++l) u->q[e++] = static_cast<int8_t>((b.qs[32 * half + l] >> shift) & 3);
}

inline void unpack_kquant(const BlockQ3_K& b, KQuantUnpacked* u) {
  u->d = fp16_to_f32(b.d);
  u->dmin = 0;
  int8_t sc[16];
  quant::unpack_q3_k_scales(b.scales, sc);
  for (int g = 0; g < 16; ++g) {
    u->scale[g] = sc[g];
    u->min[g] = 0;
  }
  int e = 0;
  uint8_t m = 1;
  for (int half = 0; half < 2; ++half)
    for (int shift = 0; shift < 8; shift += 2, m <<= 1)
      for (int l = 0; l < 32; ++l)
        u->q[e++] = static_cast<int8_t>(((b.qs[32 * half + l] >> shift) & 3) - ((b.hmask[l] & m) ? 0 : 4));
}

inline void unpack_kquant(const BlockQ4_K& b, KQuantUnpacked* u) {
  u->d = fp16_to_f32(b.d);
  u->dmin = fp16_to_f32(b.dmin);
  for (int is = 0; is < 8; ++is) {
    uint8_t sc, mn;
    quant::get_scale_min_k4(is, b.scales, &sc, &mn);
    u->scale[2 * is] = u->scale[2 * is + 1] = sc;
    u->min[2 * is] = u->min[2 * is + 1] = mn;
  }
  for (int k = 0; k < 4; ++k)
    for (int l = 0; l < 32; ++l) {
      u->q[64 * k + l] = static_cast<int8_t>(b.qs[32 * k + l] & 0xF);
      u->q[64 * k + 32 + l] = static_cast<int8_t>(b.qs[32 * k + l] >> 4);
    }
}

inline void unpack_kquant(const BlockQ5_K& b, KQuantUnpacked* u) {
  u->d = fp16_to_f32(b.d);
  u->dmin = fp16_to_f32(b.dmin);
  for (int is = 0; is < 8; ++is) {
    uint8_t sc, mn;
    quant::get_scale_min_k4(is, b.scales, &sc, &mn);
    u->scale[2 * is] = u->scale[2 * is + 1] = sc;
    u->min[2 * is] = u->min[2 * is + 1] = mn;
  }
  // Sub-block is (32 elements) takes its fifth bit from bit `is` of qh[l].
  for (int k = 0; k < 4; ++k)
    for (int l = 0; l < 32; ++l) {
      u->q[64 * k + l] = static_cast<int8_t>((b.qs[32 * k + l] & 0xF) | (((b.qh[l] >> (2 * k)) & 1) << 4));
      u->q[64 * k + 32 + l] = static_cast<int8_t>((b.qs[32 * k + l] >> 4) | (((b.qh[l] >> (2 * k + 1)) & 1) << 4));
    }
}

inline void unpack_kquant(const BlockQ6_K& b, KQuantUnpacked* u) {
  u->d = fp16_to_f32(b.d);
  u->dmin = 0;
  for (int g = 0; g < 16; ++g) {
    u->scale[g] = b.scales[g];
    u->min[g] = 0;
  }
  for (int half = 0; half < 2; ++half) {
    const uint8_t* ql = b.ql + 64 * half;
    const uint8_t* qh = b.qh + 32 * half;
    int8_t* q = u->q + 128 * half;
    for (int l = 0; l < 32; ++l) {
      q[l] = static_cast<int8_t>(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
      q[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      q[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      q[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

}  // namespace bl::cpu
