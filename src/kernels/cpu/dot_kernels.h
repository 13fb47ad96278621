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

struct DotKernel {
  DType act;                  // F32 (activations used as they are), Q8_0, Q8_1 or Q8_K
  DotFn dot;
  QuantizeActFn quantize_act;  // nullptr when act is F32
  // The x86 kernels of the 32-element formats also want each block's scale d and d * sum(q)
  // as fp32 (it saves two fp16 conversions per block and folds the -8 / -16 offset or the
  // min): their columns are the Q8_0 blocks, then at the next 64-byte boundary
  // float d[nb], then float s[nb]. See act_scales_offset.
  bool act_fp32_scales = false;
};

// Byte offset of the fp32 d[] array in an activation column of nb 32-element blocks.
constexpr size_t act_scales_offset(int64_t nb) { return (static_cast<size_t>(nb) * 34 + 63) / 64 * 64; }
// Bytes of one activation column of k's format for cols elements.
size_t act_column_bytes(const DotKernel& k, int64_t cols);

// The kernel for weights of type w at exactly that level; nullptr when the level has none
// (matmul then falls back to the next lower level). The scalar level covers every format
// matmul supports.
const DotKernel* dot_kernel_scalar(DType w);
const DotKernel* dot_kernel_avx2(DType w);
const DotKernel* dot_kernel_avx512(DType w);

// The kernel used for w at level isa or the nearest lower level that has one.
const DotKernel* find_dot_kernel(DType w, Isa isa);

}  // namespace bl::cpu
