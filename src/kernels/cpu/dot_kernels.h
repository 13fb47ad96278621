// Row-times-columns dot products behind cpu::matmul, one table per ISA level.
//
// A dot kernel multiplies one weight row (cols elements in the weight format) with up to
// kMaxDotCols activation columns at once, so that each weight block is decoded once per tile
// of tokens. The activations arrive in the kernel's ActFormat: fp32 for F32/F16/BF16 weights,
// otherwise 8-bit blocks made once per matmul call (Q8_0; Q8_1 where the weight format has a
// min, since its s = d * sum(q) folds the min in; Q8_K for the K-quants).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "kernels/cpu/cpu_features.h"

namespace bl::cpu {

constexpr int kMaxDotCols = 4;

// out[c] = sum_k W[k] * x_c[k] for c in [0, ncols), ncols in [1, kMaxDotCols].
// w: one weight row of `cols` elements. x: column 0's activations; column c starts
// x_stride_bytes * c bytes later.
using DotFn = void (*)(int64_t cols, const void* w, const void* x, size_t x_stride_bytes, int ncols, float* out);

// Quantizes n (a multiple of the block size) fp32 activations into dst blocks.
using QuantizeActFn = void (*)(const float* x, void* dst, int64_t n);

// How a column of quantized activations is laid out in the matmul scratch.
enum class ActLayout {
  blocks,             // act's blocks as they are (BlockQ8_0 / Q8_1 / Q8_K)
  // The x86 kernels of the 32-element formats also want each block's scale d and
  // d * sum(q) in fp32 (it saves fp16 conversions per block and folds the -8 / -16 offset or
  // the min into one term): after the int8 data, at the next 64-byte boundary
  // (act_scales_offset), come float d[nb] and float s[nb].
  q8_0_scales,  // BlockQ8_0 blocks, then d[], s[]
  // The nibble formats' x86 kernels unpack two weight blocks per 256-bit register, so the
  // int8 data comes in pairs of blocks j, j+1 as 64 bytes: j[0:16], j+1[0:16], j[16:32],
  // j+1[16:32]; an odd last block is 32 bytes in plain order. Then d[], s[].
  q8_pairs_scales,
};

struct DotKernel {
  DType act;                  // F32 (activations used as they are), Q8_0, Q8_1 or Q8_K
  DotFn dot;
  QuantizeActFn quantize_act;  // nullptr when act is F32
  ActLayout layout = ActLayout::blocks;
  // Back to fp32 exactly as the kernel sees the activations (tests); nullptr for
  // ActLayout::blocks, where dequantize_row(act, ...) does it.
  void (*dequantize_act)(const void* column, float* x, int64_t n) = nullptr;
};

// Byte offset of the fp32 d[] array in an activation column of nb 32-element blocks.
constexpr size_t act_scales_offset(ActLayout layout, int64_t nb) {
  const size_t int8_bytes = static_cast<size_t>(nb) * (layout == ActLayout::q8_0_scales ? 34 : 32);
  return (int8_bytes + 63) / 64 * 64;
}
// Bytes of one activation column of k's format for cols elements.
size_t act_column_bytes(const DotKernel& k, int64_t cols);

// The kernel for weights of type w at exactly that level; nullptr when the level has none
// (matmul then falls back to the next lower level). The scalar level covers every format
// matmul supports.
const DotKernel* dot_kernel_scalar(DType w);
const DotKernel* dot_kernel_avx2(DType w);
const DotKernel* dot_kernel_avx512(DType w);
// The AVX-512 kernels with VNNI integer dots (the float formats' kernels are the same as
// dot_kernel_avx512's); nullptr without VNNI. Their results are bit-identical to
// dot_kernel_avx512's.
const DotKernel* dot_kernel_avx512_vnni(DType w);
// What matmul uses at the AVX-512 level: the VNNI kernel where it measured faster (the
// 512-bit Q4_0 / Q4_1 / Q8_0 kernels, with VNNI), else dot_kernel_avx512's.
const DotKernel* dot_kernel_avx512_best(DType w);

// The kernel used for w at level isa or the nearest lower level that has one.
const DotKernel* find_dot_kernel(DType w, Isa isa);

}  // namespace bl::cpu
