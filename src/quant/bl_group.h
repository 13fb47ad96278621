// bitlight's own weight format bl<b>g<g>: b = 1..8 bits per weight, groups of g = 32, 64 or
// 128 consecutive weights of a row, an fp16 scale and an fp16 zero point per (row, group), and
// the codes laid out for the lookup-table kernels (kernels/cpu/lut_matmul.h): 16 rows side by
// side, so the file is multiplied as it is mapped, with no repacking at load. (The CUDA backend
// permutes the bits inside each dword of the code lines in place as it uploads them:
// kernels/cuda/bl_device_layout.h.)
//
// The value of weight j of a row, with code q_j in [0, 2^b - 1] of its group:
//
//   x_j = s * (q_j - z)      (z may be fractional and lie outside [0, 2^b - 1])
//
// Bytes: a matrix [rows][cols] (rows a multiple of 16, cols of g) is a sequence of tiles of 16
// rows (rows 16t .. 16t + 15), each 16 * row_bytes long; a tile is cols / g tile groups in
// column order, each 16 * (4 + b * g / 8) = 64 + 2 * b * g bytes (a whole number of 64-byte
// lines):
//
//   offset  0   u16 scale[16]   fp16 s of rows 0..15 of the tile
//   offset 32   u16 zero[16]    fp16 z
//   offset 64   u8  lines[b * g / 32][64]   the codes, as nibble registers (below)
//
// Codes. The group's g columns form chunks of 16 (c = 0 .. g/16 - 1), a chunk 4 quads of 4
// columns (quad q = columns 16c + 4q .. 16c + 4q + 3). Per row and chunk there are 4b nibbles
// n_pi, pi = q * b + p (quad q, bit plane p): bit m of n_pi is bit p of the code of column
// 16c + 4q + m. Nibble register R_k (k = 0 .. b*g/16 - 1) has 64 lanes; lane 4r + i holds
// nibble pi = 4 * (k % b) + i of chunk k / b for row r. Line l carries R_2l in the low and
// R_2l+1 in the high nibbles of its 64 bytes.
//
// Why this shape (T-MAC's lookup, arranged for AVX-512): a kernel builds, once per token and
// chunk, a 64-byte table: byte 16q + e = sum of the quad-q activations selected by the bits of
// e (int8, one scale per group). One vpermb looks up all 64 lanes of a register (the lane's
// quad selects the table's quarter), and one vpdpbusd multiplies each lane by 2^p and adds the
// 4 lanes of a row into that row's int32 sum: all planes and quads of a row meet in one dword,
// so the work per byte of codes is the same at every b, and 2 bits read half the bytes of 4.
// The scale and zero apply once per group, after the integer sum.
//
// Bits per weight: b + 32 / g (bl4g128 = 4.25, bl2g64 = 2.5, bl3g32 = 4.0).
#pragma once

#include <cstdint>
#include <optional>

#include "core/dtype.h"

namespace bl::quant {

constexpr int kBlTileRows = 16;

struct BlGroupShape {
  int bits;        // 1..8
  int group_size;  // 32, 64 or 128
  // Bytes of one row's share of a group (the DTypeInfo block): scale, zero, codes.
  constexpr int64_t group_bytes() const { return 4 + static_cast<int64_t>(bits) * group_size / 8; }
  constexpr int64_t tile_group_bytes() const { return kBlTileRows * group_bytes(); }
  constexpr int chunks() const { return group_size / 16; }
  constexpr int registers() const { return bits * group_size / 16; }  // nibble registers per tile group
  constexpr int lines() const { return registers() / 2; }
};

// The shape of a bl<b>g<g> dtype, or nullopt for every other dtype.
std::optional<BlGroupShape> bl_group_shape(DType t);
inline bool is_bl_group(DType t) { return bl_group_shape(t).has_value(); }
// The dtype for (bits, group size), or nullopt when there is none.
std::optional<DType> bl_group_dtype(int bits, int group_size);

// Where nibble (row r, chunk c, quad q, plane p) of a tile group lies: byte offset from the
// start of the tile group, and the shift (0 or 4) of the nibble in that byte.
struct NibblePlace {
  int64_t byte;
  int shift;
};
NibblePlace bl_nibble_place(const BlGroupShape& shape, int r, int c, int q, int p);

// Reference quantizer of a whole matrix x [rows][cols] (rows a multiple of 16, cols of g) into
// dst (rows * row_bytes bytes). Per row and group it tries several clipping ranges, fits s and
// z by weighted least squares to each candidate rounding, and keeps the one with the smallest
// weighted squared error sum_j e_j (x_j - x'_j)^2 (s and z as stored, in fp16), with the
// error weights e of bl_group_error_weights. importance ([cols] values >= 0, or nullptr) is the
// activation-aware mode's mean squared activation of each input feature (an importance matrix).
void quantize_bl_matrix(DType t, const float* x, void* dst, int64_t rows, int64_t cols, const float* importance);
// The same with the plain min/max round-to-nearest fit only (no search: ~30x less work), for
// synthetic models (runtime/synthetic_model.h), whose weights are random and only timed.
void quantize_bl_matrix_nearest(DType t, const float* x, void* dst, int64_t rows, int64_t cols);
// Error weights of one group of g values x: e_j = importance_j, or 1 without importance.
// (ggml's K-quant weighting e_j = rms(x) + |x_j| was tried: on SmolLM2-135M at bl3g64 it gave
// a worse perplexity than uniform weights, 818 vs 509, so the plain form stays.)
void bl_group_error_weights(const float* x, const float* importance, int g, float* out);

// Ternary GGUF weights (TQ1_0 / TQ2_0: d * {-1, 0, 1} per block of 256) as bl2g128, exactly:
// per group of 128 s = the block's d, z = 1, codes {0, 1, 2}; so the lookup-table kernels run
// BitNet b1.58 models. src [rows][cols] in `from`, dst rows * row_bytes(BL2G128, cols) bytes;
// rows a multiple of 16, cols of 256.
void ternary_to_bl2(DType from, const void* src, void* dst, int64_t rows, int64_t cols);

// GGUF formats with a scale per 32 weights as the bl<b>g32 type of their width (bl_from_blocks.cpp):
// Q4_0, Q4_1, Q4_K -> BL4G32; Q5_0, Q5_1, Q5_K -> BL5G32; nullopt for the others. Q4_0 and Q5_0
// convert exactly; the others round s and z to fp16, which moves a weight a q - b by at most
// ~2^-11 (|a q| + 2 |b|) (the file comment of bl_from_blocks.cpp).
std::optional<DType> bl_equivalent(DType from);
// src [rows][cols] in `from` -> dst, rows * row_bytes(*bl_equivalent(from), cols) bytes; rows a
// multiple of 16, cols of the format's block. Tile t of dst depends on rows 16t .. 16t + 15 only,
// so callers may convert tile ranges in parallel.
void blocks_to_bl(DType from, const void* src, void* dst, int64_t rows, int64_t cols);

// y[cols] = row `row` of the matrix that starts at `matrix`.
void dequantize_bl_row(DType t, const void* matrix, int64_t cols, int64_t row, float* y);

// Codes (g values) and s, z of row r (0..15) of one tile group; for tests and references.
void unpack_bl_codes(const BlGroupShape& shape, const uint8_t* tile_group, int r, uint8_t* codes, float& s,
                     float& z);

}  // namespace bl::quant
