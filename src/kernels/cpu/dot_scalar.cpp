// Portable scalar dot kernels: the fallback on CPUs without AVX2 and the structure the SIMD
// kernels follow (integer sums per block, one fp32 multiply-add per block).
#include <cstring>

#include "core/half.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/dot_kquant_unpack.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace bl::cpu {
namespace {

// Runs the one-column dot `one` for each of the ncols columns.
template <float (*one)(int64_t, const void*, const void*)>
void each_column(int64_t cols, const void* w, const void* x, size_t x_stride, int ncols, float* out) {
  for (int c = 0; c < ncols; ++c) out[c] = one(cols, w, static_cast<const char*>(x) + x_stride * c);
}

float dot_f32(int64_t cols, const void* w, const void* x) {
  const auto* a = static_cast<const float*>(w);
  const auto* b = static_cast<const float*>(x);
  float acc[8] = {};
  int64_t k = 0;
  for (; k + 8 <= cols; k += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[k + j] * b[k + j];
  for (; k < cols; ++k) acc[0] += a[k] * b[k];
  float s = 0;
  for (float v : acc) s += v;
  return s;
}

template <float (*to_f32)(uint16_t)>
float dot_half(int64_t cols, const void* w, const void* x) {
  const auto* a = static_cast<const uint16_t*>(w);
  const auto* b = static_cast<const float*>(x);
  float acc[8] = {};
  int64_t k = 0;
  for (; k + 8 <= cols; k += 8)
    for (int j = 0; j < 8; ++j) acc[j] += to_f32(a[k + j]) * b[k + j];
  for (; k < cols; ++k) acc[0] += to_f32(a[k]) * b[k];
  float s = 0;
  for (float v : acc) s += v;
  return s;
}

float dot_q4_0(int64_t cols, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ4_0*>(w);
  const auto* b = static_cast<const BlockQ8_0*>(x);
  float s = 0;
  for (int64_t i = 0; i < cols / kQK; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQK / 2; ++j)
      sumi += ((a[i].qs[j] & 0xF) - 8) * b[i].qs[j] + ((a[i].qs[j] >> 4) - 8) * b[i].qs[j + kQK / 2];
    s += static_cast<float>(sumi) * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d);
  }
  return s;
}

float dot_q4_1(int64_t cols, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ4_1*>(w);
  const auto* b = static_cast<const BlockQ8_1*>(x);
  float s = 0;
  for (int64_t i = 0; i < cols / kQK; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQK / 2; ++j) sumi += (a[i].qs[j] & 0xF) * b[i].qs[j] + (a[i].qs[j] >> 4) * b[i].qs[j + kQK / 2];
    // sum_j (d q_j + m) x_j = d dx sumi + m * (dx sum_j qx_j) = ... + m * s
    s += static_cast<float>(sumi) * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d) + fp16_to_f32(a[i].m) * fp16_to_f32(b[i].s);
  }
  return s;
}

// 5-bit quants: low nibble from qs, bit 4 of element j from bit j of qh.
template <typename Block>
int q5_sumi(const Block& a, const int8_t* y, int offset) {
  uint32_t qh;
  std::memcpy(&qh, a.qh, sizeof(qh));
  int sumi = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
    sumi += (((a.qs[j] & 0xF) | h0) - offset) * y[j] + (((a.qs[j] >> 4) | h1) - offset) * y[j + kQK / 2];
  }
  return sumi;
}

float dot_q5_0(int64_t cols, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ5_0*>(w);
  const auto* b = static_cast<const BlockQ8_0*>(x);
  float s = 0;
  for (int64_t i = 0; i < cols / kQK; ++i)
    s += static_cast<float>(q5_sumi(a[i], b[i].qs, 16)) * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d);
  return s;
}

float dot_q5_1(int64_t cols, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ5_1*>(w);
  const auto* b = static_cast<const BlockQ8_1*>(x);
  float s = 0;
  for (int64_t i = 0; i < cols / kQK; ++i)
    s += static_cast<float>(q5_sumi(a[i], b[i].qs, 0)) * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d) +
         fp16_to_f32(a[i].m) * fp16_to_f32(b[i].s);
  return s;
}

float dot_q8_0(int64_t cols, const void* w, const void* x) {
  const auto* a = static_cast<const BlockQ8_0*>(w);
  const auto* b = static_cast<const BlockQ8_0*>(x);
  float s = 0;
  for (int64_t i = 0; i < cols / kQK; ++i) {
    int sumi = 0;
    for (int j = 0; j < kQK; ++j) sumi += a[i].qs[j] * b[i].qs[j];
    s += static_cast<float>(sumi) * fp16_to_f32(a[i].d) * fp16_to_f32(b[i].d);
  }
  return s;
}

// K-quants through the common unpacked form: w_e = d * sc[e/16] * q_e - dmin * mn[e/16].
template <typename Block>
float dot_kquant(int64_t cols, const void* w, const void* x) {
  const auto* a = static_cast<const Block*>(w);
  const auto* b = static_cast<const BlockQ8_K*>(x);
  float s = 0;
  for (int64_t i = 0; i < cols / kQKK; ++i) {
    KQuantUnpacked u;
    unpack_kquant(a[i], &u);
    int sum_q = 0, sum_m = 0;
    for (int g = 0; g < kQKK / 16; ++g) {
      int sg = 0;
      for (int l = 0; l < 16; ++l) sg += u.q[16 * g + l] * b[i].qs[16 * g + l];
      sum_q += u.scale[g] * sg;
      sum_m += u.min[g] * b[i].bsums[g];
    }
    s += b[i].d * (u.d * static_cast<float>(sum_q) - u.dmin * static_cast<float>(sum_m));
  }
  return s;
}

void quantize_q8_0_act(const float* x, void* dst, int64_t n) { quantize_row(DType::Q8_0, x, dst, n); }
void quantize_q8_1_act(const float* x, void* dst, int64_t n) { quantize_row(DType::Q8_1, x, dst, n); }
void quantize_q8_k_act(const float* x, void* dst, int64_t n) { quantize_row(DType::Q8_K, x, dst, n); }

constexpr DotKernel kF32{DType::F32, each_column<dot_f32>, nullptr};
constexpr DotKernel kF16{DType::F32, each_column<dot_half<fp16_to_f32>>, nullptr};
constexpr DotKernel kBF16{DType::F32, each_column<dot_half<bf16_to_f32>>, nullptr};
constexpr DotKernel kQ4_0{DType::Q8_0, each_column<dot_q4_0>, quantize_q8_0_act};
constexpr DotKernel kQ4_1{DType::Q8_1, each_column<dot_q4_1>, quantize_q8_1_act};
constexpr DotKernel kQ5_0{DType::Q8_0, each_column<dot_q5_0>, quantize_q8_0_act};
constexpr DotKernel kQ5_1{DType::Q8_1, each_column<dot_q5_1>, quantize_q8_1_act};
constexpr DotKernel kQ8_0{DType::Q8_0, each_column<dot_q8_0>, quantize_q8_0_act};
constexpr DotKernel kQ2_K{DType::Q8_K, each_column<dot_kquant<BlockQ2_K>>, quantize_q8_k_act};
constexpr DotKernel kQ3_K{DType::Q8_K, each_column<dot_kquant<BlockQ3_K>>, quantize_q8_k_act};
constexpr DotKernel kQ4_K{DType::Q8_K, each_column<dot_kquant<BlockQ4_K>>, quantize_q8_k_act};
constexpr DotKernel kQ5_K{DType::Q8_K, each_column<dot_kquant<BlockQ5_K>>, quantize_q8_k_act};
constexpr DotKernel kQ6_K{DType::Q8_K, each_column<dot_kquant<BlockQ6_K>>, quantize_q8_k_act};

}  // namespace

const DotKernel* dot_kernel_scalar(DType w) {
  switch (w) {
    case DType::F32: return &kF32;
    case DType::F16: return &kF16;
    case DType::BF16: return &kBF16;
    case DType::Q4_0: return &kQ4_0;
    case DType::Q4_1: return &kQ4_1;
    case DType::Q5_0: return &kQ5_0;
    case DType::Q5_1: return &kQ5_1;
    case DType::Q8_0: return &kQ8_0;
    case DType::Q2_K: return &kQ2_K;
    case DType::Q3_K: return &kQ3_K;
    case DType::Q4_K: return &kQ4_K;
    case DType::Q5_K: return &kQ5_K;
    case DType::Q6_K: return &kQ6_K;
    default: return nullptr;
  }
}

const DotKernel* find_dot_kernel(DType w, Isa isa) {
  if (isa == Isa::avx512 && isa_supported(Isa::avx512))
    if (const DotKernel* k = dot_kernel_avx512_best(w)) return k;
  if (isa >= Isa::avx2 && isa_supported(Isa::avx2))
    if (const DotKernel* k = dot_kernel_avx2(w)) return k;
  return dot_kernel_scalar(w);
}

}  // namespace bl::cpu
