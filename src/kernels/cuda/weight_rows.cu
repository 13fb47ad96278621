// Whole-row weight decoding: get_rows (token embeddings) and dequantize-to-fp16/bf16 (the
// operand of the cuBLAS prefill GEMM). Both decode 32-element chunks (weight_decode.cuh), one
// chunk per thread; plain types with cols % 32 != 0 finish the row element by element.
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/weight_decode.cuh"
#include "quant/bl_group.h"

namespace bl::cuda {
namespace {

constexpr int kThreads = 256;

// Grid: x over chunks (+ tail elements) of a row, y over tokens. ids outside [0, rows) write 0.
// A warp's 32 chunks (4 KB of the row in one piece) go out through shared memory, each store
// instruction of the warp covering 512 contiguous bytes. (A thread storing its own 128 bytes
// made every store instruction touch 32 lines: a 2048-token prompt of the 8B shape took 158 us
// for ~50 MB on an H100.)
template <DType T, bool kTiled>
__global__ void __launch_bounds__(kThreads) get_rows_kernel(const uint8_t* table, size_t row_bytes, int64_t cols,
                                                             int64_t rows, const int32_t* ids, float* out) {
  pdl_start_next_early();  // the first GEMV (or quantize) may launch
  constexpr int kWarp = 32, kParts = kChunk / 4;  // a chunk is 8 parts of 4 floats
  // Row stride kWarp + 1 parts: the 8 lanes that read one chunk's 8 parts hit 8 bank groups.
  __shared__ float4 stage[kThreads / kWarp][kParts][kWarp + 1];
  const int64_t t = blockIdx.y;
  const int64_t id = ids[t];
  float* dst = out + t * cols;
  const int64_t n_chunks = cols / kChunk;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const bool valid = id >= 0 && id < rows;
  const uint8_t* row = table + (valid ? id : 0) * row_bytes;
  if (i < n_chunks) {
    float w[kChunk];
    decode_chunk<T, false, kTiled>(row, i, w);
#pragma unroll
    for (int q = 0; q < kParts; ++q)
      stage[warp][q][lane] = valid ? make_float4(w[4 * q], w[4 * q + 1], w[4 * q + 2], w[4 * q + 3])
                                   : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  }
  __syncwarp();
  const int64_t first = i - lane;  // the warp's first chunk
  const bool aligned = cols % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
#pragma unroll
  for (int q = 0; q < kParts; ++q) {
    const int idx = q * kWarp + lane, c = idx / kParts, part = idx % kParts;
    if (first + c >= n_chunks) continue;
    const float4 v = stage[warp][part][c];
    float* at = dst + (first + c) * kChunk + 4 * part;
    if (aligned) {
      *reinterpret_cast<float4*>(at) = v;
    } else {
      at[0] = v.x, at[1] = v.y, at[2] = v.z, at[3] = v.w;
    }
  }
  if constexpr (is_plain_type<T>()) {
    const int64_t e = n_chunks * kChunk + i;
    if (i < kChunk && e < cols) dst[e] = valid ? Decoder<T>::element(row, e) : 0.0f;
  }
}

// Thread per chunk over the whole matrix; dst row-major [rows, cols]. Block formats only
// (cols % 32 == 0), so chunk i lands at dst + 32 i and a warp's 32 chunks are 2 KB of dst in
// one piece: they go out through shared memory, each store instruction of the warp covering
// 512 contiguous bytes. (A thread storing its own 64 bytes made every store instruction touch
// 32 sectors half each: 90 us for a 4096 x 14336 Q4_0 weight on an H100, 1.7 TB/s moved.)
template <DType T, bool kBf16, bool kTiled>
__global__ void __launch_bounds__(kThreads) dequantize_kernel(const uint8_t* w, size_t row_bytes, int64_t cols,
                                                               int64_t rows, uint16_t* dst) {
  constexpr int kWarp = 32, kParts = kChunk / 8;  // a chunk is 4 parts of 16 bytes
  // Row stride 34 parts: when 8 lanes read (chunk c0 + {0, 1}, part 0..3) they hit 16-byte
  // bank groups (c + 2 part) mod 8, all different.
  constexpr int kStride = kWarp + 2;
  __shared__ uint4 stage[kThreads / kWarp][kParts][kStride];
  const int64_t chunks_per_row = cols / kChunk, n_chunks = chunks_per_row * rows;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  if (i < n_chunks) {
    const int64_t r = i / chunks_per_row, c = i % chunks_per_row;
    float v[kChunk];
    decode_chunk<T, false, kTiled>(w + r * row_bytes, c, v);
#pragma unroll
    for (int q = 0; q < kParts; ++q) {
      uint32_t h[4];
#pragma unroll
      for (int k = 0; k < 4; ++k)
        h[k] = to_half_bits<kBf16>(v[8 * q + 2 * k]) | (static_cast<uint32_t>(to_half_bits<kBf16>(v[8 * q + 2 * k + 1])) << 16);
      stage[warp][q][lane] = make_uint4(h[0], h[1], h[2], h[3]);
    }
  }
  __syncwarp();
  const int64_t first = i - lane;  // the warp's first chunk
#pragma unroll
  for (int q = 0; q < kParts; ++q) {
    const int idx = q * kWarp + lane, c = idx / kParts, part = idx % kParts;
    if (first + c < n_chunks) reinterpret_cast<uint4*>(dst + (first + c) * kChunk)[part] = stage[warp][part][c];
  }
}

__global__ void add_bias_kernel(float* out, const float* bias, int64_t rows, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < rows * n) out[i] += bias[i % rows];
}

unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

}  // namespace

bool launch_get_rows(const WeightView& table, const int32_t* ids, int64_t n_tokens, float* out, cudaStream_t stream) {
  if (quant::is_bl_group(table.dtype)) return launch_get_rows_bl(table, ids, n_tokens, out, stream);
  if (n_tokens <= 0) return true;
  const int64_t work = std::max<int64_t>(table.cols / kChunk, kChunk);  // chunks, or tail lanes
  const dim3 grid(blocks_for(work), static_cast<unsigned>(n_tokens));
  return dispatch_weight_format(table.dtype, [&]<DType T>() {
    const auto* src = static_cast<const uint8_t*>(table.data);
    if constexpr (is_tileable<T>()) {
      if (table.tiled) {
        launch_pdl(get_rows_kernel<T, true>, grid, dim3(kThreads), 0, stream, src, table.row_bytes, table.cols, table.rows,
                   ids, out);
        return;
      }
    }
    launch_pdl(get_rows_kernel<T, false>, grid, dim3(kThreads), 0, stream, src, table.row_bytes, table.cols, table.rows,
               ids, out);
  });
}

bool launch_dequantize(const WeightView& w, uint16_t* dst, bool to_bf16, cudaStream_t stream) {
  if (quant::is_bl_group(w.dtype)) return launch_dequantize_bl(w, dst, to_bf16, stream);
  if (w.cols % kChunk != 0) return false;
  const unsigned grid = blocks_for(w.cols / kChunk * w.rows);
  return dispatch_weight_format(w.dtype, [&]<DType T>() {
    const auto* src = static_cast<const uint8_t*>(w.data);
    if constexpr (is_tileable<T>()) {
      if (w.tiled) {
        if (to_bf16) dequantize_kernel<T, true, true><<<grid, kThreads, 0, stream>>>(src, w.row_bytes, w.cols, w.rows, dst);
        else dequantize_kernel<T, false, true><<<grid, kThreads, 0, stream>>>(src, w.row_bytes, w.cols, w.rows, dst);
        return;
      }
    }
    if (to_bf16) dequantize_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(src, w.row_bytes, w.cols, w.rows, dst);
    else dequantize_kernel<T, false, false><<<grid, kThreads, 0, stream>>>(src, w.row_bytes, w.cols, w.rows, dst);
  });
}

void launch_add_bias(float* out, const float* bias, int64_t rows, int64_t n_tokens, cudaStream_t stream) {
  if (rows * n_tokens <= 0) return;
  add_bias_kernel<<<blocks_for(rows * n_tokens), kThreads, 0, stream>>>(out, bias, rows, n_tokens);
}

}  // namespace bl::cuda
