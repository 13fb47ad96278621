// The AVX-512 level: 512-bit integer kernels for Q4_0 / Q4_1 / Q8_0 (dot_x86_512.h), the
// 256-bit kernels of dot_x86_256.h for the other integer formats (EVEX-encoded, 32
// registers), each with a variant using AVX512-VNNI vpdpbusd, and 512-bit fp32 kernels for
// F32 / F16 / BF16.
// GCC 12's AVX-512 headers seed unmasked intrinsics with _mm512_undefined_*(), which its
// -Wmaybe-uninitialized then reports at every inlined use (GCC PR 105593, fixed in 12.3/13).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

#include "kernels/cpu/dot_act_quant_x86.h"
#include "kernels/cpu/dot_x86_256.h"
#include "kernels/cpu/dot_x86_512.h"

namespace bl::cpu {
namespace {

using x86::dot_tiles;

template <bool kVnni>
struct Table {
  using K = x86::Kernels256<kVnni>;
  using K512 = x86::Kernels512;
  using L512 = x86::Legacy512<kVnni>;
  static constexpr DotKernel f32{DType::F32, dot_tiles<K512::F32>, nullptr};
  static constexpr DotKernel f16{DType::F32, dot_tiles<K512::F16>, nullptr};
  static constexpr DotKernel bf16{DType::F32, dot_tiles<K512::BF16>, nullptr};
  static constexpr DotKernel q4_0{DType::Q8_0, dot_tiles<L512::template Q4_0>, x86::quantize_q8_pairs_avx2, ActLayout::q8_pairs_scales, x86::dequantize_q8_pairs};
  static constexpr DotKernel q5_0{DType::Q8_0, dot_tiles<K::template Q5_0>, x86::quantize_q8_pairs_avx2, ActLayout::q8_pairs_scales, x86::dequantize_q8_pairs};
  static constexpr DotKernel q8_0{DType::Q8_0, dot_tiles<L512::template Q8_0>, x86::quantize_q8_pairs_avx2, ActLayout::q8_pairs_scales, x86::dequantize_q8_pairs};
  static constexpr DotKernel q4_1{DType::Q8_0, dot_tiles<L512::template Q4_1>, x86::quantize_q8_pairs_avx2, ActLayout::q8_pairs_scales, x86::dequantize_q8_pairs};
  static constexpr DotKernel q5_1{DType::Q8_0, dot_tiles<K::template Q5_1>, x86::quantize_q8_pairs_avx2, ActLayout::q8_pairs_scales, x86::dequantize_q8_pairs};
  static constexpr DotKernel q4_k{DType::Q8_K, dot_tiles<K::template Q4_K>, x86::quantize_q8_k_avx2};
  static constexpr DotKernel q5_k{DType::Q8_K, dot_tiles<K::template Q5_K>, x86::quantize_q8_k_avx2};
  static constexpr DotKernel q6_k{DType::Q8_K, dot_tiles<K::template Q6_K>, x86::quantize_q8_k_avx2};
  static constexpr DotKernel q2_k{DType::Q8_K, dot_tiles<K::template Q2_K>, x86::quantize_q8_k_avx2};
  static constexpr DotKernel q3_k{DType::Q8_K, dot_tiles<K::template Q3_K>, x86::quantize_q8_k_avx2};

  static const DotKernel* get(DType w) {
    switch (w) {
      case DType::F32: return &f32;
      case DType::F16: return &f16;
      case DType::BF16: return &bf16;
      case DType::Q4_0: return &q4_0;
      case DType::Q4_1: return &q4_1;
      case DType::Q5_0: return &q5_0;
      case DType::Q5_1: return &q5_1;
      case DType::Q8_0: return &q8_0;
      case DType::Q4_K: return &q4_k;
      case DType::Q5_K: return &q5_k;
      case DType::Q6_K: return &q6_k;
      case DType::Q2_K: return &q2_k;
      case DType::Q3_K: return &q3_k;
      default: return nullptr;
    }
  }
};

}  // namespace

// vpdpbusd on ymm measured slower than maddubs + madd for the 256-bit kernels on Sapphire
// Rapids (Q4_0 decode in L2: 1.22 vs 1.06 ns per block on the dev box, 1.80 vs 1.48 on the
// H100 host's Xeon), so this table uses the maddubs form; the VNNI table is tested against it
// (dot_kernel_avx512_vnni) and preferred only for the 512-bit kernels (dot_kernel_avx512_best).
const DotKernel* dot_kernel_avx512(DType w) { return Table<false>::get(w); }

const DotKernel* dot_kernel_avx512_vnni(DType w) {
  return cpu_features().has_avx512vnni && isa_supported(Isa::avx512) ? Table<true>::get(w) : nullptr;
}

// Q4_0 / Q4_1 / Q8_0 run 512-bit kernels, where one vpdpbusd replaces maddubs + madd: with
// two activation terms, 1.91 vs 2.09 ns per Q4_0 block in L2 on the dev box (loaded).
const DotKernel* dot_kernel_avx512_best(DType w) {
  const bool zmm_integer = w == DType::Q4_0 || w == DType::Q4_1 || w == DType::Q8_0;
  if (zmm_integer)
    if (const DotKernel* k = dot_kernel_avx512_vnni(w)) return k;
  return dot_kernel_avx512(w);
}

}  // namespace bl::cpu
