// Scalar reference quantize / dequantize for every weight format (core/dtype.h lists them).
// These define the formats: the fast kernels (kernels/cpu, kernels/cuda) are tested against
// them. Block layouts are ggml's; see quant/blocks.h for the structs.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "core/status.h"

namespace bl {

bool can_dequantize(DType t);
bool can_quantize(DType t);

// n is a multiple of the block size. dst receives n floats.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);
// Reference (round-to-nearest) quantizer, as ggml's *_ref functions. dst receives
// row_bytes(t, n) bytes.
void quantize_row(DType t, const float* src, void* dst, int64_t n);

}  // namespace bl
