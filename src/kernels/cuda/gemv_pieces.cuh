// Weight decoding for the GEMV, 8 weights ("a piece") per thread per step, laid out so that
// consecutive threads read consecutive bytes of the weight row AND of the activations.
//
// Why not the 32-element chunks of weight_decode.cuh: with one chunk per lane, lane l reads x
// at 128-byte strides, so each 16-byte load instruction of the warp touches 32 cache lines;
// measured on an H100 that capped Q4_0 at 30 % of the read bandwidth (docs/cuda.md). Here
// piece i of a row holds weights w[0..3] for x[o0 .. o0+3] and w[4..7] for x[o1 .. o1+3],
// and the pieces of one block (or super-block) are numbered so that threads i, i+1, ...
// cover it front to back: both the weight bytes and the two float4 of x are coalesced.
//
// Formulas as bl::dequantize_row (quant/quant.h); block structs from quant/blocks.h.
#pragma once

#include <cstdint>

#include "kernels/cuda/weight_decode.cuh"

namespace bl::cuda {

constexpr int kPiece = 8;  // weights per piece

template <DType T>
struct Piece;

// Q4_0, 32 weights in 18 bytes: piece q (0..3) of block b takes qs[4q .. 4q+3]: low nibbles
// are weights 4q.., high nibbles 16 + 4q...
template <>
struct Piece<DType::Q4_0> {
  __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0, int64_t& o1) {
    const int64_t b = i >> 2;
    const int q = static_cast<int>(i & 3);
    const uint16_t* blk = reinterpret_cast<const uint16_t*>(row + b * sizeof(BlockQ4_0));
    const float d = half_bits_to_float(blk[0]);
    const uint32_t v = blk[1 + 2 * q] | (static_cast<uint32_t>(blk[2 + 2 * q]) << 16);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      w[k] = static_cast<float>(static_cast<int>((v >> (8 * k)) & 0xF) - 8) * d;
      w[4 + k] = static_cast<float>(static_cast<int>((v >> (8 * k + 4)) & 0xF) - 8) * d;
    }
    o0 = b * 32 + 4 * q;
    o1 = o0 + 16;
  }
};

// Q4_1, 20 bytes: as Q4_0 with x = d q + m; 4-byte aligned, so one word per piece.
template <>
struct Piece<DType::Q4_1> {
  __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0, int64_t& o1) {
    const int64_t b = i >> 2;
    const int q = static_cast<int>(i & 3);
    const uint32_t* blk = reinterpret_cast<const uint32_t*>(row + b * sizeof(BlockQ4_1));
    const uint32_t dm = blk[0];
    const float d = half_bits_to_float(static_cast<uint16_t>(dm & 0xFFFF));
    const float m = half_bits_to_float(static_cast<uint16_t>(dm >> 16));
    const uint32_t v = blk[1 + q];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      w[k] = static_cast<float>((v >> (8 * k)) & 0xF) * d + m;
      w[4 + k] = static_cast<float>((v >> (8 * k + 4)) & 0xF) * d + m;
    }
    o0 = b * 32 + 4 * q;
    o1 = o0 + 16;
  }
};

// Q8_0, 34 bytes: piece q takes qs[8q .. 8q+7], weights 8q .. 8q+7.
template <>
struct Piece<DType::Q8_0> {
  __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0, int64_t& o1) {
    const int64_t b = i >> 2;
    const int q = static_cast<int>(i & 3);
    const uint16_t* blk = reinterpret_cast<const uint16_t*>(row + b * sizeof(BlockQ8_0));
    const float d = half_bits_to_float(blk[0]);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const uint16_t v = blk[1 + 4 * q + k];
      w[2 * k] = static_cast<float>(static_cast<int8_t>(v & 0xFF)) * d;
      w[2 * k + 1] = static_cast<float>(static_cast<int8_t>(v >> 8)) * d;
    }
    o0 = b * 32 + 8 * q;
    o1 = o0 + 4;
  }
};

// Q4_K / Q5_K, 256 weights: piece k (0..31) of a super-block is group g = k / 8 of 64 weights,
// quad q = k % 8: byte qs[32 g + 4q + j] holds weight 64g + 4q + j (low nibble, sub-block 2g)
// and 64g + 32 + 4q + j (high nibble, sub-block 2g + 1). Q5_K's fifth bit of weight l of
// sub-block s is bit s of qh[l].
template <bool kFive>
struct PieceK45 {
  __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0, int64_t& o1) {
    constexpr size_t kBytes = kFive ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
    constexpr int kQs = kFive ? 48 : 16;  // offset of qs in the block
    const int64_t s = i >> 5;
    const int k = static_cast<int>(i & 31), g = k >> 3, q = k & 7;
    const uint8_t* sb = row + s * kBytes;
    const uint32_t* h32 = reinterpret_cast<const uint32_t*>(sb);
    const uint32_t dm = h32[0];
    const uint32_t scales[3] = {h32[1], h32[2], h32[3]};
    const float d = half_bits_to_float(static_cast<uint16_t>(dm & 0xFFFF));
    const float dmin = half_bits_to_float(static_cast<uint16_t>(dm >> 16));
    float sc0, m0, sc1, m1;
    k4_scale_min(2 * g, scales, sc0, m0);
    k4_scale_min(2 * g + 1, scales, sc1, m1);
    const float a0 = d * sc0, b0 = dmin * m0, a1 = d * sc1, b1 = dmin * m1;
    const uint32_t v = *reinterpret_cast<const uint32_t*>(sb + kQs + 32 * g + 4 * q);
    uint32_t h = 0;
    if constexpr (kFive) h = *reinterpret_cast<const uint32_t*>(sb + 16 + 4 * q);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t lo = (v >> (8 * j)) & 0xF, hi = (v >> (8 * j + 4)) & 0xF;
      if constexpr (kFive) {
        lo |= ((h >> (8 * j + 2 * g)) & 1) << 4;
        hi |= ((h >> (8 * j + 2 * g + 1)) & 1) << 4;
      }
      w[j] = a0 * static_cast<float>(lo) - b0;
      w[4 + j] = a1 * static_cast<float>(hi) - b1;
    }
    o0 = s * 256 + 64 * g + 4 * q;
    o1 = o0 + 32;
  }
};
template <>
struct Piece<DType::Q4_K> : PieceK45<false> {};
template <>
struct Piece<DType::Q5_K> : PieceK45<true> {};

// Q6_K, 210 bytes: piece k (0..31) of a super-block is half hf = k / 16, part pair pp =
// (k / 8) % 2, quad q = k % 8, l = 4q + j: ql[64 hf + 32 pp + l] low nibble with qh[32 hf + l]
// bits 2pp.. is weight 128 hf + 32 pp + l; its high nibble with bits 2pp + 4.. is that + 64.
template <>
struct Piece<DType::Q6_K> {
  __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0, int64_t& o1) {
    const int64_t s = i >> 5;
    const int k = static_cast<int>(i & 31), hf = k >> 4, pp = (k >> 3) & 1, q = k & 7;
    const uint8_t* sb = row + s * sizeof(BlockQ6_K);
    const BlockQ6_K* blk = reinterpret_cast<const BlockQ6_K*>(sb);
    const float d = half_bits_to_float(*reinterpret_cast<const uint16_t*>(sb + offsetof(BlockQ6_K, d)));
    const float a0 = d * static_cast<float>(blk->scales[8 * hf + 2 * pp + (q >> 2)]);
    const float a1 = d * static_cast<float>(blk->scales[8 * hf + 2 * pp + 4 + (q >> 2)]);
    const uint16_t* ql = reinterpret_cast<const uint16_t*>(sb + 64 * hf + 32 * pp + 4 * q);
    const uint16_t* qh = reinterpret_cast<const uint16_t*>(sb + offsetof(BlockQ6_K, qh) + 32 * hf + 4 * q);
    const uint32_t l4 = ql[0] | (static_cast<uint32_t>(ql[1]) << 16);
    const uint32_t h4 = qh[0] | (static_cast<uint32_t>(qh[1]) << 16);
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int lo = static_cast<int>(((l4 >> (8 * j)) & 0xF) | (((h4 >> (8 * j + 2 * pp)) & 3) << 4)) - 32;
      const int hi = static_cast<int>(((l4 >> (8 * j + 4)) & 0xF) | (((h4 >> (8 * j + 2 * pp + 4)) & 3) << 4)) - 32;
      w[j] = a0 * static_cast<float>(lo);
      w[4 + j] = a1 * static_cast<float>(hi);
    }
    o0 = s * 256 + 128 * hf + 32 * pp + 4 * q;
    o1 = o0 + 64;
  }
};

// Plain types: piece i is weights 8i .. 8i+7, one 16-byte load (F16, BF16) or two (F32).
// Callers use these only when rows and x are 16-byte aligned (cols % 8 == 0, aligned bases).
template <>
struct Piece<DType::F32> {
  __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0, int64_t& o1) {
    const float4* p = reinterpret_cast<const float4*>(row) + 2 * i;
    const float4 a = p[0], b = p[1];
    w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
    o0 = 8 * i;
    o1 = o0 + 4;
  }
};
template <bool kBf16>
struct PieceHalf {
  __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0, int64_t& o1) {
    const uint4 v = reinterpret_cast<const uint4*>(row)[i];
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      w[2 * k] = HalfDecoder<kBf16>::cvt(static_cast<uint16_t>(words[k] & 0xFFFF));
      w[2 * k + 1] = HalfDecoder<kBf16>::cvt(static_cast<uint16_t>(words[k] >> 16));
    }
    o0 = 8 * i;
    o1 = o0 + 4;
  }
};
template <>
struct Piece<DType::F16> : PieceHalf<false> {};
template <>
struct Piece<DType::BF16> : PieceHalf<true> {};

}  // namespace bl::cuda
