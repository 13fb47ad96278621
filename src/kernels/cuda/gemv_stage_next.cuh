// The epilogue of an integer GEMV that stages the next GEMV's x (StageNext, launchers.h): the
// blocks run in clusters of two, each block's warps own 16 consecutive rows (one row group
// each, in one round), so a pair owns 32 = one int8 block of the next x. Each warp's lane 0
// puts its finished rows (out after the residual add) into the first block's shared memory;
// after one cluster barrier warp 0 of that block quantizes norm * out for the 32 rows as
// quantize_x_once_kernel does (same amax, rounding and NaN poison, so the same bytes) and
// writes the pair's sum of out^2. The chain added to the GEMV's tail is one cluster barrier
// and one warp's shuffles; the quantize kernel it replaces cost a kernel boundary and an L2
// round trip of x (docs/cuda.md "Twenty-second session").
//
// Layout of next.dst (StagedX): int8 [rows], XScale [rows / 32], float [rows / 32].
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/gemv_int8_x.cuh"
#include "kernels/cuda/launchers.h"

namespace bl::cuda::int8x {

constexpr int kStageNextPair = 2;          // blocks a cluster
constexpr int kStageNextRows = kXBlock;    // rows a pair owns

__host__ __device__ constexpr int64_t stage_next_partials(int64_t rows) { return rows / kStageNextRows; }
__host__ __device__ constexpr int64_t stage_next_bytes_of(int64_t rows) {
  return quantized_x_bytes(rows) + stage_next_partials(rows) * static_cast<int64_t>(sizeof(float));
}

// Where the lane 0 that finished `row` puts it: the pair's first block's rows [32] in shared
// memory (pair_rows is this block's own array; the first block's is mapped through the cluster).
struct PairRows {
  float* first;       // pair_rows of the cluster's block 0
  int64_t first_row;  // the pair's first row
};

__device__ __forceinline__ PairRows pair_rows_of(float* pair_rows, int64_t first_row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  return {cooperative_groups::this_cluster().map_shared_rank(pair_rows, 0), first_row};
#else
  return {pair_rows, first_row};  // not launched below sm_90 (gemv_stages_next_applies)
#endif
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ int warp_sum_int(int v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// By every thread of both blocks, once all their rows are in: the cluster barrier, then warp 0
// of block 0 quantizes. rows = the GEMV's rows (the next x's length).
__device__ __forceinline__ void stage_next_epilogue(const StageNext& next, const PairRows& pr, const float* pair_rows,
                                                    int64_t rows) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
  cluster.sync();  // release / acquire: block 1's stores into block 0's pair_rows are visible
  if (cluster.block_rank() != 0 || threadIdx.x >= kWarp) return;
  const int lane = static_cast<int>(threadIdx.x);
  const int64_t row = pr.first_row + lane;
  const float h = pair_rows[lane];
  const float v = h * __ldg(next.norm + row);
  // quantize_group's arithmetic over one warp instead of four threads of eight values.
  const float amax = warp_max(fabsf(v));
  const float poison = warp_sum(v * 0.0f);  // NaN if any value is NaN or inf
  const float inv = int8_inverse_step(amax);
  const int q = __float2int_rn(v * inv);
  const int sum = warp_sum_int(q);
  const float sq = warp_sum(h * h);
  int8_t* xq = reinterpret_cast<int8_t*>(next.dst);
  XScale* xs = reinterpret_cast<XScale*>(next.dst + rows);
  float* partials = reinterpret_cast<float*>(next.dst + quantized_x_bytes(rows));
  xq[row] = static_cast<int8_t>(q);
  if (lane == 0) {
    xs[row / kXBlock] = x_scale_of(amax, poison, sum);
    partials[row / kStageNextRows] = sq;
  }
#endif
}

}  // namespace bl::cuda::int8x
