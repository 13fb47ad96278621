// The per-ISA pieces behind lut_matmul (lut_matmul.h): the table builder and the tile kernel,
// and the lane constants of the nibble registers that both the kernels and their tests use.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quant/bl_group.h"

namespace bl::cpu {

// Tokens one tile-kernel call multiplies with a 16-row tile (prefill); decode passes 1.
constexpr int kLutTokens = 4;

// Bytes a decode tile kernel prefetches ahead of the line it reads (a tile's lines are
// contiguous, and the next tile of the thread's range follows), and the bytes of a stream's
// start prefetched before its first line (lut_matmul.cpp). The AVX2 level prefetches that far
// into L1.
constexpr int kLutStreamLead = 2048;
// The AVX-512 level prefetches into L2, further ahead: on AMD Zen 4 (2 cores, synthetic
// llama3-1b decode, docs/cpu_kernels.md "Twenty-first session") bl2g128 103.8-105.4 -> 121.5-124.8
// tok/s and bl4g128 60.4 -> 67.0 where the VM read ~65 GB/s, and the same or better where it
// read ~36 GB/s: L1 prefetches 2 KiB ahead held the core's few L1 miss buffers.
constexpr int kLutL2Lead = 8192;

// One token's tables (lut_matmul.h): table [cols / 16][64] int8, with two terms also the
// residual table (same shape, nullptr with one term), and per weight group the scale of the
// integer sum and the sum of the group's features (fp32).
struct LutTables {
  const int8_t* table;
  const int8_t* residual;
  const float* scale;
  const float* sum;
};

// What the residual table adds: entry = s_T * (table + residual / kLutResidualSteps). A kernel
// sums both lookups into one int32, acc * kLutResidualSteps + acc_residual (< 2^31: at most
// 32 quads x 255 x 127 x 254 at b = 8, g = 128), so the stored scale is s_T / kLutResidualSteps.
constexpr int kLutResidualSteps = 254;

// Builds one token's tables from x [cols] for weight groups of g features. Entry e of a quad is
// M = 0.5 * (((+-x0) +- x1) +- x2) +- x3 in fp32, + where bit m of e is set, - where not; with
// u = M * (127 / the group's max |M|): table = round(u) (nearest even), and when residual is not
// null residual = round((u - table) * kLutResidualSteps). scale = max |M| / 127 (one term) or
// that / kLutResidualSteps (two); sum is lut_group_sum. Every level computes the same bytes.
using LutBuildFn = void (*)(const float* x, int64_t cols, int g, int8_t* table, int8_t* residual, float* scale,
                            float* sum);

// The fp32 sum of a group's g features (g a multiple of 16) in a fixed order that vectorizes:
// 16 running sums of the features j = i mod 16, then halved pairwise (8, 4, 2, 1 apart). Every
// level's builder uses this one (a serial sum would be a chain of g dependent adds).
static inline float lut_group_sum(const float* x, int g) {
  float p[16] = {};
  for (int j0 = 0; j0 < g; j0 += 16)
    for (int i = 0; i < 16; ++i) p[i] += x[j0 + i];
  for (int w = 8; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) p[i] += p[i + w];
  return p[0];
}

// out[t * 16 + r] = row r of the 16-row tile at `tile` · token t, for t < nt (1..kLutTokens).
using LutTileFn = void (*)(const quant::BlGroupShape& shape, int64_t cols, const uint8_t* tile, const LutTables* tokens,
                           int nt, float* out);

// Decode (one token): decode_tiles (LutKernels) tiles at once, outs[i] [16] as LutTileFn's out
// for tiles[i]. The tiles come from that many equal parts of the thread's range: as many streams
// of lines in flight per core, and one table load serves them all. Four tiles for up to 4 bits
// (synthetic llama3-1b bl2g128 decode 83.0 -> 87.8 % of the read bandwidth against two; bl3g128
// and bl4g128 the same), two above (four would not fit the registers with 8 nibble planes); the
// AVX-512 level takes eight at 3 and 4 bits (lut_matmul_avx512.cpp).
using LutTileDecodeFn = void (*)(const quant::BlGroupShape& shape, int64_t cols, const uint8_t* const* tiles,
                                 const LutTables* token, float* const* outs);
constexpr int kLutMaxDecodeTiles = 8;

struct LutKernels {
  LutBuildFn build;
  LutTileFn tile;
  LutTileDecodeFn decode = nullptr;  // nullptr: the driver calls tile once per tile
  int decode_tiles = 1;
};

// The SIMD levels instantiate one tile kernel per bit width; nullptr when the CPU lacks the
// instructions (the AVX-512 level needs VNNI and VBMI).
const LutKernels& lut_kernels_scalar();
const LutKernels* lut_kernels_avx2(const quant::BlGroupShape& shape);
const LutKernels* lut_kernels_avx512(const quant::BlGroupShape& shape);

// Lane i (0..3) of row r in nibble register k: pair pi = 4 * (k % bits) + i = quad * bits + plane
// (quant/bl_group.h). The lane's table offset is 16 * quad and its multiplier 2^plane.
// (static: this header is compiled with several ISA flags, and the linker must not pick one build.)
static constexpr int lut_lane_quad(int bits, int k, int i) { return (4 * (k % bits) + i) / bits; }
static constexpr int lut_lane_plane(int bits, int k, int i) { return (4 * (k % bits) + i) % bits; }

}  // namespace bl::cpu
