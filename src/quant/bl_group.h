// bitlight's own weight format bl<b>g<g>: b = 1..8 bits per weight, groups of g = 32, 64 or
// 128 consecutive weights of a row, an fp16 scale and an fp16 zero point per group, and the
// weights stored as bit planes so the CPU kernels (kernels/cpu/lut_bitplane.h) read them as
// they lie in the file, with no repacking at load.
//
// One group (the DTypeInfo "block", 4 + b * g / 8 bytes, no padding):
//
//   offset 0      u16  scale   fp16, s
//   offset 2      u16  zero    fp16, z (may be fractional and lie outside [0, 2^b - 1])
//   offset 4      u8   planes[b][g / 8]
//
// Plane k (k = 0 is the least significant bit) holds bit k of each of the g weights:
// bit (j % 8) of byte planes[k][j / 8] is bit k of the unsigned code q_j of weight j, so a
// plane read as a little-endian integer has weight j at bit j. The value of weight j is
//
//   x_j = s * (q_j - z),   q_j = sum_k 2^k * bit_k(q_j) in [0, 2^b - 1].
//
// Why this shape: a kernel multiplies plane k with a group of int8 activations as a bit mask
// (AVX-512 mask registers load 64 plane bits at once), shifts by k and sums, so its work grows
// with b like the bytes it reads; the scale and zero are applied once per group after the
// integer sum: s * (sum_j q_j a_j - z * sum_j a_j).
//
// Bits per weight: b + 32 / g (bl4g128 = 4.25, bl2g64 = 2.5, bl3g32 = 4.0).
#pragma once

#include <cstdint>
#include <optional>

#include "core/dtype.h"

namespace bl::quant {

struct BlGroupShape {
  int bits;        // 1..8
  int group_size;  // 32, 64 or 128
  constexpr int64_t group_bytes() const { return 4 + static_cast<int64_t>(bits) * group_size / 8; }
  constexpr int64_t plane_bytes() const { return group_size / 8; }
};

// The shape of a bl<b>g<g> dtype, or nullopt for every other dtype.
std::optional<BlGroupShape> bl_group_shape(DType t);
inline bool is_bl_group(DType t) { return bl_group_shape(t).has_value(); }
// The dtype for (bits, group size), or nullopt when there is none.
std::optional<DType> bl_group_dtype(int bits, int group_size);

// Reference quantizer. n is a multiple of g. Per group it tries several clipping ranges, fits
// s and z by weighted least squares to each candidate rounding, and keeps the one with the
// smallest weighted squared error sum_j e_j (x_j - x'_j)^2 (s and z as stored, in fp16), with
// the error weights e of bl_group_error_weights. importance (n values >= 0, or nullptr) is the
// activation-aware mode's mean squared activation of each input feature (an importance matrix).
void quantize_bl_group(DType t, const float* x, void* dst, int64_t n, const float* importance);
// Error weights of one group of g values x: e_j = importance_j, or 1 without importance.
// (ggml's K-quant weighting e_j = rms(x) + |x_j| was tried: on SmolLM2-135M at bl3g64 it gave
// a worse perplexity than uniform weights, 818 vs 509, so the plain form stays.)
void bl_group_error_weights(const float* x, const float* importance, int g, float* out);

// x_j = s * (q_j - z) for n elements (a multiple of g).
void dequantize_bl_group(DType t, const void* src, float* y, int64_t n);

// Codes of one group (g values in [0, 2^b - 1]); for tests and kernels' references.
void unpack_bl_group_codes(const BlGroupShape& shape, const uint8_t* group, uint8_t* codes);

}  // namespace bl::quant
