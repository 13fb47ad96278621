// bl_device_layout.h: one thread per dword of a bl matrix; the dwords of a tile group's header
// stay as they are, those of its code lines are bit-transposed.
#include "kernels/cuda/bl_device_layout.h"

#include <cstdint>
#include <cstring>

#include "kernels/cuda/bl_tiles.cuh"
#include "quant/bl_group.h"

namespace bl::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kHeaderDwords = bltile::kHeaderBytes / 4;

__host__ __device__ inline uint32_t device_dword(uint32_t v, size_t i, size_t group_dwords) {
  return i % group_dwords < kHeaderDwords ? v : bltile::transpose_nibbles(v);
}

__global__ void swap_bl_layout_kernel(uint32_t* w, size_t dwords, size_t group_dwords) {
  const size_t i = static_cast<size_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < dwords) w[i] = device_dword(w[i], i, group_dwords);
}

}  // namespace

size_t bl_tile_group_bytes(DType t) {
  const auto shape = quant::bl_group_shape(t);
  return shape ? static_cast<size_t>(shape->tile_group_bytes()) : 0;
}

bool launch_swap_bl_layout(DType t, void* data, size_t bytes, cudaStream_t stream) {
  const size_t group = bl_tile_group_bytes(t);
  if (group == 0 || bytes % group != 0) return false;
  const size_t dwords = bytes / 4;
  if (dwords == 0) return true;
  const unsigned grid = static_cast<unsigned>((dwords + kThreads - 1) / kThreads);
  swap_bl_layout_kernel<<<grid, kThreads, 0, stream>>>(static_cast<uint32_t*>(data), dwords, group / 4);
  return true;
}

bool swap_bl_layout_on_host(DType t, void* data, size_t bytes) {
  const size_t group = bl_tile_group_bytes(t);
  if (group == 0 || bytes % group != 0) return false;
  auto* w = static_cast<uint8_t*>(data);
  for (size_t i = 0; i < bytes / 4; ++i) {
    uint32_t v;
    std::memcpy(&v, w + 4 * i, 4);
    v = device_dword(v, i, group / 4);
    std::memcpy(w + 4 * i, &v, 4);
  }
  return true;
}

}  // namespace bl::cuda
