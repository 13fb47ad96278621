// Layout::tiles16: Q4_0 / Q4_1 / Q8_0 / Q4_K weights with 16 rows interleaved, made once at load by
// the CPU backend so that decode reads one 512-bit register per 4 bytes of 16 rows.
//
// Why: in the file's layout a 32-weight block is 18 / 20 / 34 bytes with its fp16 scale in
// front, so a kernel spends most of its instructions gathering quants and scales into
// registers (docs/cpu_kernels.md). Interleaved, one vpdpbusd multiplies 4 weights of each of
// 16 rows with 4 broadcast activations, and 16 rows' scales load as one 32-byte vector.
//
// A tile is 16 consecutive rows [16 t, 16 t + 16) and holds, for blocks b = 0 .. nb-1
// (nb = cols / 32), first every block's quants, then every block's scales:
//   quants[nb][groups][16 rows][4 bytes]   groups = 4 (Q4_0, Q4_1) or 8 (Q8_0)
//     Q4_0 / Q4_1: group g, row r = bytes 4g .. 4g+3 of row r's qs (low nibble: weight j,
//                  high nibble: weight j + 16, as in the file).
//     Q8_0:        group g, row r = weights 4g .. 4g+3 of row r, stored as w + 128 (uint8), so
//                  that vpdpbusd (uint8 x int8) takes them as they are.
//   d[nb][16 rows] fp16, then (Q4_1 only) m[nb][16 rows] fp16.
// Q4_K (super-blocks of 256 weights, nb = cols / 256): per super-block, 4 chunks of 64 weights
// (sub-blocks 2j and 2j+1 in the low / high nibbles of a row's 32 bytes qs[32j ..]), each 8
// groups of 16 rows x 4 bytes: quants[nb][4][8][16 rows][4 bytes]; then per super-block a
// 256-byte header: d[16] fp16, dmin[16] fp16, and the 12 packed 6-bit scale bytes as byte
// planes scales[12][16 rows] (plane k holds byte k of each row's scales).
// A tile is 16 * nb blocks of the file's size (18 / 20 / 34 / 144 bytes), so the tensor keeps
// its byte count; tile t starts at 16 * t * row_bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "core/tensor.h"
#include "core/thread_pool.h"

namespace bl::cpu {

constexpr int kTileRows = 16;

// Whether a weight of this type and shape can be interleaved (Q4_0 / Q4_1 / Q8_0 / Q4_K, rows a
// multiple of 16).
bool can_interleave(DType type, int64_t rows);

// Quant groups of 4 bytes per row in one block: 4 for the nibble formats, 8 for Q8_0, 32 for
// Q4_K (4 chunks of 8).
int interleaved_groups(DType type);

// Byte offsets inside tile t of a weight with nb blocks per row.
struct TileOffsets {
  size_t tile_bytes;   // 16 * nb * block bytes
  size_t quant_bytes;  // per block: 64 * groups
  size_t d_offset;     // d[nb][16] after the quants (Q4_K: the 256-byte headers)
  size_t m_offset;     // m[nb][16] after d (Q4_1)
};
constexpr size_t kQ4KHeaderBytes = 256;  // d[16], dmin[16] fp16, scales[12][16]
TileOffsets tile_offsets(DType type, int64_t nb);

// dst (src.bytes() bytes, 64-byte aligned) = src (Layout::rows) in Layout::tiles16; the tiles
// are split over the pool. src must pass can_interleave.
void interleave_rows(const Tensor& src, void* dst, ThreadPool& pool);

// Row r of a tiles16 weight in fp32 (exactly dequantize_row of the original row): get_rows
// on tied embeddings reads the same tensor as the output matmul.
void dequantize_interleaved_row(const Tensor& w, int64_t r, float* out);

}  // namespace bl::cpu
