// The per-ISA row kernels behind bitplane_matmul (lut_bitplane.h), and the quantized
// activation layout they share.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/half.h"
#include "quant/bl_group.h"

namespace bl::cpu {

// Columns of activations one kernel call multiplies with a weight row.
constexpr int kBitplaneTile = 4;

// One column of activations, quantized per weight group: x_j ~ d[j / g] * q[j].
struct BitplaneActs {
  const int8_t* q;     // [cols]
  const float* d;      // [cols / g] scale per group
  const int32_t* sum;  // [cols / g] sum of q over the group
};

// out[c] = W_row · x_c for c < nc (nc in [1, kBitplaneTile]); w_row is one row of `cols`
// weights in bl<b>g<g>. The fused form for decode.
using BitplaneDotFn = void (*)(const quant::BlGroupShape& shape, int64_t cols, const uint8_t* w_row,
                               const BitplaneActs* acts, int nc, float* out);
// codes[j] = q_j of the row (cols bytes, 64-byte aligned); for prefill, once per row.
using BitplaneUnpackFn = void (*)(const quant::BlGroupShape& shape, int64_t cols, const uint8_t* w_row,
                                  uint8_t* codes);
// As BitplaneDotFn with the codes already unpacked (w_row still supplies s and z).
using BitplaneDotCodesFn = void (*)(const quant::BlGroupShape& shape, int64_t cols, const uint8_t* w_row,
                                    const uint8_t* codes, const BitplaneActs* acts, int nc, float* out);

// One column of activations to int8 per group of g: d = max|x| / 127, q = round-to-nearest-
// even(x * (127 / max|x|)), sum = sum of q; every level computes exactly the same bytes.
using BitplaneQuantizeFn = void (*)(const float* x, int64_t cols, int g, int8_t* q, float* d, int32_t* sum);

struct BitplaneKernels {
  BitplaneDotFn dot;
  BitplaneUnpackFn unpack;
  BitplaneDotCodesFn dot_codes;
  BitplaneQuantizeFn quantize;
};

void bitplane_quantize_scalar(const float* x, int64_t cols, int g, int8_t* q, float* d, int32_t* sum);
void bitplane_quantize_avx2(const float* x, int64_t cols, int g, int8_t* q, float* d, int32_t* sum);  // also AVX-512

// The SIMD levels instantiate one kernel set per (bits, group size), so the plane loop is
// unrolled with constant plane strides; they return nullptr for a shape they do not cover.
const BitplaneKernels& bitplane_kernels_scalar();
const BitplaneKernels* bitplane_kernels_avx2(const quant::BlGroupShape& shape);
const BitplaneKernels* bitplane_kernels_avx512(const quant::BlGroupShape& shape);

// s and z of group `group` of a row, as fp32 (static: this header is compiled with several ISA
// flags, and the linker must not pick one build for all).
static inline void bitplane_group_scale(const quant::BlGroupShape& shape, const uint8_t* w_row, int64_t group, float& s,
                                 float& z) {
  const uint8_t* g = w_row + group * shape.group_bytes();
  uint16_t s16, z16;
  std::memcpy(&s16, g, 2);
  std::memcpy(&z16, g + 2, 2);
  s = fp16_to_f32(s16);
  z = fp16_to_f32(z16);
}

}  // namespace bl::cpu
