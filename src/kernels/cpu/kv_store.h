// Writing new keys / values into the KV cache.
#pragma once

#include <cstdint>

#include "core/tensor.h"
#include "kernels/cpu/cpu_features.h"

namespace bl::cpu {

// Copies token t of src [head_dim, n_head_kv, n] (F32) into slot positions[t] of cache
// [head_dim, n_head_kv, n_ctx] (F32, or F16 rounded to nearest even like core/half.h).
// Tokens whose position is outside [0, n_ctx) are skipped (callers keep positions in range).
void kv_store(const Tensor& src, Tensor& cache, const int32_t* positions, Isa isa = active_isa());

// n floats to IEEE fp16 bits, round to nearest even (the variants behind kv_store).
void f32_to_f16_row_scalar(const float* src, uint16_t* dst, int64_t n);
void f32_to_f16_row_avx2(const float* src, uint16_t* dst, int64_t n);
void f32_to_f16_row_avx512(const float* src, uint16_t* dst, int64_t n);

}  // namespace bl::cpu
