// CPU matrix products with weights in any supported format.
//
// Quantized weights: the activations are quantized once per call to 8-bit blocks (Q8_0 for
// the 32-element formats, Q8_K for the K-quants) and multiplied with integer dot products
// (AVX2 maddubs, AVX-512 VNNI); F32/F16/BF16 weights use fp32 FMAs. The ISA is chosen at run
// time (cpu_features.h).
#pragma once

#include <cstdint>

#include "core/aligned_buffer.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace bl::cpu {

bool matmul_supported(DType weight_type);

// out[rows, n] = W[cols, rows] · x[cols, n] (+ bias[rows]). x, out, bias F32.
// scratch holds the quantized activations; it grows on first use and is reused after.
void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
            AlignedBuffer& scratch);

// out[d, n] = dequantized rows ids[0..n) of table [d, n_vocab].
void get_rows(const Tensor& table, const int32_t* ids, int64_t n, Tensor& out);

}  // namespace bl::cpu
