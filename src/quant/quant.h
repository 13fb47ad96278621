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

// One row of a row-major type (DTypeInfo::tile_rows == 1). n is a multiple of the block size.
// dst receives n floats.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);
// Reference (round-to-nearest) quantizer, as ggml's *_ref functions. dst receives
// row_bytes(t, n) bytes.
void quantize_row(DType t, const float* src, void* dst, int64_t n);

// Any type, tiled ones (bl<b>g<g>) included: a whole matrix src [rows][cols] (rows a multiple
// of tile_rows) into dst (rows * row_bytes(t, cols) bytes). importance ([cols] or nullptr) is
// the activation-aware weighting of the bl types' quantizer; other types ignore it.
void quantize_matrix(DType t, const float* src, void* dst, int64_t rows, int64_t cols,
                     const float* importance = nullptr);
// dst [cols] = row `row` of the matrix of type t that starts at `matrix`.
void dequantize_matrix_row(DType t, const void* matrix, int64_t cols, int64_t row, float* dst);

}  // namespace bl
