// Per-format reference quantize / dequantize functions behind quant.h's dispatch.
// Each takes n elements (a multiple of the format's block size); x is fp32, blocks are the
// structs of quant/blocks.h. Kept internal to quant/ and the kernels' tests.
#pragma once

#include <cmath>
#include <cstdint>

#include "quant/blocks.h"

namespace bl::quant {

// Round to nearest, ties to even (the default FP rounding mode), like ggml's nearest_int.
inline int nearest_int(float v) { return static_cast<int>(std::lrintf(v)); }

void dequantize_q4_0(const BlockQ4_0* x, float* y, int64_t n);
void dequantize_q4_1(const BlockQ4_1* x, float* y, int64_t n);
void dequantize_q5_0(const BlockQ5_0* x, float* y, int64_t n);
void dequantize_q5_1(const BlockQ5_1* x, float* y, int64_t n);
void dequantize_q8_0(const BlockQ8_0* x, float* y, int64_t n);
void dequantize_q8_1(const BlockQ8_1* x, float* y, int64_t n);
void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t n);
void quantize_q4_1(const float* x, BlockQ4_1* y, int64_t n);
void quantize_q5_0(const float* x, BlockQ5_0* y, int64_t n);
void quantize_q5_1(const float* x, BlockQ5_1* y, int64_t n);
void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t n);
void quantize_q8_1(const float* x, BlockQ8_1* y, int64_t n);

void dequantize_q2_k(const BlockQ2_K* x, float* y, int64_t n);
void dequantize_q3_k(const BlockQ3_K* x, float* y, int64_t n);
void dequantize_q4_k(const BlockQ4_K* x, float* y, int64_t n);
void dequantize_q5_k(const BlockQ5_K* x, float* y, int64_t n);
void dequantize_q6_k(const BlockQ6_K* x, float* y, int64_t n);
void dequantize_q8_k(const BlockQ8_K* x, float* y, int64_t n);
void quantize_q2_k(const float* x, BlockQ2_K* y, int64_t n);
void quantize_q3_k(const float* x, BlockQ3_K* y, int64_t n);
void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t n);
void quantize_q5_k(const float* x, BlockQ5_K* y, int64_t n);
void quantize_q6_k(const float* x, BlockQ6_K* y, int64_t n);
void quantize_q8_k(const float* x, BlockQ8_K* y, int64_t n);

void dequantize_tq1_0(const BlockTQ1_0* x, float* y, int64_t n);
void dequantize_tq2_0(const BlockTQ2_0* x, float* y, int64_t n);
void quantize_tq1_0(const float* x, BlockTQ1_0* y, int64_t n);
void quantize_tq2_0(const float* x, BlockTQ2_0* y, int64_t n);

// The 6-bit sub-block scale j (0..7) and min of a Q4_K / Q5_K block's packed 12 scale bytes.
inline void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

// The 16 signed 6-bit sub-block scales of a Q3_K block (scale - 32 already applied).
void unpack_q3_k_scales(const uint8_t packed[12], int8_t out[16]);

}  // namespace bl::quant
