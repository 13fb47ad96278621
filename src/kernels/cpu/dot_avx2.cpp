// The AVX2 level: 256-bit kernels of dot_x86_256.h with maddubs/madd integer dots, and an
// AVX2 activation quantizer for the 32-element formats.
#include "kernels/cpu/dot_act_quant_x86.h"
#include "kernels/cpu/dot_x86_256.h"

namespace bl::cpu {
namespace {

using K = x86::Kernels256<false>;
using x86::dot_tiles;

constexpr DotKernel kF32{DType::F32, dot_tiles<K::F32>, nullptr};
constexpr DotKernel kF16{DType::F32, dot_tiles<K::F16>, nullptr};
constexpr DotKernel kBF16{DType::F32, dot_tiles<K::BF16>, nullptr};
constexpr DotKernel kQ4_0{DType::Q8_0, dot_tiles<K::Q4_0>, x86::quantize_q8_pairs_avx2, ActLayout::q8_pairs_scales, x86::dequantize_q8_pairs};
constexpr DotKernel kQ5_0{DType::Q8_0, dot_tiles<K::Q5_0>, x86::quantize_q8_pairs_avx2, ActLayout::q8_pairs_scales, x86::dequantize_q8_pairs};
constexpr DotKernel kQ8_0{DType::Q8_0, dot_tiles<K::Q8_0>, x86::quantize_q8_0_scales_avx2, ActLayout::q8_0_scales, x86::dequantize_q8_0_scales};
constexpr DotKernel kQ4_1{DType::Q8_0, dot_tiles<K::Q4_1>, x86::quantize_q8_pairs_avx2, ActLayout::q8_pairs_scales, x86::dequantize_q8_pairs};
constexpr DotKernel kQ5_1{DType::Q8_0, dot_tiles<K::Q5_1>, x86::quantize_q8_pairs_avx2, ActLayout::q8_pairs_scales, x86::dequantize_q8_pairs};
constexpr DotKernel kQ4_K{DType::Q8_K, dot_tiles<K::Q4_K>, x86::quantize_q8_k_avx2};
constexpr DotKernel kQ5_K{DType::Q8_K, dot_tiles<K::Q5_K>, x86::quantize_q8_k_avx2};
constexpr DotKernel kQ6_K{DType::Q8_K, dot_tiles<K::Q6_K>, x86::quantize_q8_k_avx2};
constexpr DotKernel kQ2_K{DType::Q8_K, dot_tiles<K::Q2_K>, x86::quantize_q8_k_avx2};
constexpr DotKernel kQ3_K{DType::Q8_K, dot_tiles<K::Q3_K>, x86::quantize_q8_k_avx2};

}  // namespace

const DotKernel* dot_kernel_avx2(DType w) {
  switch (w) {
    case DType::F32: return &kF32;
    case DType::F16: return &kF16;
    case DType::BF16: return &kBF16;
    case DType::Q4_0: return &kQ4_0;
    case DType::Q4_1: return &kQ4_1;
    case DType::Q5_0: return &kQ5_0;
    case DType::Q5_1: return &kQ5_1;
    case DType::Q8_0: return &kQ8_0;
    case DType::Q4_K: return &kQ4_K;
    case DType::Q5_K: return &kQ5_K;
    case DType::Q6_K: return &kQ6_K;
    case DType::Q2_K: return &kQ2_K;
    case DType::Q3_K: return &kQ3_K;
    default: return nullptr;
  }
}

}  // namespace bl::cpu
