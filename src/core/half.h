// IEEE fp16 and bfloat16 <-> fp32, scalar and exact (round to nearest even). Vector code uses
// F16C / AVX-512 instructions instead; these are the reference. static: files compiled with
// AVX-512 flags include this too, and an inline function's AVX-512 build must not be the one
// the linker keeps for everybody.
#pragma once

#include <cstdint>
#include <cstring>

namespace bl {

static inline float bits_to_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline uint32_t f32_to_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

static inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return bits_to_f32(sign | 0x7f800000u | (mant << 13));  // inf / nan
  if (exp == 0) {
    if (mant == 0) return bits_to_f32(sign);
    // Subnormal: value = mant * 2^-24.
    float v = static_cast<float>(mant) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

static inline uint16_t f32_to_fp16(float f) {
  uint32_t x = f32_to_bits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return sign | (x > 0x7f800000u ? 0x7e00 : 0x7c00);  // nan / inf
  if (x >= 0x477ff000u) return sign | 0x7c00;                                 // overflow to inf
  if (x < 0x38800000u) {                                                      // subnormal or zero
    // Round x * 2^24 to nearest even via float addition of a large constant.
    float v = bits_to_f32(x) + 0.5f;  // 0.5 = 2^-1 puts the fp16 subnormal ulp (2^-24) at bit 0
    return sign | static_cast<uint16_t>(f32_to_bits(v) - f32_to_bits(0.5f));
  }
  uint32_t mant_odd = (x >> 13) & 1;
  x += 0xc8000fffu + mant_odd;  // rebias exponent (-112 << 23) and round to nearest even
  return sign | static_cast<uint16_t>(x >> 13);
}

static inline float bf16_to_f32(uint16_t h) { return bits_to_f32(static_cast<uint32_t>(h) << 16); }

static inline uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40);  // quiet nan
  x += 0x7fffu + ((x >> 16) & 1);
  return static_cast<uint16_t>(x >> 16);
}

}  // namespace bl
