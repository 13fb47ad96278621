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
#include <cstring>

#include "core/half.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/weight_decode.cuh"
#include "kernels/cuda/weight_layout.cuh"

namespace bl::cuda {

constexpr int kPiece = 8;  // weights per piece

// Block-format pieces avoid int->float conversions (I2F issues at 1/8 of the FMA rate on
// Hopper, which capped 4-bit at ~36 % of the bandwidth): quants are masked into the bytes of
// a word four at a time, and byte j becomes the float 2^23 + q by moving it into the low
// mantissa of 2^23 (one prmt); subtracting 2^23 + offset is then exact. The helpers also
// compile for the host, so the decoders can be checked against dequantize_row without a GPU.
__host__ __device__ __forceinline__ uint32_t byte_perm(uint32_t x, uint32_t y, uint32_t sel) {
#ifdef __CUDA_ARCH__
  return __byte_perm(x, y, sel);
#else
  const uint64_t v = x | (static_cast<uint64_t>(y) << 32);
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((v >> (8 * ((sel >> (4 * i)) & 7))) & 0xFF) << (8 * i);
  return r;
#endif
}
__host__ __device__ __forceinline__ float float_from_bits(uint32_t u) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(u);
#else
  float f;
  memcpy(&f, &u, 4);
  return f;
#endif
}
__host__ __device__ __forceinline__ float fp16_bits_to_float(uint16_t h) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(h));
#else
  return fp16_to_f32(h);
#endif
}
constexpr float kMagic = 8388608.0f;  // 2^23, bits 0x4B000000
// Byte j of v (an unsigned quant) as a float, minus `offset`: exact for q, offset < 2^23.
template <int j>
__host__ __device__ __forceinline__ float byte_value(uint32_t v, float offset) {
  return float_from_bits(byte_perm(v, 0x4B000000u, 0x7540u | j)) - (kMagic + offset);
}
// A small unsigned integer (< 2^23) as a float, without I2F.
__host__ __device__ __forceinline__ float small_uint_value(uint32_t u) { return float_from_bits(0x4B000000u | u) - kMagic; }
// A two-byte load from a 2-byte aligned address, as two halves of a word.
__host__ __device__ __forceinline__ uint32_t load_u32_from_u16(const uint8_t* p) {
  const uint16_t* h = reinterpret_cast<const uint16_t*>(p);
  return h[0] | (static_cast<uint32_t>(h[1]) << 16);
}

// kTiled: the row is in the tiled layout (weight_layout.cuh); only the tileable formats
// (Q4_0, Q4_1, Q8_0, Q6_K) look at it, through block_ref.
template <DType T, bool kTiled = false>
struct Piece;

// Q4_0, 32 weights in 18 bytes: piece q (0..3) of block b takes qs[4q .. 4q+3]: low nibbles
// are weights 4q.., high nibbles 16 + 4q...
template <bool kTiled>
struct Piece<DType::Q4_0, kTiled> {
  __host__ __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0,
                                                       int64_t& o1) {
    const int64_t b = i >> 2;
    const int q = static_cast<int>(i & 3);
    const BlockRef blk = block_ref<DType::Q4_0, kTiled>(row, b);
    const float d = fp16_bits_to_float(*reinterpret_cast<const uint16_t*>(blk.hdr));
    // Tiled bodies are 16-byte aligned: one 4-byte load instead of two 2-byte ones.
    const uint32_t v = kTiled ? *reinterpret_cast<const uint32_t*>(blk.body + 4 * q) : load_u32_from_u16(blk.body + 4 * q);
    const uint32_t lo = v & 0x0F0F0F0Fu, hi = (v >> 4) & 0x0F0F0F0Fu;
    w[0] = byte_value<0>(lo, 8.0f) * d, w[1] = byte_value<1>(lo, 8.0f) * d;
    w[2] = byte_value<2>(lo, 8.0f) * d, w[3] = byte_value<3>(lo, 8.0f) * d;
    w[4] = byte_value<0>(hi, 8.0f) * d, w[5] = byte_value<1>(hi, 8.0f) * d;
    w[6] = byte_value<2>(hi, 8.0f) * d, w[7] = byte_value<3>(hi, 8.0f) * d;
    o0 = b * 32 + 4 * q;
    o1 = o0 + 16;
  }
};

// Q4_1, 20 bytes: as Q4_0 with x = d q + m; 4-byte aligned, so one word per piece.
template <bool kTiled>
struct Piece<DType::Q4_1, kTiled> {
  __host__ __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0,
                                                       int64_t& o1) {
    const int64_t b = i >> 2;
    const int q = static_cast<int>(i & 3);
    const BlockRef blk = block_ref<DType::Q4_1, kTiled>(row, b);
    const uint32_t dm = *reinterpret_cast<const uint32_t*>(blk.hdr);
    const float d = fp16_bits_to_float(static_cast<uint16_t>(dm & 0xFFFF));
    const float m = fp16_bits_to_float(static_cast<uint16_t>(dm >> 16));
    const uint32_t v = reinterpret_cast<const uint32_t*>(blk.body)[q];
    const uint32_t lo = v & 0x0F0F0F0Fu, hi = (v >> 4) & 0x0F0F0F0Fu;
    w[0] = byte_value<0>(lo, 0.0f) * d + m, w[1] = byte_value<1>(lo, 0.0f) * d + m;
    w[2] = byte_value<2>(lo, 0.0f) * d + m, w[3] = byte_value<3>(lo, 0.0f) * d + m;
    w[4] = byte_value<0>(hi, 0.0f) * d + m, w[5] = byte_value<1>(hi, 0.0f) * d + m;
    w[6] = byte_value<2>(hi, 0.0f) * d + m, w[7] = byte_value<3>(hi, 0.0f) * d + m;
    o0 = b * 32 + 4 * q;
    o1 = o0 + 16;
  }
};

// Q5_0, 22 bytes (d, qh, qs), and Q5_1, 24 (d, m, qh, qs): pieces as Q4_0's, and the fifth bits of
// weights 4q .. 4q+3 (bits 4q.. of qh) and 16 + 4q .. (bits 16 + 4q..) moved to bit 4 of their
// bytes. Q5_0's qh and qs are only 2-byte aligned.
// Bits 0..3 of b at bits 4, 12, 20, 28: b * 0x00204081 puts bit k of b at bit 8k (and the other
// copies at bits that are not multiples of 8, with no carries since no two coincide).
__host__ __device__ __forceinline__ uint32_t nibble_to_fifth_bits(uint32_t b) {
  return ((b * 0x00204081u) & 0x01010101u) << 4;
}
template <bool kMin>
struct PieceQ5 {
  __host__ __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0,
                                                       int64_t& o1) {
    constexpr size_t kBytes = kMin ? sizeof(BlockQ5_1) : sizeof(BlockQ5_0);
    constexpr int kQh = kMin ? 4 : 2;
    const int64_t b = i >> 2;
    const int q = static_cast<int>(i & 3);
    const uint8_t* blk = row + b * kBytes;
    const uint32_t dm = load_u32_from_u16(blk);  // d, and m for Q5_1
    const float d = fp16_bits_to_float(static_cast<uint16_t>(dm & 0xFFFF));
    const float c = kMin ? fp16_bits_to_float(static_cast<uint16_t>(dm >> 16)) : -16.0f * d;
    const uint32_t qh = load_u32_from_u16(blk + kQh);
    const uint32_t v = load_u32_from_u16(blk + kQh + 4 + 4 * q);
    const uint32_t lo = (v & 0x0F0F0F0Fu) | nibble_to_fifth_bits((qh >> (4 * q)) & 0xF);
    const uint32_t hi = ((v >> 4) & 0x0F0F0F0Fu) | nibble_to_fifth_bits((qh >> (16 + 4 * q)) & 0xF);
    w[0] = byte_value<0>(lo, 0.0f) * d + c, w[1] = byte_value<1>(lo, 0.0f) * d + c;
    w[2] = byte_value<2>(lo, 0.0f) * d + c, w[3] = byte_value<3>(lo, 0.0f) * d + c;
    w[4] = byte_value<0>(hi, 0.0f) * d + c, w[5] = byte_value<1>(hi, 0.0f) * d + c;
    w[6] = byte_value<2>(hi, 0.0f) * d + c, w[7] = byte_value<3>(hi, 0.0f) * d + c;
    o0 = b * 32 + 4 * q;
    o1 = o0 + 16;
  }
};
template <bool kTiled>
struct Piece<DType::Q5_0, kTiled> : PieceQ5<false> {};
template <bool kTiled>
struct Piece<DType::Q5_1, kTiled> : PieceQ5<true> {};

// Q8_0, 34 bytes: piece q takes qs[8q .. 8q+7], weights 8q .. 8q+7; int8 + 128 is unsigned.
template <bool kTiled>
struct Piece<DType::Q8_0, kTiled> {
  __host__ __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0,
                                                       int64_t& o1) {
    const int64_t b = i >> 2;
    const int q = static_cast<int>(i & 3);
    const BlockRef blk = block_ref<DType::Q8_0, kTiled>(row, b);
    const float d = fp16_bits_to_float(*reinterpret_cast<const uint16_t*>(blk.hdr));
    uint32_t u0, u1;
    if constexpr (kTiled) {  // 16-byte aligned body: one 8-byte load
      const uint2 u = *reinterpret_cast<const uint2*>(blk.body + 8 * q);
      u0 = u.x ^ 0x80808080u, u1 = u.y ^ 0x80808080u;
    } else {
      u0 = load_u32_from_u16(blk.body + 8 * q) ^ 0x80808080u;
      u1 = load_u32_from_u16(blk.body + 4 + 8 * q) ^ 0x80808080u;
    }
    w[0] = byte_value<0>(u0, 128.0f) * d, w[1] = byte_value<1>(u0, 128.0f) * d;
    w[2] = byte_value<2>(u0, 128.0f) * d, w[3] = byte_value<3>(u0, 128.0f) * d;
    w[4] = byte_value<0>(u1, 128.0f) * d, w[5] = byte_value<1>(u1, 128.0f) * d;
    w[6] = byte_value<2>(u1, 128.0f) * d, w[7] = byte_value<3>(u1, 128.0f) * d;
    o0 = b * 32 + 8 * q;
    o1 = o0 + 4;
  }
};

// Q4_K / Q5_K sub-block j's 6-bit scale and min from the scale words s0, s1, s2 (ggml's
// get_scale_min_k4), both cases computed and one selected: lanes of a warp differ in j.
__host__ __device__ __forceinline__ void k_scale_min(int j, uint32_t s0, uint32_t s1, uint32_t s2, float& sc, float& m) {
  const int lo_shift = 8 * (j & 3);
  const uint32_t sc_lo = (s0 >> lo_shift) & 63, m_lo = (s1 >> lo_shift) & 63;
  const uint32_t sc_hi = ((s2 >> lo_shift) & 0xF) | (((s0 >> (lo_shift + 6)) & 3) << 4);
  const uint32_t m_hi = ((s2 >> (lo_shift + 4)) & 0xF) | (((s1 >> (lo_shift + 6)) & 3) << 4);
  sc = small_uint_value(j < 4 ? sc_lo : sc_hi);
  m = small_uint_value(j < 4 ? m_lo : m_hi);
}

// Q4_K / Q5_K, 256 weights: piece k (0..31) of a super-block is group g = k / 8 of 64 weights,
// quad q = k % 8: byte qs[32 g + 4q + j] holds weight 64g + 4q + j (low nibble, sub-block 2g)
// and 64g + 32 + 4q + j (high nibble, sub-block 2g + 1). Q5_K's fifth bit of weight l of
// sub-block s is bit s of qh[l]. The 16-byte header (d, dmin, scales) is one load: super-
// blocks are 144 / 176 bytes, multiples of 16.
template <bool kFive>
struct PieceK45 {
  __host__ __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0,
                                                       int64_t& o1) {
    constexpr size_t kBytes = kFive ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
    constexpr int kQs = kFive ? 48 : 16;  // offset of qs in the block
    const int64_t s = i >> 5;
    const int k = static_cast<int>(i & 31), g = k >> 3, q = k & 7;
    const uint8_t* sb = row + s * kBytes;
    const uint4 hdr = *reinterpret_cast<const uint4*>(sb);
    const float d = fp16_bits_to_float(static_cast<uint16_t>(hdr.x & 0xFFFF));
    const float dmin = fp16_bits_to_float(static_cast<uint16_t>(hdr.x >> 16));
    float sc0, m0, sc1, m1;
    k_scale_min(2 * g, hdr.y, hdr.z, hdr.w, sc0, m0);
    k_scale_min(2 * g + 1, hdr.y, hdr.z, hdr.w, sc1, m1);
    const float a0 = d * sc0, b0 = dmin * m0, a1 = d * sc1, b1 = dmin * m1;
    const uint32_t v = *reinterpret_cast<const uint32_t*>(sb + kQs + 32 * g + 4 * q);
    uint32_t lo = v & 0x0F0F0F0Fu, hi = (v >> 4) & 0x0F0F0F0Fu;
    if constexpr (kFive) {
      const uint32_t h = *reinterpret_cast<const uint32_t*>(sb + 16 + 4 * q);
      lo |= ((h >> (2 * g)) & 0x01010101u) << 4;
      hi |= ((h >> (2 * g + 1)) & 0x01010101u) << 4;
    }
    w[0] = a0 * byte_value<0>(lo, 0.0f) - b0, w[1] = a0 * byte_value<1>(lo, 0.0f) - b0;
    w[2] = a0 * byte_value<2>(lo, 0.0f) - b0, w[3] = a0 * byte_value<3>(lo, 0.0f) - b0;
    w[4] = a1 * byte_value<0>(hi, 0.0f) - b1, w[5] = a1 * byte_value<1>(hi, 0.0f) - b1;
    w[6] = a1 * byte_value<2>(hi, 0.0f) - b1, w[7] = a1 * byte_value<3>(hi, 0.0f) - b1;
    o0 = s * 256 + 64 * g + 4 * q;
    o1 = o0 + 32;
  }
};
template <bool kTiled>
struct Piece<DType::Q4_K, kTiled> : PieceK45<false> {};
template <bool kTiled>
struct Piece<DType::Q5_K, kTiled> : PieceK45<true> {};

// Q6_K, 210 bytes: piece k (0..31) of a super-block is half hf = k / 16, part pair pp =
// (k / 8) % 2, quad q = k % 8, l = 4q + j: ql[64 hf + 32 pp + l] low nibble with qh[32 hf + l]
// bits 2pp.. is weight 128 hf + 32 pp + l; its high nibble with bits 2pp + 4.. is that + 64.
// A super-block starts 4-byte aligned or 2 off; all threads of a warp share one super-block
// (32 pieces), so the choice of load width does not diverge.
template <bool kTiled>
struct Piece<DType::Q6_K, kTiled> {
  __host__ __device__ __forceinline__ static uint32_t load_word(const uint8_t* p) {
    if ((reinterpret_cast<uintptr_t>(p) & 3) == 0) return *reinterpret_cast<const uint32_t*>(p);
    return load_u32_from_u16(p);
  }
  __host__ __device__ __forceinline__ static void load(const uint8_t* row, int64_t i, float w[kPiece], int64_t& o0,
                                                       int64_t& o1) {
    const int64_t s = i >> 5;
    const int k = static_cast<int>(i & 31), hf = k >> 4, pp = (k >> 3) & 1, q = k & 7;
    const BlockRef blk = block_ref<DType::Q6_K, kTiled>(row, s);  // hdr: scales[16], d; body: ql, qh
    const uint8_t* sb = blk.body;
    const float d = fp16_bits_to_float(*reinterpret_cast<const uint16_t*>(blk.hdr + 16));
    const uint8_t* scales = blk.hdr + 8 * hf + 2 * pp + (q >> 2);
    // int8 scale + 128 as an unsigned byte, then back: no I2F.
    const float a0 = d * (small_uint_value(static_cast<uint8_t>(scales[0] ^ 0x80)) - 128.0f);
    const float a1 = d * (small_uint_value(static_cast<uint8_t>(scales[4] ^ 0x80)) - 128.0f);
    const uint32_t l4 = load_word(sb + 64 * hf + 32 * pp + 4 * q);
    const uint32_t h4 = load_word(sb + offsetof(BlockQ6_K, qh) + 32 * hf + 4 * q);
    const uint32_t lo = (l4 & 0x0F0F0F0Fu) | (((h4 >> (2 * pp)) & 0x03030303u) << 4);
    const uint32_t hi = ((l4 >> 4) & 0x0F0F0F0Fu) | (((h4 >> (2 * pp + 4)) & 0x03030303u) << 4);
    w[0] = a0 * byte_value<0>(lo, 32.0f), w[1] = a0 * byte_value<1>(lo, 32.0f);
    w[2] = a0 * byte_value<2>(lo, 32.0f), w[3] = a0 * byte_value<3>(lo, 32.0f);
    w[4] = a1 * byte_value<0>(hi, 32.0f), w[5] = a1 * byte_value<1>(hi, 32.0f);
    w[6] = a1 * byte_value<2>(hi, 32.0f), w[7] = a1 * byte_value<3>(hi, 32.0f);
    o0 = s * 256 + 128 * hf + 32 * pp + 4 * q;
    o1 = o0 + 64;
  }
};

// Plain types: piece i is weights 8i .. 8i+7, one 16-byte load (F16, BF16) or two (F32).
// Callers use these only when rows and x are 16-byte aligned (cols % 8 == 0, aligned bases).
template <bool kTiled>
struct Piece<DType::F32, kTiled> {
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
template <bool kTiled>
struct Piece<DType::F16, kTiled> : PieceHalf<false> {};
template <bool kTiled>
struct Piece<DType::BF16, kTiled> : PieceHalf<true> {};

// The A fragments of the tensor-core GEMVs' mma pair (mma.cuh's layout) for piece `piece` of
// rows g (row_a) and g + 8 (row_b): a_lo covers the piece's columns o0..o0+3, a_hi o1..o1+3.
template <DType T, bool kTiled>
__device__ __forceinline__ void piece_a_fragments(const uint8_t* row_a, const uint8_t* row_b, int64_t piece,
                                                  uint32_t a_lo[4], uint32_t a_hi[4], int64_t& o0, int64_t& o1) {
  float wa[kPiece], wb[kPiece];
  Piece<T, kTiled>::load(row_a, piece, wa, o0, o1);
  Piece<T, kTiled>::load(row_b, piece, wb, o0, o1);
  a_lo[0] = pack_half2(wa[0], wa[1]);
  a_lo[1] = pack_half2(wb[0], wb[1]);
  a_lo[2] = pack_half2(wa[2], wa[3]);
  a_lo[3] = pack_half2(wb[2], wb[3]);
  a_hi[0] = pack_half2(wa[4], wa[5]);
  a_hi[1] = pack_half2(wb[4], wb[5]);
  a_hi[2] = pack_half2(wa[6], wa[7]);
  a_hi[3] = pack_half2(wb[6], wb[7]);
}

}  // namespace bl::cuda
