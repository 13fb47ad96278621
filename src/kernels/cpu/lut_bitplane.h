// CPU matrix products with bl<b>g<g> weights (quant/bl_group.h), reading the bit planes as
// they are stored.
//
// Per call the activations are quantized once per column to int8 with one fp32 scale per
// weight group (and the group's sum of codes, for the zero point). Then, per weight row and
// group, the integer product sum_j q_j a_j is formed from the bit planes and the group's scales
// are applied after the integer sum ("dequantize after the group product"):
//
//   out[r, c] = sum_groups s * d_c * (sum_j q_j a_cj - z * sum_j a_cj)
//
// How the planes are used (why the file carries the "lut_" prefix of the low-bit kernels but
// no lookup table): a T-MAC table lookup (vpshufb over 16-entry tables of 4-activation partial
// sums) needs the nibbles of 16+ different rows side by side in one register, i.e. weights
// interleaved across rows, which a row-major GGUF tensor read in place does not have. Instead
// each plane is used directly as a mask: AVX-512 loads 32 plane bits into a mask register and
// builds the codes with masked byte adds (b ops per 32 weights), AVX2 expands the bits to bytes
// with a byte shuffle + compare; then one u8 x s8 dot product (VNNI vpdpbusd, or maddubs)
// multiplies them with the activations. The work per weight grows with b like the bytes read,
// which is what keeps 2- and 3-bit weights memory-bound, T-MAC's point. Prefill (n > 4 tokens)
// unpacks each weight row once to u8 codes in L1 and reuses them for every tile of tokens.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/aligned_buffer.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_features.h"

namespace bl::cpu {

bool bitplane_matmul_supported(DType weight_type);  // the bl<b>g<g> types

// Bytes of scratch for n activation columns of `cols` features (quantized activations).
size_t bitplane_matmul_scratch_bytes(DType weight_type, int64_t cols, int64_t n);

// out[rows, n] = W[cols, rows] · x[cols, n] (+ bias[rows]); operands as cpu::matmul's
// (check_matmul has passed). isa is lowered to what the CPU supports.
void bitplane_matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
                     AlignedBuffer& scratch, Isa isa);

}  // namespace bl::cpu
