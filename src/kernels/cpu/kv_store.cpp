#include "kernels/cpu/kv_store.h"

#include <cassert>
#include <cstring>

#include "core/half.h"

namespace bl::cpu {

void f32_to_f16_row_scalar(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_fp16(src[i]);
}

void kv_store(const Tensor& src, Tensor& cache, const int32_t* positions, Isa isa) {
  assert(cache.dtype == DType::F32 || cache.dtype == DType::F16);
  const int64_t row = src.ne[0] * src.ne[1];  // head_dim * n_head_kv floats per slot
  const int64_t n_ctx = cache.ne[2];
  auto convert = isa == Isa::avx512 ? f32_to_f16_row_avx512
                 : isa == Isa::avx2 ? f32_to_f16_row_avx2
                                      : f32_to_f16_row_scalar;
  for (int64_t t = 0; t < src.ne[2]; ++t) {
    const int64_t slot = positions[t];
    assert(slot >= 0 && slot < n_ctx);
    if (slot < 0 || slot >= n_ctx) continue;
    const float* s = src.as<const float>() + t * row;
    if (cache.dtype == DType::F16) {
      convert(s, cache.as<uint16_t>() + slot * row, row);
    } else {
      std::memcpy(cache.as<float>() + slot * row, s, static_cast<size_t>(row) * sizeof(float));
    }
  }
}

}  // namespace bl::cpu
