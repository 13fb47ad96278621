// Dispatch of quant.h's reference quantize_row / dequantize_row to the per-format code.
#include "quant/quant.h"

#include <cassert>
#include <cstring>

#include "core/half.h"
#include "quant/bl_group.h"
#include "quant/quant_formats.h"

namespace bl {

bool can_dequantize(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16:
    case DType::Q4_0: case DType::Q4_1: case DType::Q5_0: case DType::Q5_1:
    case DType::Q8_0: case DType::Q8_1:
    case DType::Q2_K: case DType::Q3_K: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K: case DType::Q8_K:
    case DType::TQ1_0: case DType::TQ2_0:
      return true;
    default:
      return quant::is_bl_group(t);
  }
}

bool can_quantize(DType t) { return can_dequantize(t); }

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  using namespace quant;
  assert(can_dequantize(t) && n % dtype_info(t)->block_elems == 0 && dtype_info(t)->tile_rows == 1);
  switch (t) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case DType::F16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(h[i]);
      return;
    }
    case DType::BF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(h[i]);
      return;
    }
    case DType::Q4_0: return dequantize_q4_0(static_cast<const BlockQ4_0*>(src), dst, n);
    case DType::Q4_1: return dequantize_q4_1(static_cast<const BlockQ4_1*>(src), dst, n);
    case DType::Q5_0: return dequantize_q5_0(static_cast<const BlockQ5_0*>(src), dst, n);
    case DType::Q5_1: return dequantize_q5_1(static_cast<const BlockQ5_1*>(src), dst, n);
    case DType::Q8_0: return dequantize_q8_0(static_cast<const BlockQ8_0*>(src), dst, n);
    case DType::Q8_1: return dequantize_q8_1(static_cast<const BlockQ8_1*>(src), dst, n);
    case DType::Q2_K: return dequantize_q2_k(static_cast<const BlockQ2_K*>(src), dst, n);
    case DType::Q3_K: return dequantize_q3_k(static_cast<const BlockQ3_K*>(src), dst, n);
    case DType::Q4_K: return dequantize_q4_k(static_cast<const BlockQ4_K*>(src), dst, n);
    case DType::Q5_K: return dequantize_q5_k(static_cast<const BlockQ5_K*>(src), dst, n);
    case DType::Q6_K: return dequantize_q6_k(static_cast<const BlockQ6_K*>(src), dst, n);
    case DType::Q8_K: return dequantize_q8_k(static_cast<const BlockQ8_K*>(src), dst, n);
    case DType::TQ1_0: return dequantize_tq1_0(static_cast<const BlockTQ1_0*>(src), dst, n);
    case DType::TQ2_0: return dequantize_tq2_0(static_cast<const BlockTQ2_0*>(src), dst, n);
    default: assert(!"dequantize_row: a tiled type (use dequantize_matrix_row)"); return;
  }
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  using namespace quant;
  assert(can_quantize(t) && n % dtype_info(t)->block_elems == 0 && dtype_info(t)->tile_rows == 1);
  switch (t) {
    case DType::F32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case DType::F16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_fp16(src[i]);
      return;
    }
    case DType::BF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::Q4_0: return quantize_q4_0(src, static_cast<BlockQ4_0*>(dst), n);
    case DType::Q4_1: return quantize_q4_1(src, static_cast<BlockQ4_1*>(dst), n);
    case DType::Q5_0: return quantize_q5_0(src, static_cast<BlockQ5_0*>(dst), n);
    case DType::Q5_1: return quantize_q5_1(src, static_cast<BlockQ5_1*>(dst), n);
    case DType::Q8_0: return quantize_q8_0(src, static_cast<BlockQ8_0*>(dst), n);
    case DType::Q8_1: return quantize_q8_1(src, static_cast<BlockQ8_1*>(dst), n);
    case DType::Q2_K: return quantize_q2_k(src, static_cast<BlockQ2_K*>(dst), n);
    case DType::Q3_K: return quantize_q3_k(src, static_cast<BlockQ3_K*>(dst), n);
    case DType::Q4_K: return quantize_q4_k(src, static_cast<BlockQ4_K*>(dst), n);
    case DType::Q5_K: return quantize_q5_k(src, static_cast<BlockQ5_K*>(dst), n);
    case DType::Q6_K: return quantize_q6_k(src, static_cast<BlockQ6_K*>(dst), n);
    case DType::Q8_K: return quantize_q8_k(src, static_cast<BlockQ8_K*>(dst), n);
    case DType::TQ1_0: return quantize_tq1_0(src, static_cast<BlockTQ1_0*>(dst), n);
    case DType::TQ2_0: return quantize_tq2_0(src, static_cast<BlockTQ2_0*>(dst), n);
    default: assert(!"quantize_row: a tiled type (use quantize_matrix)"); return;
  }
}

void quantize_matrix(DType t, const float* src, void* dst, int64_t rows, int64_t cols, const float* importance) {
  if (quant::is_bl_group(t)) return quant::quantize_bl_matrix(t, src, dst, rows, cols, importance);
  const size_t stride = row_bytes(t, cols);
  for (int64_t r = 0; r < rows; ++r) quantize_row(t, src + r * cols, static_cast<char*>(dst) + stride * r, cols);
}

void dequantize_matrix_row(DType t, const void* matrix, int64_t cols, int64_t row, float* dst) {
  if (quant::is_bl_group(t)) return quant::dequantize_bl_row(t, matrix, cols, row, dst);
  dequantize_row(t, static_cast<const char*>(matrix) + row_bytes(t, cols) * row, dst, cols);
}

}  // namespace bl
