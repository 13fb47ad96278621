// Conversion between the GGUF layout and the tiled layout of weight_layout.cuh: on the device
// at upload (one thread per block, bytes copied as they are), and back on the host for read().
// Both are the same permutation of a row's bytes, written once as `block_parts`.
#include <cuda_runtime.h>

#include <cstring>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/weight_layout.cuh"

namespace bl::cuda {
namespace {

constexpr int kThreads = 256;

// Where block b's header and body go in a tiled row, and where they come from in a GGUF row.
struct BlockParts {
  size_t gguf_hdr, gguf_body, tiled_hdr, tiled_body, hdr_bytes, body_bytes;
};

template <DType T>
__host__ __device__ BlockParts block_parts(int64_t b) {
  using S = TileSplit<T>;
  const size_t body = S::kBlockBytes - S::kHdrBytes;
  const size_t gguf = static_cast<size_t>(b) * S::kBlockBytes;
  const size_t tile = static_cast<size_t>(b / kTileBlocks) * kTileBlocks * S::kBlockBytes;
  const size_t j = static_cast<size_t>(b % kTileBlocks);
  return {gguf + S::kHdrOffset,
          gguf + (S::kHdrOffset == 0 ? S::kHdrBytes : 0),
          tile + j * S::kHdrBytes,
          tile + kTileBlocks * S::kHdrBytes + j * body,
          S::kHdrBytes,
          body};
}

template <DType T>
__global__ void tile_kernel(const uint8_t* src, uint8_t* dst, int64_t rows, size_t row_bytes) {
  const int64_t blocks_per_row = static_cast<int64_t>(row_bytes / TileSplit<T>::kBlockBytes);
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= rows * blocks_per_row) return;
  const int64_t r = i / blocks_per_row;
  const BlockParts p = block_parts<T>(i % blocks_per_row);
  const uint8_t* s = src + r * row_bytes;
  uint8_t* d = dst + r * row_bytes;
  for (size_t k = 0; k < p.hdr_bytes; ++k) d[p.tiled_hdr + k] = s[p.gguf_hdr + k];
  for (size_t k = 0; k < p.body_bytes; ++k) d[p.tiled_body + k] = s[p.gguf_body + k];
}

template <typename F>
bool dispatch_tileable(DType t, F&& f) {
  switch (t) {
    case DType::Q4_0:
      f.template operator()<DType::Q4_0>();
      return true;
    case DType::Q4_1:
      f.template operator()<DType::Q4_1>();
      return true;
    case DType::Q8_0:
      f.template operator()<DType::Q8_0>();
      return true;
    case DType::Q6_K:
      f.template operator()<DType::Q6_K>();
      return true;
    default:
      return false;
  }
}

}  // namespace

bool weight_tileable(DType t, int64_t cols) {
  int64_t block_elems = 0;
  dispatch_tileable(t, [&]<DType T>() { block_elems = T == DType::Q6_K ? kQKK : kQK; });
  return block_elems > 0 && cols > 0 && cols % (kTileBlocks * block_elems) == 0;
}

bool launch_tile_weight(DType t, const void* src, void* dst, int64_t rows, size_t row_bytes,
                        cudaStream_t stream) {
  return dispatch_tileable(t, [&]<DType T>() {
    const int64_t blocks = rows * static_cast<int64_t>(row_bytes / TileSplit<T>::kBlockBytes);
    if (blocks == 0) return;
    const unsigned grid = static_cast<unsigned>((blocks + kThreads - 1) / kThreads);
    tile_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const uint8_t*>(src),
                                                  static_cast<uint8_t*>(dst), rows, row_bytes);
  });
}

bool untile_rows_on_host(DType t, const void* tiled, void* gguf, int64_t rows, size_t row_bytes) {
  return dispatch_tileable(t, [&]<DType T>() {
    const int64_t blocks_per_row = static_cast<int64_t>(row_bytes / TileSplit<T>::kBlockBytes);
    for (int64_t r = 0; r < rows; ++r) {
      const auto* s = static_cast<const uint8_t*>(tiled) + r * row_bytes;
      auto* d = static_cast<uint8_t*>(gguf) + r * row_bytes;
      for (int64_t b = 0; b < blocks_per_row; ++b) {
        const BlockParts p = block_parts<T>(b);
        std::memcpy(d + p.gguf_hdr, s + p.tiled_hdr, p.hdr_bytes);
        std::memcpy(d + p.gguf_body, s + p.tiled_body, p.body_bytes);
      }
    }
  });
}

}  // namespace bl::cuda
