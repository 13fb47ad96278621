// The "tiled" device layout of weights whose GGUF blocks are not 16-byte aligned (Q4_0 18 B,
// Q4_1 20 B, Q8_0 34 B, Q6_K 210 B), applied by CudaBackend::upload_weight.
//
// Why: a GEMV lane wants its weights in one 16-byte load, and a warp's loads side by side.
// In GGUF rows the quants of a Q4_0 block sit at byte 2 of an 18-byte stride, so they can only
// be read two bytes at a time (9 load instructions per 32 weights); the L1 then handles ~13
// useful bytes per wavefront, which capped Q4_0 at ~36 % of HBM bandwidth (docs/cuda.md).
//
// Layout: every run of 8 consecutive blocks of a row (a "tile", 8 x block bytes, a multiple of
// 16) is stored as the 8 blocks' headers (scale fields) followed by their 8 bodies (quants):
//
//   GGUF:  [h0 b0][h1 b1] ... [h7 b7]      tiled:  [h0 h1 ... h7][b0 b1 ... b7]
//
// Same bytes per row (the tensor's size and dtype are unchanged), each block's body 16-byte
// aligned, block b still addressable from (row, b) alone. Applies when cols % (8 x block
// elements) == 0, so rows stay 16-byte aligned too; other tensors keep the GGUF layout.
// Header of Q4_0 / Q8_0: d; Q4_1: d, m (bytes [0, hdr) of the block). Q6_K's scales and d
// are at its end: header = bytes [192, 210), body = ql, qh = bytes [0, 192).
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
#include "quant/blocks.h"

namespace bl::cuda {

constexpr int kTileBlocks = 8;  // blocks per tile

template <DType T>
struct TileSplit {
  static constexpr bool kTileable = false;
};
template <>
struct TileSplit<DType::Q4_0> {
  static constexpr bool kTileable = true;
  static constexpr size_t kBlockBytes = sizeof(BlockQ4_0), kHdrOffset = 0, kHdrBytes = 2;
};
template <>
struct TileSplit<DType::Q4_1> {
  static constexpr bool kTileable = true;
  static constexpr size_t kBlockBytes = sizeof(BlockQ4_1), kHdrOffset = 0, kHdrBytes = 4;
};
template <>
struct TileSplit<DType::Q8_0> {
  static constexpr bool kTileable = true;
  static constexpr size_t kBlockBytes = sizeof(BlockQ8_0), kHdrOffset = 0, kHdrBytes = 2;
};
template <>
struct TileSplit<DType::Q6_K> {
  static constexpr bool kTileable = true;
  static constexpr size_t kBlockBytes = sizeof(BlockQ6_K), kHdrOffset = offsetof(BlockQ6_K, scales),
                          kHdrBytes = 18;
};

template <DType T>
constexpr bool is_tileable() {
  return TileSplit<T>::kTileable;
}

// The header and body of block b of a row. In the GGUF layout they are the block's own bytes
// (body = the bytes after, or for Q6_K before, the header), so the decoders that take a
// BlockRef read GGUF rows exactly as before.
struct BlockRef {
  const uint8_t* hdr;
  const uint8_t* body;
};

template <DType T, bool kTiled>
__host__ __device__ __forceinline__ BlockRef block_ref(const uint8_t* row, int64_t b) {
  using S = TileSplit<T>;
  static_assert(S::kTileable);
  constexpr size_t kBodyBytes = S::kBlockBytes - S::kHdrBytes;
  static_assert((kTileBlocks * S::kHdrBytes) % 16 == 0 && kBodyBytes % 16 == 0,
                "tiled bodies must start 16-byte aligned");
  if constexpr (kTiled) {
    const uint8_t* tile = row + (b / kTileBlocks) * (kTileBlocks * S::kBlockBytes);
    const int j = static_cast<int>(b % kTileBlocks);
    return {tile + j * S::kHdrBytes, tile + kTileBlocks * S::kHdrBytes + j * kBodyBytes};
  } else {
    const uint8_t* blk = row + b * S::kBlockBytes;
    return {blk + S::kHdrOffset, blk + (S::kHdrOffset == 0 ? S::kHdrBytes : 0)};
  }
}

}  // namespace bl::cuda
