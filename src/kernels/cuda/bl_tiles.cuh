// Reading bl<b>g<g> tiles (quant/bl_group.h is the definition of the bytes) on the GPU. The
// CUDA backend stores them as in the file except for one permutation inside every dword of the
// code lines, done in place at upload and undone by read() (bl_device_layout.h).
//
// The unit of work is one dword of a 64-byte code line: row r's lanes 4r..4r+3 of the two
// nibble registers R_2l (low nibbles) and R_2l+1 (high nibbles). In the file, byte i of the
// dword, bit m (low nibble) is bit m of nibble pi = 4 (k % b) + i of register k = 2l, i.e. bit
// plane p = pi % b of the code of column 4 (pi / b) + m of chunk k / b; the high nibble likewise
// for k = 2l + 1.
//
// The device layout: a 4x4 bit transpose inside each nibble of the dword (transpose_nibbles, two
// delta swaps, 8 instructions; it is its own inverse) turns that into byte m, bit i = the same
// (plane, quad) bit of column m. At 4 bits a nibble is then a whole code. The kernels used to do
// this transpose per dword as they read it (8 of ~13 integer instructions per dword at bl4);
// done once at upload, 8B bl4g128 decodes 7 % faster, 1B bl4g128 13 %, 8B bl2g128 13 %
// (docs/cuda.md, "Twenty-eighth session"). Then the bits of one quad (a run of consecutive i with
// the same q = pi / b, planes p0 .. p0 + w - 1) are, after one shift and mask, w-bit partial
// codes (value sum_p 2^p bit_p < 256) in the 4 bytes of a word, one byte per column m: one dp4a
// with the quad's 4 int8 x values adds sum_m x_m * partial code_m. Every (register, nibble)
// pattern depends only on k % b, known at compile time when the kernel walks a group in blocks
// of b lines (= 2b registers = 2 chunks = 32 columns, one int8 x block: lines never straddle x
// blocks).
#pragma once

#include <cuda_runtime.h>  // __host__ __device__ for host compilers too (the host test of the codes)

#include <cstdint>

namespace bl::cuda::bltile {

constexpr int kTileRows = 16;
constexpr int kLineBytes = 64;
constexpr int kHeaderBytes = 64;  // fp16 s[16], fp16 z[16]

__host__ __device__ constexpr int tile_group_bytes(int bits, int group) { return kHeaderBytes + 2 * bits * group; }

// Byte m bit i <- byte i bit m, in both nibbles of every byte: the file's line dword to the
// device's and back (see above).
__host__ __device__ __forceinline__ uint32_t transpose_nibbles(uint32_t x) {
  uint32_t t = (x ^ (x >> 14)) & 0x0000CCCCu;  // swap the off-diagonal 2x2 blocks
  x ^= t ^ (t << 14);
  t = (x ^ (x >> 7)) & 0x00AA00AAu;  // transpose inside each 2x2 block
  return x ^ t ^ (t << 7);
}

// a . b as 4 unsigned bytes times 4 signed bytes, plus c.
__host__ __device__ __forceinline__ int dp4a_us(uint32_t a, int b, int c) {
#if defined(__CUDA_ARCH__)
  int d;
  asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
#else
  for (int m = 0; m < 4; ++m) c += static_cast<int>((a >> (8 * m)) & 0xFF) * static_cast<int8_t>(b >> (8 * m));
  return c;
#endif
}

// Shift by a compile-time signed amount (left when positive).
template <int kShift>
__host__ __device__ __forceinline__ uint32_t shift_by(uint32_t x) {
  if constexpr (kShift > 0) return x << kShift;
  else if constexpr (kShift < 0) return x >> -kShift;
  else return x;
}

// acc += sum over the 4 nibbles of register k (k % b = kJ), nibble half kHalf (0 low, 1 high)
// of the transposed dword t, of x . partial codes; xw[4 * kChunk + q] = the 4 int8 x values of
// quad q of the register's chunk (kChunk = 0 or 1 inside the 32-column x block).
template <int kBits, int kJ, int kHalf, int kI0 = 0>
__host__ __device__ __forceinline__ int dot_register(uint32_t t, const int* xw_chunk, int acc) {
  if constexpr (kI0 >= 4) {
    return acc;
  } else {
    constexpr int pi0 = 4 * kJ + kI0, q = pi0 / kBits, p0 = pi0 % kBits;
    // The run: nibbles kI0 .. kI0 + w - 1 of the same quad (planes p0 .. p0 + w - 1).
    constexpr int w = (kBits - p0) < (4 - kI0) ? (kBits - p0) : (4 - kI0);
    constexpr uint32_t mask = ((1u << w) - 1u) << p0;
    const uint32_t field = shift_by<p0 - kI0 - 4 * kHalf>(t) & (mask * 0x01010101u);
    acc = dp4a_us(field, xw_chunk[q], acc);
    return dot_register<kBits, kJ, kHalf, kI0 + w>(t, xw_chunk, acc);
  }
}

// acc += x . codes for one dword t (device layout) of line u (0 .. b-1) of a 32-column block;
// xw [8] = the block's int8 x as words (word 4c + q: chunk c, quad q).
template <int kBits, int kU>
__host__ __device__ __forceinline__ int dot_line_dword(uint32_t t, const int* xw, int acc) {
  constexpr int k0 = 2 * kU, k1 = 2 * kU + 1;  // registers of the line, inside the block
  acc = dot_register<kBits, k0 % kBits, 0>(t, xw + 4 * (k0 / kBits), acc);
  return dot_register<kBits, k1 % kBits, 1>(t, xw + 4 * (k1 / kBits), acc);
}

// The codes themselves, for the dequantizing kernel (bl_rows.cu): codes_chunk[q] |= the
// register's fields of quad q, the same fields dot_register multiplies by x (byte m: column 4q + m
// of the chunk, planes p0 .. p0 + w - 1 in place). Once all b lines of a 32-column block are in,
// byte m of codes[4 c + q] is the code of column 16 c + 4 q + m.
template <int kBits, int kJ, int kHalf, int kI0 = 0>
__host__ __device__ __forceinline__ void codes_register(uint32_t t, uint32_t* codes_chunk) {
  if constexpr (kI0 < 4) {
    constexpr int pi0 = 4 * kJ + kI0, q = pi0 / kBits, p0 = pi0 % kBits;
    constexpr int w = (kBits - p0) < (4 - kI0) ? (kBits - p0) : (4 - kI0);
    constexpr uint32_t mask = ((1u << w) - 1u) << p0;
    codes_chunk[q] |= shift_by<p0 - kI0 - 4 * kHalf>(t) & (mask * 0x01010101u);
    codes_register<kBits, kJ, kHalf, kI0 + w>(t, codes_chunk);
  }
}

// codes [8] |= the fields of one dword t (device layout) of line u (0 .. b-1) of a 32-column block.
template <int kBits, int kU>
__host__ __device__ __forceinline__ void codes_line_dword(uint32_t t, uint32_t* codes) {
  constexpr int k0 = 2 * kU, k1 = 2 * kU + 1;
  codes_register<kBits, k0 % kBits, 0>(t, codes + 4 * (k0 / kBits));
  codes_register<kBits, k1 % kBits, 1>(t, codes + 4 * (k1 / kBits));
}

// codes [8] of one row's dword (device layout) of each of the b lines of a 32-column block: byte m of
// codes[4 c + q] is the code of column 16 c + 4 q + m of the block (codes zeroed beforehand).
template <int kBits, int kU = 0>
__host__ __device__ __forceinline__ void codes_of_lines(const uint32_t (&dwords)[kBits], uint32_t (&codes)[8]) {
  if constexpr (kU < kBits) {
    codes_line_dword<kBits, kU>(dwords[kU], codes);
    codes_of_lines<kBits, kU + 1>(dwords, codes);
  }
}

// f.template operator()<kBits>() for bits = 1..8 at run time (nothing for other values): the one
// switch from a shape's bits to the kernels' template parameter.
template <class F>
void dispatch_bits(int bits, F&& f) {
  switch (bits) {
    case 1: return f.template operator()<1>();
    case 2: return f.template operator()<2>();
    case 3: return f.template operator()<3>();
    case 4: return f.template operator()<4>();
    case 5: return f.template operator()<5>();
    case 6: return f.template operator()<6>();
    case 7: return f.template operator()<7>();
    case 8: return f.template operator()<8>();
    default: return;
  }
}

// The code of column col (0 .. g-1) of row r (0..15) of a tile group in the device layout, for
// get_rows; one nibble read per plane. Plane p of column 4q + m of chunk c is nibble pi = q b + p
// of register k = c b + pi / 4: in the file, bit m of byte 4r + pi % 4; in the device layout
// (transposed), bit pi % 4 of byte 4r + m (of the nibble k % 2 of line k / 2).
__host__ __device__ __forceinline__ int code_at(const uint8_t* tile_group, int bits, int r, int col) {
  const int c = col / 16, q = (col / 4) % 4, m = col % 4;
  int code = 0;
  for (int p = 0; p < bits; ++p) {
    const int pi = q * bits + p, k = c * bits + pi / 4;
    const uint8_t byte = tile_group[kHeaderBytes + kLineBytes * (k / 2) + 4 * r + m];
    code |= ((byte >> (4 * (k % 2) + pi % 4)) & 1) << p;
  }
  return code;
}

}  // namespace bl::cuda::bltile
