// Prefill GEMM for block-quantized weights with the dequantization inside the main loop, on
// Hopper (sm_90a): out[t][r] (+)= sum_k W[r][k] x[t][k], W [rows][cols] Q4_0, Q4_1 or Q8_0 in the
// tiled layout (weight_layout.cuh) or Q4_K / Q5_K as stored, x [n][cols] fp16 (the prefill
// operand), fp32 sums. In all five a row's 256 weights are a header of scales followed by the
// quants (InLoopFormat: Q4_0 and Q4_K 16 + 128 bytes, Q4_1 32 + 128, Q8_0 16 + 256, Q5_K 48 + 128
// with its fifth bits in the header), or bitlight's bl<b>g<g> at 2..4 bits as stored (16-row
// tiles, bl_tiles.cuh: a k tile is the code lines of two 32-column blocks and their groups'
// scales and zeros, loaded per 16-row tile; build_fragments_bl).
//
// Why: the other prefill path dequantizes the whole weight into an fp16 workspace (rows x cols
// x 2 bytes written, then read back by cuBLAS): at pp2048 on the 8B shape that pass was ~12 %
// of a q4_0 forward (docs/cuda.md). Here the weights go from L2 to shared memory as they are
// stored and become fp16 in registers, where wgmma takes its A operand from.
//
// Block: 384 threads = 3 warpgroups, output tiles of 128 rows x 256 tokens (128 x 128 where the
// wide tiles would leave SMs idle). Warpgroup 0 is the producer: one thread streams K in tiles
// of 64 (two 32-weight blocks) through a ring of kStages shared-memory stages with TMA: x
// [tokens][64] fp16 in the 128-byte swizzle that the wgmma B descriptor names (32 KB), and for
// the 128 rows the k tile's quants (32 bytes a row at 4 bits, 64 at 8) and their 256-weight
// tile's header (16 or 32 bytes). Warpgroups 1 and 2 consume: each owns 64 rows (one wgmma
// m64n256k16 a k step, 128 fp32 accumulators a thread). Stage hand-off by mbarriers: `full` (the
// producer's expected bytes landed), `empty` (every consumer warp's wgmma on the stage
// completed; in a cluster, the consumer warps of both blocks, since the multicast refills the
// stage in both). The producer gives most of its registers to the consumers (setmaxnreg).
//
// A fragments (as mma.m16n8k16's, per warp 16 rows; g = lane / 4, c = lane % 4): for k step s
// a thread holds rows g and g + 8 at k {2c, 2c+1, 2c+8, 2c+9} of the step. In a Q4_0 / Q4_1 body
// byte j holds weight j (low nibble) and j + 16 (high), so step 2h of block h takes the low
// nibbles of bytes {2c, 2c+1, 2c+8, 2c+9} and step 2h + 1 their high nibbles: one 16-bit shared
// load per byte pair serves two steps. A nibble pair becomes a half2 with the fp16 magic 0x6400
// (1024 + q, or 1024 + 16 q for the high nibble, exact), minus 1024 + bias (or / 16 - 64 -
// bias), exact, then times d (plus m for Q4_1): one rounding, so the weights are those of the
// dequantize pass (Q4_K, Q5_K, Q8_0: build_fragments). The fragments of stage kt + 1 are built while
// the wgmma of stage kt run.
//
// Napkin math (H100 SXM, ~990 TFLOPS dense fp16 = ~2048 MAC a clock an SM): a k tile is 128 x
// 256 x 64 = 2.1 M MAC, ~1024 clocks of tensor work, for 38-42 KB from L2 (x 32 KB, weights
// 6-10 KB). Decoding a thread's fragments is ~70 instructions a k tile at 4 bits (~100 at 8)
// against ~512 clocks of its warpgroup's wgmma; at 256 x 128 tiles (two m64 a warpgroup, tried
// first) the decoding per MAC doubles and the kernel ran 12-16 % slower (docs/cuda.md). The
// finished tile leaves through shared memory (the freed stages) and TMA stores, so the SM's
// next block starts while the bytes drain. Measured (H100, 8B shapes, 2048 tokens, fp32 out):
// 496-612 TFLOP/s at Q4_0, as the dequantize pass + cuBLAS (496-614); the whole 8B q4_0 pp2048
// forward 66-68 % of the bf16 peak against 61-64 % (docs/cuda.md). Blocks alone, Q8_0 ran at
// 490-545 TFLOP/s against 540-608 through cuBLAS: at 4 and 8 bits alike they took ~24 bytes a
// clock from L2 (~5.6 TB/s over the SMs), so the k tile's bytes (38 KB, 42 at Q8_0; x is 32 KB
// of them) set the pace. Hence clusters of 2 blocks (kCluster, the default): neighbouring row
// tiles of the same tokens, each block loading half of the x tile and TMA-multicasting it to
// both, so 22-26 KB a block and k tile. Whole 8B pp2048: q4_0 69-70 % of the bf16 peak (67-68 %
// alone), q8_0 62-64 % (59 % alone, 61 % through cuBLAS).
#include <cuda.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>

#include <array>
#include <cstdlib>
#include <optional>
#include <span>
#include <string_view>

#include "core/env_switch.h"
#include "kernels/cuda/bl_tiles.cuh"
#include "kernels/cuda/hopper.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"  // ldmatrix_x4
#include "kernels/cuda/weight_decode.cuh"  // k4_scale_min, half_bits_to_float
#include "kernels/cuda/weight_layout.cuh"
#include "quant/bl_group.h"

namespace bl::cuda {
namespace {

constexpr int kThreads = 384;  // producer warpgroup + 2 consumer warpgroups
constexpr int kTileK = 64;     // two 32-weight blocks; one 128-byte swizzle row of fp16 x
constexpr int kStages = 5;     // ring of shared-memory stages
constexpr int kSmemAlign = 1024;  // the 128-byte swizzle repeats every 8 rows of 128 bytes
constexpr int kBlockRows = 128;   // weight rows a block: an m64 tile a consumer warpgroup

// bl<b>g<g>'s bits from its dtype id (1000 + 10 b + {0, 1, 2}, core/dtype.h), 0 for the others.
constexpr int bl_bits(DType t) {
  const int id = static_cast<int>(t);
  return id >= 1010 && id < 1090 ? (id - 1000) / 10 : 0;
}

// How a format stores a row's 256 weights (a "tile": 8 blocks in the tiled layout, a Q4_K
// super-block): kHeaderBytes of scales, then the quants, kKTileBodyBytes for each k tile of 64
// weights, in k order. A k tile reads its body at kHeaderBytes + (kt % 4) kKTileBodyBytes of its
// tile (kt / 4) and the tile's whole header.
// The primary template is bl<b>g<g> (T names the bits; the group size is a launch argument):
// a row's share of a k tile is 8 b bytes of codes and the (s, z) of its two 32-column blocks'
// groups, 8 bytes, but the bytes lie in 16-row tiles, so the producer loads them per tile
// (its bl branch) and the stage holds [2 blocks][8 tiles][64 bytes] of (s, z), then
// [2 blocks][8 tiles][64 b bytes] of code lines.
template <DType T>
struct InLoopFormat {
  static_assert(bl_bits(T) >= 2 && bl_bits(T) <= 4, "the in-loop GEMM reads bl at 2..4 bits");
  static constexpr int kBits = bl_bits(T);
  static constexpr int kHeaderBytes = 8, kKTileBodyBytes = 8 * kBits;
};
template <>
struct InLoopFormat<DType::Q4_0> {  // header: 8 x d (fp16); bodies: 8 x 16 bytes of nibbles
  static constexpr int kTileBytes = kTileBlocks * sizeof(BlockQ4_0), kHeaderBytes = kTileBlocks * 2,
                       kKTileBodyBytes = 32;
};
template <>
struct InLoopFormat<DType::Q4_1> {  // header: 8 x (d, m); bodies as Q4_0's
  static constexpr int kTileBytes = kTileBlocks * sizeof(BlockQ4_1), kHeaderBytes = kTileBlocks * 4,
                       kKTileBodyBytes = 32;
};
template <>
struct InLoopFormat<DType::Q8_0> {  // header: 8 x d; bodies: 8 x 32 int8
  static constexpr int kTileBytes = kTileBlocks * sizeof(BlockQ8_0), kHeaderBytes = kTileBlocks * 2,
                       kKTileBodyBytes = 64;
};
template <>
struct InLoopFormat<DType::Q4_K> {  // header: d, dmin, 12 bytes of 6-bit scales and mins; qs
  static constexpr int kTileBytes = sizeof(BlockQ4_K), kHeaderBytes = 16, kKTileBodyBytes = 32;
};
template <>
struct InLoopFormat<DType::Q5_K> {  // header: Q4_K's 16 bytes and qh (a k tile takes 2 of its 8 bits); qs
  static constexpr int kTileBytes = sizeof(BlockQ5_K), kHeaderBytes = 48, kKTileBodyBytes = 32;
};
template <DType T>
constexpr bool in_loop_format_ok() {
  using F = InLoopFormat<T>;
  return F::kTileBytes == F::kHeaderBytes + 4 * F::kKTileBodyBytes && F::kHeaderBytes % 16 == 0 &&
         F::kKTileBodyBytes % 16 == 0;  // TMA boxes start 16-byte aligned
}
static_assert(in_loop_format_ok<DType::Q4_0>() && in_loop_format_ok<DType::Q4_1>() &&
              in_loop_format_ok<DType::Q8_0>() && in_loop_format_ok<DType::Q4_K>() &&
              in_loop_format_ok<DType::Q5_K>());

constexpr int kDecodedWarpBytes = 16 * kTileK * 2;  // a warp's 16 rows x 64 columns of fp16 weights

// The block tile, kBlockRows weight rows x kTokens (the wgmma N), kTokens / 2 fp32 accumulators
// a thread, and its shared-memory stages for format T.
template <DType T, int kTokens>
struct Tile {
  static constexpr int kRows = kBlockRows;
  static constexpr int kXStageBytes = kTokens * kTileK * 2;
  static constexpr int kBodyStageBytes = kRows * InLoopFormat<T>::kKTileBodyBytes;
  static constexpr int kHeaderStageBytes = kRows * InLoopFormat<T>::kHeaderBytes;
  static constexpr int kStageBytes = kXStageBytes + kBodyStageBytes + kHeaderStageBytes;
  // bl: each consumer warp decodes its 16 rows x 64 columns to fp16 here, then ldmatrix.
  static constexpr int kBarrierBytes = 128;  // the 2 kStages mbarriers
  static constexpr int kScratchBytes = bl_bits(T) ? 8 * kDecodedWarpBytes : 0;
  static constexpr int kSmemBytes = kStages * kStageBytes + kSmemAlign + kBarrierBytes + kScratchBytes;
  static_assert(kStageBytes % kSmemAlign == 0, "each stage's x tile must stay 1024-byte aligned");
  static_assert(kSmemBytes <= 227 * 1024, "an H100 SM's shared memory a block");
};

struct InLoopGemmArgs {
  int64_t rows;
  int64_t cols;
  int64_t n;
  GemmRowRange ranges[kGemmMaxRowRanges];  // where each range of rows goes (fp32 or out_half fp16)
  int n_ranges;
  bool out_half;
  bool accumulate;
  bool tma_store;  // the tile leaves through shared memory and TMA (out_maps), else direct stores
  int bl_group;    // bl<b>g<g>: g
  int bl_tile_group_bytes;  // bl<b>g<g>: 64 + 2 b g, a 16-row tile's bytes of one group
};

// Per row range, its output [n][ld] as a TMA tensor: box kStoreBoxBytes of rows x the tile's
// tokens, 128-byte swizzle.
struct OutMaps {
  CUtensorMap range[kGemmMaxRowRanges];
};
constexpr int kStoreBoxBytes = 128;  // a stored box's row extent: 32 fp32 or 64 fp16 outputs

#ifdef BITLIGHT_HOPPER
using namespace hopper;

constexpr int kConsumerRegisters = 232, kProducerRegisters = 40;  // 2 x 128 x 232 + 128 x 40 <= 64 K

__device__ __forceinline__ __half2 as_half2(uint32_t v) { return *reinterpret_cast<const __half2*>(&v); }
__device__ __forceinline__ uint32_t bits(__half2 v) { return *reinterpret_cast<const uint32_t*>(&v); }

// Nibbles of two body bytes (lo16 = bytes j, j + 1) as half2 of q - kBias, exact: the low
// nibbles and the high ones. Q5_K's fifth bits: two_fifth_bits holds the bits of weights j and
// j + 1 at bits 0 and 16 for the low nibbles, at bits 1 and 17 for the high ones (q + 16 each).
struct NibblePair {
  __half2 low, high;
};
template <int kBias>
__device__ __forceinline__ NibblePair nibbles(uint32_t two_bytes, uint32_t two_fifth_bits = 0) {
  const uint32_t spread = __byte_perm(two_bytes, 0u, 0x4140);  // [b0, 0, b1, 0]
  const uint32_t lo_bits = (spread & 0x000F000Fu) | ((two_fifth_bits & 0x00010001u) << 4) | 0x64006400u;  // 1024 + q
  const uint32_t hi_bits =
      (spread & 0x00F000F0u) | ((two_fifth_bits & 0x00020002u) << 7) | 0x64006400u;  // 1024 + 16 q
  return {__hsub2(as_half2(lo_bits), __float2half2_rn(1024.0f + kBias)),
          __hfma2(as_half2(hi_bits), __float2half2_rn(0.0625f), __float2half2_rn(-64.0f - kBias))};
}
// Two int8 (lo16 = bytes j, j + 1) as half2, exact: q + 128 under the magic 0x6400 is 1024 + q + 128.
__device__ __forceinline__ __half2 int8_pair(uint32_t two_bytes) {
  const uint32_t spread = __byte_perm(two_bytes ^ 0x8080u, 0u, 0x4140);  // [q0 + 128, 0, q1 + 128, 0]
  return __hsub2(as_half2(spread | 0x64006400u), __float2half2_rn(1152.0f));
}

// A weight from its quant q' (q - 8 for Q4_0 / Q4_K, q - 16 for Q5_K, q for Q4_1 / Q8_0) as
// q' a + c, one fp16 rounding: Q4_0 / Q8_0 q d, Q4_1 q d + m (the dequantize pass's values);
// Q4_K d sc q - dmin m = (q - 8) a + c with a = d sc and c = 8 a - dmin m rounded to fp16 (per
// sub-block; |c| stays near 0 for a centred block, so the roundings are ~2^-11 of the block's
// range); Q5_K the same with 16 a.
struct Affine {
  __half2 a, c;
  __device__ __forceinline__ __half2 operator()(__half2 q) const { return __hfma2(q, a, c); }
};
__device__ __forceinline__ __half2 half_pair(uint32_t two_halves, int which) {
  return __half2half2(__ushort_as_half(static_cast<unsigned short>(which ? two_halves >> 16 : two_halves)));
}

// This thread's A fragments of k tile kt from its stage: frag[step][4] (mma.m16n8k16's
// a0..a3: row g k 2c..2c+1, row g + 8 the same, row g k 2c+8..2c+9, row g + 8 the same).
// bodies [128 rows][kKTileBodyBytes], headers [128 rows][kHeaderBytes]: a k tile is 64 weights
// of the row's 256-weight tile (Q4_0 / Q4_1 / Q8_0: blocks 2 (kt % 4), +1 of the tiled layout,
// their scales in the header; Q4_K / Q5_K: the super-block's qs bytes 32 (kt % 4).., header d,
// dmin, the 12 scale bytes, and for Q5_K qh). At 4 bits the 16-bit loads at bytes 2c and 2c + 8
// (and 16 on) of the 32 give: Q4_0 / Q4_1, block h = byte / 16: low nibbles k step 2h, high
// 2h + 1 (scale of block h); Q4_K / Q5_K, half h = byte / 16: low nibbles step h (sub-block
// 2 (kt % 4)), high step 2 + h (the next sub-block); Q5_K's fifth bit of element l of sub-block
// s is bit s of qh[l], l = the body byte's index. Q8_0: step s reads bytes 16 (s % 2) + {2c,
// 2c + 8} of block s / 2.
template <DType T>
__device__ __forceinline__ void build_fragments(const uint8_t* bodies, const uint8_t* headers, int kt,
                                                int consumer, int warp_in_group, int lane, uint32_t (&frag)[4][4]) {
  using F = InLoopFormat<T>;
  const int g = lane / 4, c = lane % 4;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int r = consumer * 64 + warp_in_group * 16 + g + 8 * rr;
    const uint8_t* header = headers + r * F::kHeaderBytes;
    const uint8_t* body = bodies + r * F::kKTileBodyBytes;
    auto body_pair = [&](int byte) {  // bytes byte, byte + 1 of the row's k tile
      return *reinterpret_cast<const uint16_t*>(body + byte);
    };
    const __half2 zero = __float2half2_rn(0.0f);
    if constexpr (T == DType::Q8_0) {
      const uint32_t d_bits = *reinterpret_cast<const uint32_t*>(header + 4 * (kt % 4));  // blocks 2 (kt % 4), +1
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const Affine scale{half_pair(d_bits, s / 2), zero};
        const int at = 32 * (s / 2) + 16 * (s % 2) + 2 * c;
        frag[s][rr] = bits(scale(int8_pair(body_pair(at))));
        frag[s][2 + rr] = bits(scale(int8_pair(body_pair(at + 8))));
      }
      continue;
    }
    Affine low_scale[2], high_scale[2];  // by h
    if constexpr (T == DType::Q4_0) {
      const uint32_t d_bits = *reinterpret_cast<const uint32_t*>(header + 4 * (kt % 4));
#pragma unroll
      for (int h = 0; h < 2; ++h) low_scale[h] = high_scale[h] = Affine{half_pair(d_bits, h), zero};
    } else if constexpr (T == DType::Q4_1) {
      const uint2 dm = *reinterpret_cast<const uint2*>(header + 8 * (kt % 4));  // d0, m0, d1, m1
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint32_t pair = h ? dm.y : dm.x;
        low_scale[h] = high_scale[h] = Affine{half_pair(pair, 0), half_pair(pair, 1)};
      }
    } else {
      const uint32_t dm = *reinterpret_cast<const uint32_t*>(header);
      const uint32_t scales[3] = {*reinterpret_cast<const uint32_t*>(header + 4),
                                  *reinterpret_cast<const uint32_t*>(header + 8),
                                  *reinterpret_cast<const uint32_t*>(header + 12)};
      const float d = half_bits_to_float(static_cast<uint16_t>(dm & 0xFFFF));
      const float dmin = half_bits_to_float(static_cast<uint16_t>(dm >> 16));
      constexpr float kMid = T == DType::Q5_K ? 16.0f : 8.0f;  // the bias of q'
      Affine sub[2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        float sc, m;
        k4_scale_min(2 * (kt % 4) + i, scales, sc, m);
        const float a = d * sc;
        sub[i] = Affine{__float2half2_rn(a), __float2half2_rn(kMid * a - dmin * m)};
      }
      low_scale[0] = low_scale[1] = sub[0];
      high_scale[0] = high_scale[1] = sub[1];
    }
    constexpr int kBias = T == DType::Q4_1 ? 0 : T == DType::Q5_K ? 16 : 8;
    constexpr bool kSuperBlock = T == DType::Q4_K || T == DType::Q5_K;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint32_t fifth_first = 0, fifth_second = 0;  // Q5_K: bits 2 (kt % 4) and + 1 of qh[l], l = the byte
      if constexpr (T == DType::Q5_K) {
        auto fifth_bits = [&](int byte) {
          const uint32_t qh_pair = *reinterpret_cast<const uint16_t*>(header + 16 + byte);
          return __byte_perm(qh_pair, 0u, 0x4140) >> (2 * (kt % 4));
        };
        fifth_first = fifth_bits(16 * h + 2 * c);
        fifth_second = fifth_bits(16 * h + 2 * c + 8);
      }
      const NibblePair first = nibbles<kBias>(body_pair(16 * h + 2 * c), fifth_first);
      const NibblePair second = nibbles<kBias>(body_pair(16 * h + 2 * c + 8), fifth_second);
      const int low_step = kSuperBlock ? h : 2 * h, high_step = kSuperBlock ? 2 + h : 2 * h + 1;
      frag[low_step][rr] = bits(low_scale[h](first.low));
      frag[low_step][2 + rr] = bits(low_scale[h](second.low));
      frag[high_step][rr] = bits(high_scale[h](first.high));
      frag[high_step][2 + rr] = bits(high_scale[h](second.high));
    }
  }
}

// bl<b>g<g>: this warp's A fragments of a k tile, its 16 rows being 16-row tile `tile` (0..7)
// of the stage. bodies [2 blocks][8 tiles][b lines' 4-byte row shares x 16 rows], headers [2
// blocks][8 tiles][s[16], z[16] fp16] (InLoopFormat). Lane l decodes row l % 16 of 32-column
// block l / 16 (b dwords: bltile::codes_of_lines, the GEMV's fields), w = s q - s z in
// fp16 (q exact; one rounding of the product and one of s z, as Q4_K's affine map), into
// `decoded` [16 rows][64 columns] (16-byte chunk j of row r at chunk j ^ (r % 8), so the 8 rows a
// store or an ldmatrix phase touches fall in different banks); then 4 ldmatrix, one a k step.
template <int kBits>
__device__ __forceinline__ void build_fragments_bl(const uint8_t* bodies, const uint8_t* headers, uint8_t* decoded,
                                                   int tile, int lane, uint32_t (&frag)[4][4]) {
  constexpr int kTiles = kBlockRows / bltile::kTileRows;
  const int r = lane % 16, block = lane / 16;
  const uint8_t* header = headers + (block * kTiles + tile) * bltile::kHeaderBytes;
  const uint8_t* lines = bodies + (block * kTiles + tile) * bltile::kLineBytes * kBits;
  uint32_t dwords[kBits];
#pragma unroll
  for (int u = 0; u < kBits; ++u) dwords[u] = *reinterpret_cast<const uint32_t*>(lines + bltile::kLineBytes * u + 4 * r);
  const __half s = *reinterpret_cast<const __half*>(header + 2 * r);
  const __half z = *reinterpret_cast<const __half*>(header + 32 + 2 * r);
  const __half2 scale = __half2half2(s), offset = __float2half2_rn(-__half2float(s) * __half2float(z));
  uint32_t codes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  bltile::codes_of_lines<kBits>(dwords, codes);
  // Two codes (bytes of a codes word picked by `select`) as fp16 weights: 1024 + q under the magic 0x6400.
  auto weights = [&](uint32_t word, uint32_t select) {
    const __half2 q = __hsub2(as_half2(__byte_perm(word, 0x64u, select)), __float2half2_rn(1024.0f));
    return bits(__hfma2(q, scale, offset));
  };
  __syncwarp();  // the ldmatrix of the previous k tile have read `decoded`
#pragma unroll
  for (int c = 0; c < 2; ++c)
#pragma unroll
    for (int pair = 0; pair < 2; ++pair) {  // quads 2 pair, 2 pair + 1 of chunk c: 8 columns
      const uint32_t q0 = codes[4 * c + 2 * pair], q1 = codes[4 * c + 2 * pair + 1];
      const int chunk = 4 * block + 2 * c + pair;
      *reinterpret_cast<uint4*>(decoded + r * 128 + ((chunk ^ (r % 8)) << 4)) =
          make_uint4(weights(q0, 0x4140), weights(q0, 0x4342), weights(q1, 0x4140), weights(q1, 0x4342));
    }
  __syncwarp();
#pragma unroll
  for (int step = 0; step < 4; ++step) {
    const int chunk = 2 * step + block;
    // Lane l gives row l % 16, columns 8 (l / 16) .. of the step: r = a0..a3 (mma.cuh's layout).
    ldmatrix_x4<false>(frag[step], reinterpret_cast<const __half*>(decoded + r * 128 + ((chunk ^ (r % 8)) << 4)));
  }
}

// A stage's place in the ring: its slot and the parity of that slot's current use.
struct RingPosition {
  int slot = 0;
  uint32_t phase = 0;
  __device__ __forceinline__ void advance() {
    if (++slot == kStages) {
      slot = 0;
      phase ^= 1;
    }
  }
};

// Where row `row` of out = W x goes: token t's value at base + t * ld.
template <typename Out>
struct RowTarget {
  Out* base;
  int64_t ld;
};
template <typename Out>
__device__ __forceinline__ RowTarget<Out> row_target(const InLoopGemmArgs& p, int64_t row) {
  GemmRowRange r = p.ranges[0];
#pragma unroll
  for (int i = 1; i < kGemmMaxRowRanges; ++i)  // constant indices: the ranges stay in parameter space
    if (i < p.n_ranges && row >= p.ranges[i].first_row) r = p.ranges[i];
  return {static_cast<Out*>(r.out) + (row - r.first_row), r.ld};
}

// One warp's share of an m64 tile, out[token][row] (+)= acc: acc[i] is row row0 + 8 ((i / 2) % 2)
// and token token0 + 8 (i / 4) + i % 2 (row0 = the warp's row g, token0 = its column 2 c).
// Blocks whose tile lies inside the output store without bounds checks.
template <typename Out, bool kAccumulate, int kAcc>
__device__ __forceinline__ void store_tile(const InLoopGemmArgs& p, int64_t row0, int64_t token0, bool whole,
                                           const float (&acc)[kAcc]) {
  const RowTarget<Out> lo = row_target<Out>(p, min(row0, p.rows - 1)), hi = row_target<Out>(p, min(row0 + 8, p.rows - 1));
#pragma unroll
  for (int i = 0; i < kAcc; ++i) {
    const int dt = 8 * (i / 4) + i % 2, dr = 8 * ((i / 2) % 2);
    if (!whole && (row0 + dr >= p.rows || token0 + dt >= p.n)) continue;
    const RowTarget<Out>& at = dr ? hi : lo;
    Out* o = at.base + (token0 + dt) * at.ld;
    if constexpr (sizeof(Out) == 2)
      *o = __float2half_rn(kAccumulate ? __half2float(*o) + acc[i] : acc[i]);
    else
      *o = kAccumulate ? *o + acc[i] : acc[i];
  }
}

// The output tile written to shared memory for the TMA store: sub-tiles of kStoreBoxBytes of
// rows (32 fp32 or 64 fp16) x kTokens tokens, each in the 128-byte swizzle (16-byte chunk j of
// token t's row at chunk j ^ (t % 8)), so that the 4 token columns of a store instruction's lanes
// fall in different banks. This thread's acc[i]: local row row0 + 8 ((i / 2) % 2), local token
// token0 + 8 (i / 4) + i % 2.
template <typename Out, int kTokens>
__device__ __forceinline__ void stage_tile(uint8_t* staging, int row0, int token0, const float (&acc)[kTokens / 2]) {
  constexpr int kBoxRows = kStoreBoxBytes / sizeof(Out);
  constexpr int kSubBytes = kTokens * kStoreBoxBytes;
#pragma unroll
  for (int i = 0; i < kTokens / 2; ++i) {
    const int r = row0 + 8 * ((i / 2) % 2), t = token0 + 8 * (i / 4) + i % 2;
    const int byte = (r % kBoxRows) * static_cast<int>(sizeof(Out));
    Out* o = reinterpret_cast<Out*>(staging + (r / kBoxRows) * kSubBytes + t * kStoreBoxBytes +
                                    (((byte >> 4) ^ (t & 7)) << 4) + (byte & 15));
    if constexpr (sizeof(Out) == 2)
      *o = __float2half_rn(acc[i]);
    else
      *o = acc[i];
  }
}

// One thread stores the staged tile (rows m0.., tokens n0..): for each row range the tile
// touches, each sub-tile box at coordinates relative to that range (ranges start at a box
// boundary; rows past the range's end are clipped by TMA), added to what is there with
// accumulate.
template <int kTokens>
__device__ __forceinline__ void store_staged_tile(const InLoopGemmArgs& p, const OutMaps& maps, const uint8_t* staging,
                                                  int64_t m0, int64_t n0) {
  const int box_rows = p.out_half ? kStoreBoxBytes / 2 : kStoreBoxBytes / 4;
  const int subs = kBlockRows / box_rows;
  // Constant indices keep the tensor maps' addresses in parameter space, where TMA reads them.
#pragma unroll
  for (int r = 0; r < kGemmMaxRowRanges; ++r) {
    if (r >= p.n_ranges) break;
    const int64_t first = p.ranges[r].first_row;
    int64_t end = p.rows;
#pragma unroll
    for (int next = r + 1; next < kGemmMaxRowRanges; ++next)
      if (next == r + 1 && next < p.n_ranges) end = p.ranges[next].first_row;
    for (int sub = 0; sub < subs; ++sub) {
      const int64_t sub_first = m0 + sub * box_rows;
      if (sub_first + box_rows <= first || sub_first >= end) continue;
      const uint8_t* src = staging + sub * kTokens * kStoreBoxBytes;
      const int32_t row = static_cast<int32_t>(sub_first - first), token = static_cast<int32_t>(n0);
      if (p.accumulate)
        tma_add_2d(&maps.range[r], row, token, src);
      else
        tma_store_2d(&maps.range[r], row, token, src);
    }
  }
  bulk_commit();
  bulk_wait_read_all();  // the shared memory stays the block's until TMA has read it
}

#endif  // BITLIGHT_HOPPER

// x_map: fp16 [n][cols], box 64 x kTokens, 128-byte swizzle. body_map / header_map: the weight
// as bytes [rows][row_bytes], boxes kKTileBodyBytes x kRows and kHeaderBytes x kRows.
template <DType T, int kTokens, int kCluster>
__global__ void __launch_bounds__(kThreads, 1)
    gemm_in_loop_wgmma_kernel(const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap body_map,
                              const __grid_constant__ CUtensorMap header_map, const __grid_constant__ OutMaps out_maps,
                              const __grid_constant__ InLoopGemmArgs p) {
#ifdef BITLIGHT_HOPPER
  using Tl = Tile<T, kTokens>;
  using F = InLoopFormat<T>;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + kSmemAlign - 1) & ~static_cast<uintptr_t>(kSmemAlign - 1));
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * Tl::kStageBytes);
  uint64_t* empty = full + kStages;
  auto x_stage = [&](int slot) { return smem + slot * Tl::kStageBytes; };
  auto body_stage = [&](int slot) { return x_stage(slot) + Tl::kXStageBytes; };
  auto header_stage = [&](int slot) { return x_stage(slot) + Tl::kXStageBytes + Tl::kBodyStageBytes; };

  // A block an output tile, the tokens' fastest: the blocks working at once share weight rows,
  // so each weight byte comes from HBM about once; x (2 bytes a token and column) stays in L2.
  // (Persistent blocks looping over tiles, the ring running on from one into the next, measured
  // no faster: docs/cuda.md.) In a cluster of kCluster blocks, they take neighbouring row tiles
  // of the same tokens: each loads 1 / kCluster of the x tile and TMA multicasts it to all, so
  // a block reads 32 / kCluster KB of x from L2 a k tile (the kernel's pace is its L2 -> shared
  // memory bytes, ~85 % of them x's: docs/cuda.md, "Sixteenth session"). n0 and m0 are derived
  // where used rather than kept: the consumers' registers are full during the main loop.
  auto block_rank = [] { return kCluster > 1 ? static_cast<int>(cluster_rank()) : 0; };
  auto tile_tokens = [&] {  // n0, the tile's first token
    const int token_tiles = static_cast<int>((p.n + kTokens - 1) / kTokens);
    return static_cast<int64_t>((static_cast<int>(blockIdx.x) / kCluster) % token_tiles) * kTokens;
  };
  auto tile_rows = [&] {  // m0, the tile's first weight row
    const int token_tiles = static_cast<int>((p.n + kTokens - 1) / kTokens);
    const int row_cluster = static_cast<int>(blockIdx.x) / kCluster / token_tiles;
    return static_cast<int64_t>(row_cluster * kCluster + block_rank()) * Tl::kRows;
  };
  const int k_tiles = static_cast<int>(p.cols / kTileK);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warpgroup = warp / 4, warp_in_group = warp % 4;
  constexpr int kConsumerWarps = 8;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], kConsumerWarps * kCluster);  // a slot is refilled in every block at once
    }
    fence_barrier_init();
  }
  // In a cluster: every block's barriers are initialised before any multicast or remote arrival.
  if constexpr (kCluster > 1) cluster_sync();
  else __syncthreads();

  if (warpgroup == 0) {
    release_registers<kProducerRegisters>();
    if (threadIdx.x == 0) {
      constexpr int kXRows = kTokens / kCluster;  // this block's share of the x tile
      const int rank = block_rank();
      const int64_t n0 = tile_tokens(), m0 = tile_rows();
      RingPosition at;
      for (int kt = 0; kt < k_tiles; ++kt, at.advance()) {
        mbarrier_wait(&empty[at.slot], at.phase ^ 1);  // every block's consumers are done with the slot
        mbarrier_arrive_expect_tx(&full[at.slot], Tl::kStageBytes);
        if constexpr (kCluster > 1)
          tma_load_2d_multicast(x_stage(at.slot) + rank * kXRows * kTileK * 2, &x_map, kt * kTileK,
                                static_cast<int32_t>(n0 + rank * kXRows), &full[at.slot], (1u << kCluster) - 1);
        else
          tma_load_2d(x_stage(at.slot), &x_map, kt * kTileK, static_cast<int32_t>(n0), &full[at.slot]);
        if constexpr (bl_bits(T) > 0) {
          // bl: the maps are [16-row tiles][a tile row's bytes / 4] (4-byte elements); block j of
          // the k tile (columns 64 kt + 32 j ..) is block u of group G: its (s, z) at the tile
          // group's start, its b lines at 64 + 64 b u.
          constexpr int kTiles = kBlockRows / bltile::kTileRows;
          const int32_t tile0 = static_cast<int32_t>(m0 / bltile::kTileRows);
#pragma unroll
          for (int j = 0; j < 2; ++j) {
            const int col = kt * kTileK + 32 * j, group = col / p.bl_group, u = col % p.bl_group / 32;
            const int32_t at_group = group * p.bl_tile_group_bytes / 4;
            tma_load_2d(header_stage(at.slot) + j * kTiles * bltile::kHeaderBytes, &header_map, at_group, tile0,
                        &full[at.slot]);
            tma_load_2d(body_stage(at.slot) + j * kTiles * bltile::kLineBytes * F::kBits, &body_map,
                        at_group + (bltile::kHeaderBytes + bltile::kLineBytes * F::kBits * u) / 4, tile0, &full[at.slot]);
          }
        } else {
          // Weight bytes of k tile kt: its 256-weight tile kt / 4 starts at kTileBytes (kt / 4)
          // bytes of the row, with the header first (InLoopFormat).
          const int32_t tile_at = (kt / 4) * F::kTileBytes;
          tma_load_2d(body_stage(at.slot), &body_map, tile_at + F::kHeaderBytes + (kt % 4) * F::kKTileBodyBytes,
                      static_cast<int32_t>(m0), &full[at.slot]);
          tma_load_2d(header_stage(at.slot), &header_map, tile_at, static_cast<int32_t>(m0), &full[at.slot]);
        }
      }
    }
    if constexpr (kCluster > 1) {
      __syncwarp();
      cluster_sync();  // no block leaves while another may still arrive on its barriers
    }
    return;
  }

  claim_registers<kConsumerRegisters>();
  const int consumer = warpgroup - 1;
  constexpr int kAcc = kTokens / 2;  // accumulators a thread
  float acc[kAcc];
  uint32_t frag_even[4][4], frag_odd[4][4];
  // bl: this warp's decoded 16 x 64 weights, after the mbarriers.
  uint8_t* decoded = smem + kStages * Tl::kStageBytes + Tl::kBarrierBytes + (consumer * 4 + warp_in_group) * kDecodedWarpBytes;
  auto build = [&](const uint8_t* bodies, const uint8_t* headers, int kt, uint32_t (&frag)[4][4]) {
    if constexpr (bl_bits(T) > 0)
      build_fragments_bl<bl_bits(T)>(bodies, headers, decoded, consumer * 4 + warp_in_group, lane, frag);
    else
      build_fragments<T>(bodies, headers, kt, consumer, warp_in_group, lane, frag);
  };
  RingPosition at;        // of stage kt
  int previous_slot = 0;  // of stage kt - 1
  auto step = [&](int kt, const uint32_t (&cur)[4][4], uint32_t (&next)[4][4]) {
    const uint8_t* xs = x_stage(at.slot);
    wgmma_fence();
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      // k step s: bytes 32 s .. 32 s + 32 of every 128-byte token row.
      const uint64_t b = sw128_descriptor(xs + 32 * s);
      if constexpr (kTokens == 128)
        wgmma_m64n128k16(acc, cur[s], b);
      else
        wgmma_m64n256k16(acc, cur[s], b);
    }
    wgmma_commit();
    wgmma_wait<1>();  // this warpgroup's wgmma of stage kt - 1 are done; `next` is free
    if (kt > 0 && lane == 0) {
      if constexpr (kCluster > 1) {
#pragma unroll
        for (int r = 0; r < kCluster; ++r) mbarrier_arrive_cluster(&empty[previous_slot], r);
      } else {
        mbarrier_arrive(&empty[previous_slot]);
      }
    }
    previous_slot = at.slot;
    at.advance();
    if (kt + 1 < k_tiles) {
      mbarrier_wait(&full[at.slot], at.phase);
      build(body_stage(at.slot), header_stage(at.slot), kt + 1, next);
    }
  };
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.0f;
  mbarrier_wait(&full[0], 0);
  build(body_stage(0), header_stage(0), 0, frag_even);
  // k_tiles is a multiple of 4 (cols % 256 == 0), so the pairs come out even.
  for (int kt = 0; kt < k_tiles; kt += 2) {
    step(kt, frag_even, frag_odd);
    step(kt + 1, frag_odd, frag_even);
  }
  wgmma_wait<0>();

  const int g = lane / 4, c = lane % 4;
  if (p.tma_store) {
    // The stages are free once both consumer warpgroups are past their last wgmma (the producer
    // issued nothing more): the tile goes there, then out by TMA while this block's SM starts
    // the next block (direct stores kept the SM's tensor cores idle ~10 % of the time).
    named_barrier(1, 256);
    const int row_local = consumer * 64 + warp_in_group * 16 + g;
    if (p.out_half)
      stage_tile<__half, kTokens>(smem, row_local, 2 * c, acc);
    else
      stage_tile<float, kTokens>(smem, row_local, 2 * c, acc);
    fence_shared_to_async();
    named_barrier(1, 256);
    if (threadIdx.x == 128) store_staged_tile<kTokens>(p, out_maps, smem, tile_rows(), tile_tokens());
    if constexpr (kCluster > 1) {
      __syncwarp();
      cluster_sync();
    }
    return;
  }
  const int64_t m0 = tile_rows(), n0 = tile_tokens();
  const bool whole = m0 + Tl::kRows <= p.rows && n0 + kTokens <= p.n;
  const int64_t row0 = m0 + consumer * 64 + warp_in_group * 16 + g, token0 = n0 + 2 * c;
  if (p.out_half) {
    if (p.accumulate) store_tile<__half, true>(p, row0, token0, whole, acc);
    else store_tile<__half, false>(p, row0, token0, whole, acc);
  } else {
    if (p.accumulate) store_tile<float, true>(p, row0, token0, whole, acc);
    else store_tile<float, false>(p, row0, token0, whole, acc);
  }
  if constexpr (kCluster > 1) cluster_sync();
#endif
}

// BITLIGHT_CUDA_INLOOP_GEMM=0|1|2: where the backend takes this kernel (InLoopGemmUse), default 2.
InLoopGemmUse in_loop_gemm_use_default() {
  const auto v = env_choice("BITLIGHT_CUDA_INLOOP_GEMM", {"0", "1", "2"});
  if (v == "0") return InLoopGemmUse::off;
  if (v == "1") return InLoopGemmUse::qkv;
  return InLoopGemmUse::everywhere;
}
InLoopGemmUse in_loop_gemm_use_now = in_loop_gemm_use_default();
int64_t in_loop_gemm_launches = 0;  // host-side count, for the tests
// BITLIGHT_CUDA_INLOOP_GEMM_TILE=128x256|128x128 (rows x tokens) forces a block tile.
InLoopGemmTile in_loop_gemm_tile_default() {
  const auto v = env_choice("BITLIGHT_CUDA_INLOOP_GEMM_TILE", {"128x256", "128x128", "auto"});
  if (v == "128x256") return InLoopGemmTile::rows128_tokens256;
  if (v == "128x128") return InLoopGemmTile::rows128_tokens128;
  return InLoopGemmTile::automatic;
}
InLoopGemmTile in_loop_gemm_tile = in_loop_gemm_tile_default();
// BITLIGHT_CUDA_INLOOP_GEMM_STORE=direct: the tile stored from registers (comparisons).
const bool in_loop_gemm_tma_store = env_choice("BITLIGHT_CUDA_INLOOP_GEMM_STORE", {"direct", "tma"}) != "direct";
// BITLIGHT_CUDA_INLOOP_GEMM_CLUSTER=1: blocks alone, each loading its whole x tile; default
// clusters of 2 sharing it (launchers.h, set_in_loop_gemm_cluster).
int in_loop_gemm_cluster_now = env_choice("BITLIGHT_CUDA_INLOOP_GEMM_CLUSTER", {"1", "2"}) == "1" ? 1 : 2;
// The formats this kernel reads, and up to how many tokens the backend gives it each one
// (launchers.h, set_in_loop_gemm_max_tokens): BITLIGHT_CUDA_INLOOP_GEMM_FORMATS=q4_0,q8_0,... at
// start-up names those taken at any count (the others never), else the measured defaults:
// Q4_0, Q4_1, Q8_0, Q4_K and bl<2..4>g<g> at any count, Q5_K up to 512 tokens (docs/cuda.md,
// "Seventeenth session", "Twentieth session").
constexpr DType kInLoopFormats[] = {DType::Q4_0,   DType::Q4_1,   DType::Q8_0,    DType::Q4_K,  DType::Q5_K,
                                    DType::BL2G32, DType::BL2G64, DType::BL2G128, DType::BL3G32, DType::BL3G64,
                                    DType::BL3G128, DType::BL4G32, DType::BL4G64, DType::BL4G128};
constexpr size_t kInLoopFormatCount = std::size(kInLoopFormats);
constexpr int64_t kQ5KMaxTokensByDefault = 512;
int in_loop_format_index(DType t) {
  for (size_t i = 0; i < kInLoopFormatCount; ++i)
    if (kInLoopFormats[i] == t) return static_cast<int>(i);
  return -1;
}
std::array<int64_t, kInLoopFormatCount> in_loop_max_tokens_default() {
  std::array<int64_t, kInLoopFormatCount> max_tokens{};
  const char* v = std::getenv("BITLIGHT_CUDA_INLOOP_GEMM_FORMATS");
  if (!v) {
    for (size_t i = 0; i < kInLoopFormatCount; ++i)
      max_tokens[i] = kInLoopFormats[i] == DType::Q5_K ? kQ5KMaxTokensByDefault : kInLoopGemmAnyTokens;
    return max_tokens;
  }
  for (std::string_view list(v); !list.empty();) {
    const size_t comma = list.find(',');
    const std::string_view name = list.substr(0, comma);
    const std::optional<DType> t = dtype_from_name(name);
    const int i = t ? in_loop_format_index(*t) : -1;
    if (i >= 0)
      max_tokens[static_cast<size_t>(i)] = kInLoopGemmAnyTokens;
    else
      warn_ignored_env("BITLIGHT_CUDA_INLOOP_GEMM_FORMATS item", name, "q4_0, q4_1, q8_0, q4_k, q5_k or bl<2..4>g<g>");
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  return max_tokens;
}
std::array<int64_t, kInLoopFormatCount> in_loop_max_tokens_now = in_loop_max_tokens_default();

// The kernel runs only where it was built from sm_90a code: on an H100/H200 (compute
// capability 9.0) with the binary's sm_90a SASS, not from compute_80 PTX (whose body is empty).
bool device_runs_wgmma() {
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  cudaFuncAttributes attributes{};
  return major == 9 && minor == 0 &&
         cudaFuncGetAttributes(&attributes, gemm_in_loop_wgmma_kernel<DType::Q4_0, 128, 1>) == cudaSuccess &&
         attributes.ptxVersion >= 90;
}

// cuTensorMapEncodeTiled from the driver (the runtime links no libcuda); null if unavailable.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      return static_cast<PFN_cuTensorMapEncodeTiled_v12000>(nullptr);
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encode;
}

// A 2D tensor map: dims {inner, outer}, outer stride in bytes, box {box_inner, box_outer}.
bool encode_2d(CUtensorMap* map, CUtensorMapDataType type, const void* base, uint64_t inner, uint64_t outer,
               uint64_t outer_stride_bytes, uint32_t box_inner, uint32_t box_outer, CUtensorMapSwizzle swizzle) {
  const cuuint64_t dims[2] = {inner, outer};
  const cuuint64_t strides[1] = {outer_stride_bytes};
  const cuuint32_t box[2] = {box_inner, box_outer};
  const cuuint32_t element_strides[2] = {1, 1};
  return tensor_map_encoder()(map, type, 2, const_cast<void*>(base), dims, strides, box, element_strides,
                              CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

void set_in_loop_gemm(InLoopGemmUse use, InLoopGemmTile tile) {
  in_loop_gemm_use_now = use;
  in_loop_gemm_tile = tile;
}

InLoopGemmUse in_loop_gemm_use() { return in_loop_gemm_use_now; }
void set_in_loop_gemm_max_tokens(DType t, int64_t max_tokens) {
  if (const int i = in_loop_format_index(t); i >= 0) in_loop_max_tokens_now[static_cast<size_t>(i)] = max_tokens;
}
int64_t in_loop_gemm_max_tokens(DType t) {
  const int i = in_loop_format_index(t);
  return i >= 0 ? in_loop_max_tokens_now[static_cast<size_t>(i)] : 0;
}
void set_in_loop_gemm_cluster(int blocks) { in_loop_gemm_cluster_now = blocks == 1 ? 1 : 2; }
int in_loop_gemm_cluster() { return in_loop_gemm_cluster_now; }
int64_t in_loop_gemm_launch_count() { return in_loop_gemm_launches; }

bool gemm_in_loop_applies(const WeightView& w, int64_t n_tokens) {
  // Q4_0, Q4_1 and Q8_0 in the tiled layout, Q4_K and Q5_K as stored: a header of scales, then the
  // quants, for each 256 weights of a row (InLoopFormat). bl<2..4>g<g> as stored, in whole pairs
  // of k tiles (the main loop's step) and whole 16-row tiles.
  const bool super_blocks = w.dtype == DType::Q4_K || w.dtype == DType::Q5_K;
  const bool bl = bl_bits(w.dtype) > 0;
  const bool layout = bl ? w.cols % (2 * kTileK) == 0 && w.rows % bltile::kTileRows == 0
                         : (super_blocks || w.tiled) && w.cols % (kTileBlocks * 32) == 0;
  return n_tokens > kGemvMaxTokens && n_tokens <= in_loop_gemm_max_tokens(w.dtype) && layout && w.rows > 0 &&
         tensor_map_encoder() && device_runs_wgmma();
}

bool launch_gemm_in_loop_row_ranges(const WeightView& w, const uint16_t* x, int64_t n_tokens,
                                    std::span<const GemmRowRange> outputs, bool out_half, bool accumulate,
                                    cudaStream_t stream) {
  // TMA: 16-byte aligned bases and strides (row_bytes = kTileBytes per 256 columns; bl: a
  // 16-row tile's bytes, 16 row_bytes).
  const uint64_t weight_stride = bl_bits(w.dtype) > 0 ? bltile::kTileRows * w.row_bytes : w.row_bytes;
  if (!gemm_in_loop_applies(w, n_tokens) || reinterpret_cast<uintptr_t>(x) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(w.data) % 16 != 0 || weight_stride % 16 != 0 || outputs.empty() ||
      outputs.size() > kGemmMaxRowRanges || outputs[0].first_row != 0)
    return false;
  InLoopGemmArgs p{w.rows, w.cols, n_tokens, {}, static_cast<int>(outputs.size()), out_half, accumulate, false, 0, 0};
  if (const auto shape = quant::bl_group_shape(w.dtype)) {
    p.bl_group = shape->group_size;
    p.bl_tile_group_bytes = static_cast<int>(shape->tile_group_bytes());
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (i > 0 && outputs[i].first_row <= outputs[i - 1].first_row) return false;
    p.ranges[i] = outputs[i];
  }
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  auto launch = [&]<DType T, int kTokens, int kCluster>() {
    using Tl = Tile<T, kTokens>;
    using F = InLoopFormat<T>;
    CUtensorMap x_map, body_map, header_map;
    const uint64_t cols = static_cast<uint64_t>(w.cols), rows = static_cast<uint64_t>(w.rows);
    if (!encode_2d(&x_map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, x, cols, static_cast<uint64_t>(n_tokens), cols * 2, kTileK,
                   kTokens / kCluster, CU_TENSOR_MAP_SWIZZLE_128B))
      return false;
    if constexpr (bl_bits(T) > 0) {
      // [16-row tiles][tile row bytes / 4] of 4-byte elements (a box's row is at most 256
      // elements: 64 b bytes of lines need more than bytes); boxes of 8 tiles (128 rows).
      const uint64_t tiles = rows / bltile::kTileRows, words = weight_stride / 4;
      constexpr uint32_t kTiles = kBlockRows / bltile::kTileRows;
      if (!encode_2d(&body_map, CU_TENSOR_MAP_DATA_TYPE_UINT32, w.data, words, tiles, weight_stride,
                     bltile::kLineBytes * F::kBits / 4, kTiles, CU_TENSOR_MAP_SWIZZLE_NONE) ||
          !encode_2d(&header_map, CU_TENSOR_MAP_DATA_TYPE_UINT32, w.data, words, tiles, weight_stride,
                     bltile::kHeaderBytes / 4, kTiles, CU_TENSOR_MAP_SWIZZLE_NONE))
        return false;
    } else if (!encode_2d(&body_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, w.data, w.row_bytes, rows, w.row_bytes,
                          F::kKTileBodyBytes, Tl::kRows, CU_TENSOR_MAP_SWIZZLE_NONE) ||
               !encode_2d(&header_map, CU_TENSOR_MAP_DATA_TYPE_UINT8, w.data, w.row_bytes, rows, w.row_bytes,
                          F::kHeaderBytes, Tl::kRows, CU_TENSOR_MAP_SWIZZLE_NONE)) {
      return false;
    }
    // The outputs as TMA tensors where they qualify (16-byte aligned bases and token strides);
    // an fp16 sum into fp16 outputs (not used by the backend) keeps the direct stores.
    OutMaps out_maps;
    const size_t out_bytes = out_half ? 2 : 4;
    p.tma_store = in_loop_gemm_tma_store && !(out_half && accumulate);
    for (int i = 0; i < p.n_ranges && p.tma_store; ++i) {
      const int64_t end = i + 1 < p.n_ranges ? p.ranges[i + 1].first_row : w.rows;
      const uint64_t range_rows = static_cast<uint64_t>(end - p.ranges[i].first_row);
      // A range starting inside a stored box would need a negative box coordinate (the first
      // version, which issued them and indexed the maps at run time, stopped with an illegal
      // instruction on the H100): such ranges keep the direct stores.
      p.tma_store = reinterpret_cast<uintptr_t>(p.ranges[i].out) % 16 == 0 && (p.ranges[i].ld * out_bytes) % 16 == 0 &&
                    p.ranges[i].ld >= static_cast<int64_t>(range_rows) &&
                    p.ranges[i].first_row % static_cast<int64_t>(kStoreBoxBytes / out_bytes) == 0 &&
                    encode_2d(&out_maps.range[i], out_half ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT32,
                              p.ranges[i].out, range_rows, static_cast<uint64_t>(n_tokens), p.ranges[i].ld * out_bytes,
                              static_cast<uint32_t>(kStoreBoxBytes / out_bytes), kTokens, CU_TENSOR_MAP_SWIZZLE_128B);
    }
    // Row tiles rounded up to whole clusters: a block past the last row still loads its share
    // of x for the others (its weight boxes read as zeros, its stores are skipped).
    const int64_t row_tiles = (w.rows + Tl::kRows - 1) / Tl::kRows;
    const int64_t cluster_row_tiles = (row_tiles + kCluster - 1) / kCluster * kCluster;
    const unsigned grid = static_cast<unsigned>(((n_tokens + kTokens - 1) / kTokens) * cluster_row_tiles);
    auto* kernel = gemm_in_loop_wgmma_kernel<T, kTokens, kCluster>;
    // Per device context, so set before every launch (a host-side attribute write).
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Tl::kSmemBytes);
    if constexpr (kCluster > 1) {
      cudaLaunchAttribute cluster_dims{};
      cluster_dims.id = cudaLaunchAttributeClusterDimension;
      cluster_dims.val.clusterDim.x = kCluster;
      cluster_dims.val.clusterDim.y = cluster_dims.val.clusterDim.z = 1;
      cudaLaunchConfig_t config{};
      config.gridDim = dim3(grid);
      config.blockDim = dim3(kThreads);
      config.dynamicSmemBytes = Tl::kSmemBytes;
      config.stream = stream;
      config.attrs = &cluster_dims;
      config.numAttrs = 1;
      if (cudaLaunchKernelEx(&config, kernel, x_map, body_map, header_map, out_maps, p) != cudaSuccess) {
        cudaGetLastError();  // refused (nothing ran): the caller takes the other path
        return false;
      }
    } else {
      kernel<<<grid, kThreads, Tl::kSmemBytes, stream>>>(x_map, body_map, header_map, out_maps, p);
    }
    ++in_loop_gemm_launches;
    return true;
  };
  // Blocks of 128 rows x 256 tokens: each weight fragment decoded serves 256 tokens (H100, 8B
  // shapes at 2048 tokens: 495-616 TFLOP/s against 441-509 for 256 x 128, docs/cuda.md). Where
  // that leaves SMs idle (the 8B k and v products, 1024 rows: 64 blocks), 128 x 128.
  InLoopGemmTile tile = in_loop_gemm_tile;
  if (tile == InLoopGemmTile::automatic) {
    const int64_t wide_blocks = ((w.rows + 127) / 128) * ((n_tokens + 255) / 256);
    tile = wide_blocks >= sms ? InLoopGemmTile::rows128_tokens256 : InLoopGemmTile::rows128_tokens128;
  }
  const bool narrow = tile == InLoopGemmTile::rows128_tokens128;
  // bl decodes ~2x the instructions of Q4_0 a weight (the bit transpose, then fp16 through shared
  // memory), and a 128 x 128 tile decodes each weight for half the tokens: where the automatic
  // choice is that tile, bl keeps the dequantize pass + cuBLAS (H100, pp2048: 8B bl4g128, all
  // 128 x 256, 53 -> 60 % of the bf16 peak in-loop; 1B, whose O and down GEMMs take 128 x 128,
  // 44 -> 42 % with those in-loop too; docs/cuda.md "Twentieth session").
  if (bl_bits(w.dtype) > 0 && narrow && in_loop_gemm_tile == InLoopGemmTile::automatic) return false;
  auto launch_format = [&]<DType T>() {
    if (in_loop_gemm_cluster_now == 2)
      return narrow ? launch.template operator()<T, 128, 2>() : launch.template operator()<T, 256, 2>();
    return narrow ? launch.template operator()<T, 128, 1>() : launch.template operator()<T, 256, 1>();
  };
  switch (w.dtype) {
    case DType::Q4_0: return launch_format.template operator()<DType::Q4_0>();
    case DType::Q4_1: return launch_format.template operator()<DType::Q4_1>();
    case DType::Q8_0: return launch_format.template operator()<DType::Q8_0>();
    case DType::Q4_K: return launch_format.template operator()<DType::Q4_K>();
    case DType::Q5_K: return launch_format.template operator()<DType::Q5_K>();
    default: break;
  }
  switch (bl_bits(w.dtype)) {  // the kernel's T names the bits; the group is p.bl_group
    case 2: return launch_format.template operator()<DType::BL2G128>();
    case 3: return launch_format.template operator()<DType::BL3G128>();
    case 4: return launch_format.template operator()<DType::BL4G128>();
    default: return false;
  }
}

bool launch_gemm_in_loop(const WeightView& w, const uint16_t* x, int64_t n_tokens, void* out, bool out_half,
                         bool accumulate, cudaStream_t stream) {
  const GemmRowRange all{0, out, w.rows};
  return launch_gemm_in_loop_row_ranges(w, x, n_tokens, std::span<const GemmRowRange>(&all, 1), out_half, accumulate,
                                        stream);
}

}  // namespace bl::cuda
