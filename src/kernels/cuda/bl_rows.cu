// Whole-row decoding of bl<b>g<g> weights as stored (bl_tiles.cuh): the fp16 operand of the
// cuBLAS prefill GEMM and get_rows (a bl token-embedding table). One thread per (row, chunk of
// 16 columns); each code is gathered from its b nibbles (bltile::code_at). These passes run
// once per prefill matmul, not per token, so they are written for clarity, not speed.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/bl_tiles.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/weight_decode.cuh"
#include "quant/bl_group.h"

namespace bl::cuda {
namespace {

using namespace bltile;

constexpr int kThreads = 256;
constexpr int kChunkCols = 16;

struct BlMatrix {
  const uint8_t* w;
  int64_t rows, cols;
  int bits, group;
};

// v[16] = columns 16c .. 16c + 15 of row `row`.
__device__ void decode_chunk16(const BlMatrix& m, int64_t row, int64_t c, float (&v)[kChunkCols]) {
  const int64_t tg_bytes = tile_group_bytes(m.bits, m.group), groups = m.cols / m.group;
  const int64_t col0 = c * kChunkCols, grp = col0 / m.group;
  const uint8_t* tg = m.w + (row / kTileRows) * groups * tg_bytes + grp * tg_bytes;
  const int r = static_cast<int>(row % kTileRows);
  const float s = __half2float(*reinterpret_cast<const __half*>(tg + 2 * r));
  const float z = __half2float(*reinterpret_cast<const __half*>(tg + 32 + 2 * r));
  const int in_group = static_cast<int>(col0 % m.group);
#pragma unroll
  for (int k = 0; k < kChunkCols; ++k) v[k] = s * (static_cast<float>(code_at(tg, m.bits, r, in_group + k)) - z);
}

// dst row-major [rows, cols] fp16 (bf16) bits.
template <bool kBf16>
__global__ void dequantize_bl_kernel(BlMatrix m, uint16_t* dst) {
  const int64_t chunks = m.cols / kChunkCols;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= chunks * m.rows) return;
  const int64_t row = i / chunks, c = i % chunks;
  float v[kChunkCols];
  decode_chunk16(m, row, c, v);
  uint32_t h[kChunkCols / 2];
#pragma unroll
  for (int k = 0; k < kChunkCols / 2; ++k)
    h[k] = to_half_bits<kBf16>(v[2 * k]) | (static_cast<uint32_t>(to_half_bits<kBf16>(v[2 * k + 1])) << 16);
  uint4* out = reinterpret_cast<uint4*>(dst + row * m.cols + c * kChunkCols);
  out[0] = make_uint4(h[0], h[1], h[2], h[3]);
  out[1] = make_uint4(h[4], h[5], h[6], h[7]);
}

// Grid x over chunks of a row, y over tokens; ids outside [0, rows) give zeros.
__global__ void get_rows_bl_kernel(BlMatrix m, const int32_t* ids, float* out) {
  pdl_start();
  const int64_t t = blockIdx.y, c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= m.cols / kChunkCols) return;
  const int64_t id = ids[t];
  const bool valid = id >= 0 && id < m.rows;
  float v[kChunkCols];
  if (valid) decode_chunk16(m, id, c, v);
  float* dst = out + t * m.cols + c * kChunkCols;
#pragma unroll
  for (int k = 0; k < kChunkCols; ++k) dst[k] = valid ? v[k] : 0.0f;
}

bool as_bl(const WeightView& w, BlMatrix& m) {
  const auto shape = quant::bl_group_shape(w.dtype);
  if (!shape || w.rows % kTileRows != 0 || w.cols % shape->group_size != 0) return false;
  m = {static_cast<const uint8_t*>(w.data), w.rows, w.cols, shape->bits, shape->group_size};
  return true;
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

bool launch_dequantize_bl(const WeightView& w, uint16_t* dst, bool to_bf16, cudaStream_t stream) {
  BlMatrix m;
  if (!as_bl(w, m)) return false;
  const int64_t work = m.rows * (m.cols / kChunkCols);
  if (work == 0) return true;
  if (to_bf16) dequantize_bl_kernel<true><<<blocks_for(work), kThreads, 0, stream>>>(m, dst);
  else dequantize_bl_kernel<false><<<blocks_for(work), kThreads, 0, stream>>>(m, dst);
  return true;
}

bool launch_get_rows_bl(const WeightView& table, const int32_t* ids, int64_t n_tokens, float* out, cudaStream_t stream) {
  BlMatrix m;
  if (!as_bl(table, m)) return false;
  if (n_tokens <= 0 || m.cols == 0) return true;
  const dim3 grid(blocks_for(m.cols / kChunkCols), static_cast<unsigned>(n_tokens));
  launch_pdl(get_rows_bl_kernel, grid, dim3(kThreads), 0, stream, m, ids, out);
  return true;
}

}  // namespace bl::cuda
