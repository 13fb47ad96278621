// Block structs of the GGUF (ggml) weight formats, byte-compatible with GGUF files.
// One definition, shared by the reference code, the CPU kernels and the CUDA kernels.
// fp16 fields are raw uint16_t bits (core/half.h converts).
#pragma once

#include <cassert>
#include <cstdint>

#include "core/dtype.h"

namespace bl {

constexpr int kQK = 32;    // elements per block, legacy formats
constexpr int kQKK = 256;  // elements per super-block, K-quants
constexpr int kScaleBytesK = 12;

// x = d * q, q in [-8, 7] stored as q + 8; element j in low nibble of qs[j], j + 16 in high.
struct BlockQ4_0 { uint16_t d; uint8_t qs[kQK / 2]; };
// x = d * q + m, q in [0, 15]; same nibble order as Q4_0.
struct BlockQ4_1 { uint16_t d; uint16_t m; uint8_t qs[kQK / 2]; };
// 5-bit: low 4 bits as Q4_0, bit 4 of element j in bit j of qh. x = d * (q - 16).
struct BlockQ5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
struct BlockQ5_1 { uint16_t d; uint16_t m; uint8_t qh[4]; uint8_t qs[kQK / 2]; };
struct BlockQ8_0 { uint16_t d; int8_t qs[kQK]; };
struct BlockQ8_1 { uint16_t d; uint16_t s; int8_t qs[kQK]; };  // s = d * sum(qs)

// K-quants: 256 elements in 8 or 16 sub-blocks with 6-bit (or 4-bit) sub-scales.
struct BlockQ2_K { uint8_t scales[kQKK / 16]; uint8_t qs[kQKK / 4]; uint16_t d; uint16_t dmin; };
struct BlockQ3_K { uint8_t hmask[kQKK / 8]; uint8_t qs[kQKK / 4]; uint8_t scales[12]; uint16_t d; };
struct BlockQ4_K { uint16_t d; uint16_t dmin; uint8_t scales[kScaleBytesK]; uint8_t qs[kQKK / 2]; };
struct BlockQ5_K { uint16_t d; uint16_t dmin; uint8_t scales[kScaleBytesK]; uint8_t qh[kQKK / 8]; uint8_t qs[kQKK / 2]; };
struct BlockQ6_K { uint8_t ql[kQKK / 2]; uint8_t qh[kQKK / 4]; int8_t scales[kQKK / 16]; uint16_t d; };
// Activation format for K-quant dot products: d is fp32; bsums are sums of 16-element groups.
struct BlockQ8_K { float d; int8_t qs[kQKK]; int16_t bsums[kQKK / 16]; };

// Ternary (BitNet b1.58): TQ1_0 packs 5 trits per byte (base 3), TQ2_0 2 bits per weight.
struct BlockTQ1_0 { uint8_t qs[(kQKK - 4 * kQKK / 64) / 5]; uint8_t qh[kQKK / 64]; uint16_t d; };
struct BlockTQ2_0 { uint8_t qs[kQKK / 4]; uint16_t d; };

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22);
static_assert(sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110 && sizeof(BlockQ4_K) == 144);
static_assert(sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);
static_assert(sizeof(BlockTQ1_0) == 54 && sizeof(BlockTQ2_0) == 66);

// The fields of one block of a legacy 32-weight format (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0), by type.
struct LegacyBlockFields {
  const uint16_t* d;
  const uint16_t* m;   // nullptr without a min (Q4_0, Q5_0, Q8_0)
  const uint8_t* qh;   // Q5's fifth bits (bit j: weight j), nullptr otherwise
  const uint8_t* qs;   // 16 bytes of nibbles, or Q8_0's 32 int8
};
inline LegacyBlockFields legacy_block_fields(DType type, const void* block) {
  switch (type) {
    case DType::Q4_0: {
      const auto* b = static_cast<const BlockQ4_0*>(block);
      return {&b->d, nullptr, nullptr, b->qs};
    }
    case DType::Q4_1: {
      const auto* b = static_cast<const BlockQ4_1*>(block);
      return {&b->d, &b->m, nullptr, b->qs};
    }
    case DType::Q5_0: {
      const auto* b = static_cast<const BlockQ5_0*>(block);
      return {&b->d, nullptr, b->qh, b->qs};
    }
    case DType::Q5_1: {
      const auto* b = static_cast<const BlockQ5_1*>(block);
      return {&b->d, &b->m, b->qh, b->qs};
    }
    default: {
      assert(type == DType::Q8_0);
      const auto* b = static_cast<const BlockQ8_0*>(block);
      return {&b->d, nullptr, nullptr, reinterpret_cast<const uint8_t*>(b->qs)};
    }
  }
}

}  // namespace bl
