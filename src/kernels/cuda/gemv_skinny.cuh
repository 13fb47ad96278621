// Skinny GEMM for batched decode: out[rows, n] (+)= W x for n = 4..16 tokens (bl: 5..16), on tensor cores
// (mma.sync m16n8k16, fp16 operands, fp32 accumulation). Each weight is read from HBM and
// decoded once for all tokens. The kernel is shared by two weight readers: the block formats'
// pieces (gemv_skinny.cu) and bl<b>g<g> tiles (gemv_skinny_bl.cu).
//
// Why not gemv_tensor_core.cu (16 rows a block, 8 warps splitting K): every block read all of
// x (fp32, 16 tokens x cols x 4 B = 256 KB at 4096 columns) for 36 KB of Q4_0 weights, so the
// L2 -> SM traffic for x was ~7x the weight bytes and q4_0 ran at 22 % of HBM at 16 tokens.
// Here a block owns 128 rows (8 warps x 16) and a K range: it stages its slice of x once, as
// fp16, in shared memory ([tokens][512 columns] a round), and all 8 warps read it from there,
// so x costs ~0.9x the 4-bit weight bytes from L2 and ~1.8x from shared memory. Rows alone give
// too few blocks (4096 rows: 32), so K is split across blocks (grid.y) until ~2 blocks per SM
// run (one wave); the splits add their sums into out with atomics (out zeroed first unless
// accumulating). Float atomics make the summation order vary from run to run (~1 ulp of the sum).
//
// A warp's 16 rows are one mma M. Per 32 columns ("a step") lane (g = lane / 4, c = lane % 4)
// gives the A fragments of two mma (mma.cuh's layout): 8 weights of each of its two rows, 4
// for x columns o0..o0+3 (k-slots {2c, 2c+1, 2c+8, 2c+9} of the first mma) and 4 for o1..o1+3
// (the second). Which rows and columns those are is the reader's choice; the lane reads the
// same 4 columns of token t * 8 + g from shared memory as B (one 8-byte load per mma). Rounds
// of whole 256-column units hold every column the steps need. x is staged with each quad's
// columns in the order 0, 2, 1, 3, so the k-slot pair {2c, 2c + 1} is columns o0 and o0 + 2 and
// {2c + 8, 2c + 9} o0 + 1 and o0 + 3: the pairs a 4-bit decode makes with one mask of a word
// (bytes 0 and 2, bytes 1 and 3), as Marlin's fp16 decode pairs them.
//
// Napkin math (H100, 8B shapes, 16 tokens): 4096 x 4096 Q4_0 is 9.4 MB (3.1 us at 3 TB/s) and
// 0.54 GFLOP (~1 us of dense fp16 mma at the m16n8k16 issue rate): bytes bound if enough loads
// are in flight: ~2 blocks of 8 warps per SM, each lane with a round's (512 columns) weight
// loads issued at once. Measured (Nsight Compute, docs/cuda.md "Twenty-ninth session"): it
// reads at ~24-27 % of the HBM peak, instruction-bound (~140 warp instructions a step of 16 Q4_0
// rows, schedulers issuing in 58 % of the cycles, memory waits ~20 % of a warp's cycles).
//
// A reader R provides:
//   __device__ R(const SkinnyArgs& p, int64_t row0, int g, int c);  // the warp's rows from row0
//   template <int kSteps> __device__ void load(int64_t k0);         // issue a round's loads
//   __device__ void fragments(int i, uint32_t a_lo[4], uint32_t a_hi[4], int& l0, int& l1) const;
//       // step i's A fragments and o0 - k0, o1 - k0
//   static constexpr int row_of(int g, int e);  // the row (0..15 of the warp's) of acc element e
//   static constexpr int kMaxSteps;             // steps a round may hold in registers
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/mma.cuh"

namespace bl::cuda::skinny {

constexpr int kWarp = 32;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarp;
constexpr int kWarpRows = 16;                   // one mma M
constexpr int kBlockRows = kWarps * kWarpRows;  // 128
constexpr int kTileTokens = 8;                  // one mma N
constexpr int kUnitCols = 256;                  // K granularity: a Q4_K / Q6_K super-block
constexpr int kRoundCols = 2 * kUnitCols;       // x columns staged per round
constexpr int kStepCols = 32;
// Row pitch of the staged x in halves: 512 + 16 shifts each token row by 8 banks, so the 8
// tokens x 4 lanes of a B load hit different banks in each half-warp (Q4_0's piece layout).
constexpr int kXPitch = kRoundCols + 16;

struct SkinnyArgs {
  const uint8_t* w;
  size_t row_bytes = 0;  // the block formats' rows (bl: unused)
  int64_t rows, cols;
  int group = 0;   // bl<b>g<g>: g (the block formats: unused)
  const float* x;  // [cols, n], 16-byte aligned, cols % 256 == 0
  int n;
  float* out;  // [rows, n]
  const float* bias;
  bool accumulate;     // out += W x (else out = W x; zeroed before the launch when split)
  bool split = false;  // several K splits (grid.y > 1): atomics; set by plan_grid
};

// Block y's K range [k_begin, k_end): the cols / 256 units shared out as evenly as whole units go.
__device__ __forceinline__ void split_range(const SkinnyArgs& p, int64_t& k_begin, int64_t& k_end) {
  const int64_t units = p.cols / kUnitCols;
  k_begin = blockIdx.y * units / gridDim.y * kUnitCols;
  k_end = (blockIdx.y + 1) * units / gridDim.y * kUnitCols;
}

// kSteps steps of 32 columns from column k0 (x staged in xs from k0), in parts of at most
// R::kMaxSteps whose loads are all issued before the first decode needs one (a 512-column
// round was 4 serial memory round trips when its loop was `unroll 4`).
template <class R, int kTiles, int kSteps>
__device__ __forceinline__ void warp_round(R& reader, int64_t k0, int g, const __half (*xs)[kXPitch],
                                           float acc[kTiles][4]) {
  constexpr int kPart = kSteps < R::kMaxSteps ? kSteps : R::kMaxSteps;
#pragma unroll
  for (int part = 0; part < kSteps; part += kPart) {
    reader.template load<kPart>(k0 + part * kStepCols);
#pragma unroll
    for (int i = 0; i < kPart; ++i) {
      uint32_t a_lo[4], a_hi[4];
      int l0, l1;
      reader.fragments(i, a_lo, a_hi, l0, l1);
      l0 += part * kStepCols, l1 += part * kStepCols;
#pragma unroll
      for (int t = 0; t < kTiles; ++t) {
        const __half* xt = xs[t * kTileTokens + g];
        const uint2 b_lo = *reinterpret_cast<const uint2*>(xt + l0);
        const uint2 b_hi = *reinterpret_cast<const uint2*>(xt + l1);
        mma_16816(acc[t], a_lo, b_lo.x, b_lo.y);
        mma_16816(acc[t], a_hi, b_hi.x, b_hi.y);
      }
    }
  }
}

// kTiles: token tiles of 8 (1 for n <= 8, 2 for n <= 16). Two blocks per SM (<= 128 registers
// a thread): the grid is sized for about that many.
template <class R, int kTiles>
__global__ void __launch_bounds__(kThreads, 2) gemv_skinny_kernel(SkinnyArgs p) {
  constexpr int kTokens = kTiles * kTileTokens;
  __shared__ __align__(16) __half xs[kTokens][kXPitch];

  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int g = lane / 4, c = lane % 4;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBlockRows + warp * kWarpRows;
  R reader(p, row0, g, c);
  int64_t k_begin, k_end;
  split_range(p, k_begin, k_end);

  float acc[kTiles][4];
#pragma unroll
  for (int t = 0; t < kTiles; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;

  for (int64_t k0 = k_begin; k0 < k_end; k0 += kRoundCols) {
    const int round_cols = static_cast<int>(min(static_cast<int64_t>(kRoundCols), k_end - k0));  // 256 or 512
    // Stage x[k0 .. k0 + round_cols) of every token as fp16 (tokens past n as zeros): a fixed
    // number of float4 loads a thread, all issued together.
    constexpr int kQuads = kRoundCols / 4;
    __syncthreads();  // the previous round's readers are done
#pragma unroll
    for (int j = 0; j < kTokens * kQuads / kThreads; ++j) {
      const int i = threadIdx.x + j * kThreads, t = i / kQuads, q4 = i % kQuads;
      float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (t < p.n && 4 * q4 < round_cols)
        v = __ldg(reinterpret_cast<const float4*>(p.x + t * p.cols + k0) + q4);
      uint2 h;
      h.x = pack_half2(v.x, v.z);  // each quad's columns in the order 0, 2, 1, 3 (kQuadOrder)
      h.y = pack_half2(v.y, v.w);
      *reinterpret_cast<uint2*>(&xs[t][4 * q4]) = h;
    }
    __syncthreads();
    if (round_cols == kRoundCols)
      warp_round<R, kTiles, kRoundCols / kStepCols>(reader, k0, g, xs, acc);
    else
      warp_round<R, kTiles, kUnitCols / kStepCols>(reader, k0, g, xs, acc);
  }

  // acc[t]: {row(g, 0), token 2c}, {row(g, 1), token 2c + 1}, {row(g, 2), token 2c},
  // {row(g, 3), token 2c + 1} of token tile t.
  const bool add_bias = p.bias && blockIdx.y == 0;
#pragma unroll
  for (int t = 0; t < kTiles; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = row0 + R::row_of(g, e);
      const int token = t * kTileTokens + 2 * c + (e & 1);
      if (row >= p.rows || token >= p.n) continue;
      const float v = acc[t][e] + (add_bias ? p.bias[row] : 0.0f);
      float* o = p.out + static_cast<int64_t>(token) * p.rows + row;
      if (p.split)
        atomicAdd(o, v);
      else
        *o = p.accumulate ? *o + v : v;
    }
}

inline int multiprocessors() {
  static const int n = [] {
    int device = 0, count = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device);
    return std::max(count, 1);
  }();
  return n;
}

// The grid for p.rows x p.cols: 128-row blocks times as many K splits as fit one wave of 2
// blocks an SM (at least one 256-column unit each); sets p.split and zeroes out when split and
// not accumulating. (Splits of ceil(units / ceil(2 SMs / row blocks)) units, as before, spilled
// a few blocks into a second wave at the 8B q/k/v and gate/up shapes: 288 and 336 blocks for 264
// places; one wave is 2-4 % faster at 16 tokens, docs/cuda.md "Twenty-ninth session".)
inline dim3 plan_grid(SkinnyArgs& p, cudaStream_t stream) {
  const int64_t row_blocks = (p.rows + kBlockRows - 1) / kBlockRows;
  const int64_t splits = std::clamp<int64_t>(2 * multiprocessors() / row_blocks, 1, p.cols / kUnitCols);
  p.split = splits > 1;
  if (p.split && !p.accumulate)
    cudaMemsetAsync(p.out, 0, static_cast<size_t>(p.rows) * p.n * sizeof(float), stream);
  return dim3(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits));
}

template <class R>
void launch_reader(const SkinnyArgs& p, dim3 grid, cudaStream_t stream) {
  if (p.n <= kTileTokens)
    gemv_skinny_kernel<R, 1><<<grid, kThreads, 0, stream>>>(p);
  else
    gemv_skinny_kernel<R, 2><<<grid, kThreads, 0, stream>>>(p);
}

}  // namespace bl::cuda::skinny
