// Device-side decoding of weight rows in their GGUF layouts, 32 elements at a time.
//
// Every format is read in "chunks" of 32 consecutive elements of one row (a legacy block, or
// one sub-block of a K-quant super-block); these decoders feed get_rows and the dequantize-
// for-GEMM kernel. The GEMV reads 8-weight "pieces" instead (gemv_pieces.cuh), laid out for
// coalesced loads across a warp. The formulas are those of bl::dequantize_row
// (quant/quant.h), the reference the tests compare with; block structs from quant/blocks.h.
//
// Loads: K-quant Q4_K/Q5_K super-blocks are 144/176 bytes (multiples of 16), so their nibbles
// are read with 16-byte loads; the legacy blocks (18, 20, 34 bytes) and Q6_K (210) are only 2-
// or 4-byte aligned inside a row, so they are read with the widest aligned load.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "kernels/cuda/weight_layout.cuh"
#include "quant/blocks.h"

namespace bl::cuda {

constexpr int kChunk = 32;  // elements decoded per call

__device__ __forceinline__ float half_bits_to_float(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf16_bits_to_float(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }
// fp16 (or bf16) bits -> fp32, exact.
template <bool kBf16>
__device__ __forceinline__ float from_half_bits(uint16_t h) {
  return kBf16 ? bf16_bits_to_float(h) : half_bits_to_float(h);
}
// fp32 -> fp16 (or bf16) bits, round to nearest: the GEMM operand of the prefill path.
template <bool kBf16>
__device__ __forceinline__ uint16_t to_half_bits(float v) {
  if constexpr (kBf16) return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  return __half_as_ushort(__float2half_rn(v));
}

// Q4_K / Q5_K sub-block scale and min (ggml's get_scale_min_k4), j in [0, 8), from the 12
// scale bytes held as three little-endian words (shifts, so no local-memory byte array).
__device__ __forceinline__ void k4_scale_min(int j, const uint32_t s[3], float& sc, float& m) {
  if (j < 4) {
    sc = static_cast<float>((s[0] >> (8 * j)) & 63);
    m = static_cast<float>((s[1] >> (8 * j)) & 63);
  } else {
    const int b = 8 * (j - 4);
    sc = static_cast<float>(((s[2] >> b) & 0xF) | (((s[0] >> (b + 6)) & 3) << 4));
    m = static_cast<float>(((s[2] >> (b + 4)) & 0xF) | (((s[1] >> (b + 6)) & 3) << 4));
  }
}

// Each decoder: `static void chunk(const uint8_t* row, int64_t c, float w[32])` writes elements
// [32c, 32c + 32) of the row (the tileable formats take `kTiled`: the row is in the tiled
// layout of weight_layout.cuh); `static float element(const uint8_t* row, int64_t i)` one element
// (used for row tails of the plain types and by nothing hot).
template <DType T>
struct Decoder;

template <>
struct Decoder<DType::Q4_0> {
  template <bool kTiled>
  __device__ __forceinline__ static void chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
    const BlockRef blk = block_ref<DType::Q4_0, kTiled>(row, c);
    const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk.hdr));
    const uint16_t* qs = reinterpret_cast<const uint16_t*>(blk.body);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t q = qs[i];  // qs[2i], qs[2i+1]
      w[2 * i] = (static_cast<int>(q & 0xF) - 8) * d;
      w[2 * i + 1] = (static_cast<int>((q >> 8) & 0xF) - 8) * d;
      w[2 * i + 16] = (static_cast<int>((q >> 4) & 0xF) - 8) * d;
      w[2 * i + 17] = (static_cast<int>((q >> 12) & 0xF) - 8) * d;
    }
  }
};

template <>
struct Decoder<DType::Q4_1> {
  template <bool kTiled>
  __device__ __forceinline__ static void chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
    const BlockRef blk = block_ref<DType::Q4_1, kTiled>(row, c);
    const uint32_t* qs = reinterpret_cast<const uint32_t*>(blk.body);
    const uint32_t dm = *reinterpret_cast<const uint32_t*>(blk.hdr);
    const float d = half_bits_to_float(static_cast<uint16_t>(dm & 0xFFFF));
    const float m = half_bits_to_float(static_cast<uint16_t>(dm >> 16));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t q = qs[i];  // qs[4i .. 4i+3]
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        w[4 * i + k] = static_cast<float>((q >> (8 * k)) & 0xF) * d + m;
        w[4 * i + k + 16] = static_cast<float>((q >> (8 * k + 4)) & 0xF) * d + m;
      }
    }
  }
};

// Q5_0 (22 bytes: d, qh[4], qs[16]) and Q5_1 (24 bytes: d, m, qh[4], qs[16]): weight j < 16 is
// the low nibble of qs[j] with bit j of qh as its fifth bit, weight j + 16 the high nibble with
// bit j + 16; value (q - 16) d, or q d + m. Q5_0 blocks are only 2-byte aligned in a row.
template <bool kMin>
struct DecoderQ5 {
  static constexpr size_t kBytes = kMin ? sizeof(BlockQ5_1) : sizeof(BlockQ5_0);
  static constexpr int kQh = kMin ? 4 : 2;  // byte offset of qh; qs follows it
  __device__ __forceinline__ static void chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
    const uint8_t* blk = row + c * kBytes;
    const uint16_t* h16 = reinterpret_cast<const uint16_t*>(blk);
    const float d = half_bits_to_float(h16[0]);
    const float m = kMin ? half_bits_to_float(h16[1]) : -16.0f * d;
    const uint32_t qh = h16[kQh / 2] | (static_cast<uint32_t>(h16[kQh / 2 + 1]) << 16);
    const uint16_t* qs = reinterpret_cast<const uint16_t*>(blk + kQh + 4);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const uint32_t q = qs[i];  // qs[2i], qs[2i+1]
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int j = 2 * i + k;
        const uint32_t lo = ((q >> (8 * k)) & 0xF) | (((qh >> j) & 1) << 4);
        const uint32_t hi = ((q >> (8 * k + 4)) & 0xF) | (((qh >> (j + 16)) & 1) << 4);
        w[j] = static_cast<float>(lo) * d + m;
        w[j + 16] = static_cast<float>(hi) * d + m;
      }
    }
  }
};
template <>
struct Decoder<DType::Q5_0> : DecoderQ5<false> {};
template <>
struct Decoder<DType::Q5_1> : DecoderQ5<true> {};

template <>
struct Decoder<DType::Q8_0> {
  template <bool kTiled>
  __device__ __forceinline__ static void chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
    const BlockRef blk = block_ref<DType::Q8_0, kTiled>(row, c);
    const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk.hdr));
    const uint16_t* qs = reinterpret_cast<const uint16_t*>(blk.body);
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint16_t q = qs[i];
      w[2 * i] = static_cast<float>(static_cast<int8_t>(q & 0xFF)) * d;
      w[2 * i + 1] = static_cast<float>(static_cast<int8_t>(q >> 8)) * d;
    }
  }
};

template <>
struct Decoder<DType::Q4_K> {
  __device__ __forceinline__ static void chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
    const uint8_t* sb = row + (c / 8) * sizeof(BlockQ4_K);
    const int j = static_cast<int>(c % 8);
    const uint32_t dm = *reinterpret_cast<const uint32_t*>(sb);
    const float d = half_bits_to_float(static_cast<uint16_t>(dm & 0xFFFF));
    const float dmin = half_bits_to_float(static_cast<uint16_t>(dm >> 16));
    const uint32_t* s32 = reinterpret_cast<const uint32_t*>(sb + 4);
    const uint32_t scales[3] = {s32[0], s32[1], s32[2]};
    float sc, m;
    k4_scale_min(j, scales, sc, m);
    const float a = d * sc, b = dmin * m;
    const uint4* qs = reinterpret_cast<const uint4*>(sb + 16 + 32 * (j / 2));  // 16-byte aligned
    const int shift = 4 * (j & 1);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint4 v = qs[h];
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
      for (int k = 0; k < 16; ++k)
        w[16 * h + k] = a * static_cast<float>((words[k / 4] >> (8 * (k % 4) + shift)) & 0xF) - b;
    }
  }
};

template <>
struct Decoder<DType::Q5_K> {
  __device__ __forceinline__ static void chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
    const uint8_t* sb = row + (c / 8) * sizeof(BlockQ5_K);
    const int j = static_cast<int>(c % 8);
    const uint32_t dm = *reinterpret_cast<const uint32_t*>(sb);
    const float d = half_bits_to_float(static_cast<uint16_t>(dm & 0xFFFF));
    const float dmin = half_bits_to_float(static_cast<uint16_t>(dm >> 16));
    const uint32_t* s32 = reinterpret_cast<const uint32_t*>(sb + 4);
    const uint32_t scales[3] = {s32[0], s32[1], s32[2]};
    float sc, m;
    k4_scale_min(j, scales, sc, m);
    const float a = d * sc, b = dmin * m;
    const uint4* qh = reinterpret_cast<const uint4*>(sb + 16);                 // 32 bytes, bit j
    const uint4* qs = reinterpret_cast<const uint4*>(sb + 48 + 32 * (j / 2));  // nibble j & 1
    const int shift = 4 * (j & 1);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint4 v = qs[h], hv = qh[h];
      const uint32_t words[4] = {v.x, v.y, v.z, v.w};
      const uint32_t hwords[4] = {hv.x, hv.y, hv.z, hv.w};
#pragma unroll
      for (int k = 0; k < 16; ++k) {
        const uint32_t lo = (words[k / 4] >> (8 * (k % 4) + shift)) & 0xF;
        const uint32_t hi = (hwords[k / 4] >> (8 * (k % 4) + j)) & 1;
        w[16 * h + k] = a * static_cast<float>(lo | (hi << 4)) - b;
      }
    }
  }
};

template <>
struct Decoder<DType::Q6_K> {
  // Chunk c of a super-block: half hf = c / 4 (128 elements), part p = c % 4. Element l of the
  // part takes the low nibble (p < 2) or high nibble of ql[64 hf + 32 (p & 1) + l], bits
  // 2p, 2p+1 of qh[32 hf + l], and sub-scale scales[8 hf + 2p + l / 16]; value d * sc * (q - 32).
  // Through a BlockRef: hdr = scales[16], d; body = ql[128], qh[64].
  template <bool kTiled>
  __device__ __forceinline__ static void chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
    const BlockRef blk = block_ref<DType::Q6_K, kTiled>(row, c / 8);
    const int sub = static_cast<int>(c % 8);
    const int hf = sub / 4, p = sub % 4;
    const int8_t* scales = reinterpret_cast<const int8_t*>(blk.hdr);
    const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(blk.hdr + 16));
    const float s0 = d * static_cast<float>(scales[8 * hf + 2 * p]);
    const float s1 = d * static_cast<float>(scales[8 * hf + 2 * p + 1]);
    const uint16_t* ql = reinterpret_cast<const uint16_t*>(blk.body + 64 * hf + 32 * (p & 1));
    const uint16_t* qh = reinterpret_cast<const uint16_t*>(blk.body + offsetof(BlockQ6_K, qh) + 32 * hf);
    const int lshift = 4 * (p >> 1), hshift = 2 * p;
#pragma unroll
    for (int i = 0; i < 16; ++i) {
      const uint32_t l2 = ql[i], h2 = qh[i];
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const int e = 2 * i + k;
        const int q = static_cast<int>((((l2 >> (8 * k)) >> lshift) & 0xF) | ((((h2 >> (8 * k)) >> hshift) & 3) << 4)) - 32;
        w[e] = (e < 16 ? s0 : s1) * static_cast<float>(q);
      }
    }
  }
};

// Plain types. kVec: the row start is 16-byte aligned and a chunk is whole vectors, so the
// chunk is read with 16-byte loads; otherwise element by element.
template <>
struct Decoder<DType::F32> {
  template <bool kVec>
  __device__ __forceinline__ static void chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
    const float* p = reinterpret_cast<const float*>(row) + c * kChunk;
    if constexpr (kVec) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float4 v = reinterpret_cast<const float4*>(p)[i];
        w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
      }
    } else {
#pragma unroll
      for (int i = 0; i < kChunk; ++i) w[i] = p[i];
    }
  }
  __device__ __forceinline__ static float element(const uint8_t* row, int64_t i) {
    return reinterpret_cast<const float*>(row)[i];
  }
};

template <bool kBf16>
struct HalfDecoder {
  __device__ __forceinline__ static float cvt(uint16_t h) { return from_half_bits<kBf16>(h); }
  template <bool kVec>
  __device__ __forceinline__ static void chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
    const uint16_t* p = reinterpret_cast<const uint16_t*>(row) + c * kChunk;
    if constexpr (kVec) {
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint4 v = reinterpret_cast<const uint4*>(p)[i];
        const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          w[8 * i + 2 * k] = cvt(static_cast<uint16_t>(words[k] & 0xFFFF));
          w[8 * i + 2 * k + 1] = cvt(static_cast<uint16_t>(words[k] >> 16));
        }
      }
    } else {
#pragma unroll
      for (int i = 0; i < kChunk; ++i) w[i] = cvt(p[i]);
    }
  }
  __device__ __forceinline__ static float element(const uint8_t* row, int64_t i) {
    return cvt(reinterpret_cast<const uint16_t*>(row)[i]);
  }
};
template <>
struct Decoder<DType::F16> : HalfDecoder<false> {};
template <>
struct Decoder<DType::BF16> : HalfDecoder<true> {};

template <DType T>
constexpr bool is_plain_type() {
  return T == DType::F32 || T == DType::F16 || T == DType::BF16;
}

// One call for all kinds: plain types take the vector flag, tileable formats the layout flag,
// the others ignore both.
template <DType T, bool kVec, bool kTiled = false>
__device__ __forceinline__ void decode_chunk(const uint8_t* row, int64_t c, float w[kChunk]) {
  if constexpr (is_plain_type<T>()) {
    Decoder<T>::template chunk<kVec>(row, c, w);
  } else if constexpr (is_tileable<T>()) {
    Decoder<T>::template chunk<kTiled>(row, c, w);
  } else {
    Decoder<T>::chunk(row, c, w);
  }
}

// Calls f.template operator()<T>() for the runtime dtype; returns false for a dtype without a
// decoder. Keep in step with weight_format_supported (gemv.cu).
template <typename F>
bool dispatch_weight_format(DType t, F&& f) {
  switch (t) {
    case DType::F32: f.template operator()<DType::F32>(); return true;
    case DType::F16: f.template operator()<DType::F16>(); return true;
    case DType::BF16: f.template operator()<DType::BF16>(); return true;
    case DType::Q8_0: f.template operator()<DType::Q8_0>(); return true;
    case DType::Q4_0: f.template operator()<DType::Q4_0>(); return true;
    case DType::Q4_1: f.template operator()<DType::Q4_1>(); return true;
    case DType::Q5_0: f.template operator()<DType::Q5_0>(); return true;
    case DType::Q5_1: f.template operator()<DType::Q5_1>(); return true;
    case DType::Q4_K: f.template operator()<DType::Q4_K>(); return true;
    case DType::Q5_K: f.template operator()<DType::Q5_K>(); return true;
    case DType::Q6_K: f.template operator()<DType::Q6_K>(); return true;
    default: return false;
  }
}

}  // namespace bl::cuda
