// Whole-row decoding of bl<b>g<g> weights in their device layout (bl_tiles.cuh): the fp16 operand of the
// cuBLAS prefill GEMM and get_rows (a bl token-embedding table).
//
// The prefill operand (dequantize_bl_kernel) is written once per matrix and prompt chunk, all
// of the model's weights in fp16 (8B: ~16 GB a pass): one thread per (16-row tile, 32-column
// block, a) loads rows 4a .. 4a + 3 of the block's b code lines (one 16-byte load each, as the
// GEMV), takes the codes out of them with the GEMV's own fields (bltile::codes_line_dword)
// and writes 4 rows x 32 values as 16-byte stores. (It was one thread per 16 values gathering
// each code bit by bit, bltile::code_at: 8B bl4g128 pp2048 at 32 % of the bf16 peak against 69 %
// for q4_0, docs/cuda.md "Nineteenth session".) get_rows still decodes bit by bit (one row a token).
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

__device__ __forceinline__ uint32_t word_of(const uint4& v, int r) { return r == 0 ? v.x : r == 1 ? v.y : r == 2 ? v.z : v.w; }

// dst row-major [rows, cols] fp16 (bf16) bits. One thread per (tile, 32-column block, a), a the
// fastest: the 4 threads of a block read its lines' 64 bytes side by side.
template <int kBits, bool kBf16>
__global__ void __launch_bounds__(kThreads) dequantize_bl_kernel(BlMatrix m, uint16_t* dst) {
  const int64_t xblocks = m.cols / 32, i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i >= m.rows / kTileRows * xblocks * 4) return;
  const int a = static_cast<int>(i % 4);
  const int64_t xb = i / 4 % xblocks, tile = i / 4 / xblocks;
  const int64_t group_xblocks = m.group / 32, tg_bytes = tile_group_bytes(kBits, m.group);
  const uint8_t* tg = m.w + (tile * (m.cols / m.group) + xb / group_xblocks) * tg_bytes;
  const uint8_t* lines = tg + kHeaderBytes + kLineBytes * kBits * (xb % group_xblocks) + 16 * a;
  uint4 v[kBits];
#pragma unroll
  for (int u = 0; u < kBits; ++u) v[u] = __ldcs(reinterpret_cast<const uint4*>(lines + kLineBytes * u));
  const uint2 s4 = *reinterpret_cast<const uint2*>(tg + 8 * a), z4 = *reinterpret_cast<const uint2*>(tg + 32 + 8 * a);
#pragma unroll
  for (int r = 0; r < 4; ++r) {
    uint32_t dwords[kBits], codes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
#pragma unroll
    for (int u = 0; u < kBits; ++u) dwords[u] = word_of(v[u], r);
    codes_of_lines<kBits>(dwords, codes);
    const uint32_t s_bits = (r < 2 ? s4.x : s4.y) >> (16 * (r % 2)), z_bits = (r < 2 ? z4.x : z4.y) >> (16 * (r % 2));
    const float s = __half2float(__ushort_as_half(static_cast<unsigned short>(s_bits & 0xFFFF)));
    const float z = __half2float(__ushort_as_half(static_cast<unsigned short>(z_bits & 0xFFFF)));
    uint32_t h[16];  // columns 2j, 2j + 1 of the block; codes[w] byte m = column 4w + m
#pragma unroll
    for (int j = 0; j < 16; ++j) {
      const uint32_t c0 = (codes[j / 2] >> (16 * (j % 2))) & 0xFF, c1 = (codes[j / 2] >> (16 * (j % 2) + 8)) & 0xFF;
      h[j] = to_half_bits<kBf16>(s * (static_cast<float>(c0) - z)) |
             (static_cast<uint32_t>(to_half_bits<kBf16>(s * (static_cast<float>(c1) - z))) << 16);
    }
    uint4* out = reinterpret_cast<uint4*>(dst + (tile * kTileRows + 4 * a + r) * m.cols + xb * 32);
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = make_uint4(h[4 * k], h[4 * k + 1], h[4 * k + 2], h[4 * k + 3]);
  }
}

template <bool kBf16>
void launch_dequantize_bits(const BlMatrix& m, uint16_t* dst, unsigned blocks, cudaStream_t stream) {
  switch (m.bits) {
    case 1: dequantize_bl_kernel<1, kBf16><<<blocks, kThreads, 0, stream>>>(m, dst); break;
    case 2: dequantize_bl_kernel<2, kBf16><<<blocks, kThreads, 0, stream>>>(m, dst); break;
    case 3: dequantize_bl_kernel<3, kBf16><<<blocks, kThreads, 0, stream>>>(m, dst); break;
    case 4: dequantize_bl_kernel<4, kBf16><<<blocks, kThreads, 0, stream>>>(m, dst); break;
    case 5: dequantize_bl_kernel<5, kBf16><<<blocks, kThreads, 0, stream>>>(m, dst); break;
    case 6: dequantize_bl_kernel<6, kBf16><<<blocks, kThreads, 0, stream>>>(m, dst); break;
    case 7: dequantize_bl_kernel<7, kBf16><<<blocks, kThreads, 0, stream>>>(m, dst); break;
    default: dequantize_bl_kernel<8, kBf16><<<blocks, kThreads, 0, stream>>>(m, dst); break;
  }
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
  const int64_t work = m.rows / kTileRows * (m.cols / 32) * 4;  // threads
  if (work == 0) return true;
  if (to_bf16) launch_dequantize_bits<true>(m, dst, blocks_for(work), stream);
  else launch_dequantize_bits<false>(m, dst, blocks_for(work), stream);
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
