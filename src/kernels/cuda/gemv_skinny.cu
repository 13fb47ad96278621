// Skinny GEMM for batched decode: out[rows, n] (+)= W x for n = 2..16 tokens and the block
// formats, on tensor cores (mma.sync m16n8k16, fp16 operands, fp32 accumulation). Each weight
// is read from HBM and dequantized once for all tokens.
//
// Why not gemv_tensor_core.cu (16 rows a block, 8 warps splitting K): every block read all of
// x (fp32, 16 tokens x cols x 4 B = 256 KB at 4096 columns) for 36 KB of Q4_0 weights, so the
// L2 -> SM traffic for x was ~7x the weight bytes and q4_0 ran at 22 % of HBM at 16 tokens.
// Here a block owns 128 rows (8 warps x 16) and a K range: it stages its slice of x once, as
// fp16, in shared memory ([tokens][512 columns] a round), and all 8 warps read it from there,
// so x costs ~0.9x the 4-bit weight bytes from L2 and ~1.8x from shared memory. Rows alone give
// too few blocks (4096 rows: 32), so K is split across blocks (grid.y) until ~2 blocks per SM
// run; the splits add their sums into out with atomics (out zeroed first unless accumulating).
// Float atomics make the summation order vary from run to run (~1 ulp of the sum).
//
// Warp layout as gemv_tensor_core.cu: lane (g = lane / 4, c = lane % 4) decodes piece 4s + c of
// rows g and g + 8 (gemv_pieces.cuh: 8 weights for x columns o0..o0+3 and o1..o1+3) into the A
// fragments of two mma (k-slots {2c, 2c+1, 2c+8, 2c+9} take the piece's 4 columns), and reads
// the same 4 columns of token t * 8 + g from shared memory as B (one 8-byte load per mma).
// Pieces 4s..4s+3 of a row lie in one 256-column (super-)block, so rounds of whole 256-column
// units hold every column their pieces need.
//
// Napkin math (H100, 8B shapes, 16 tokens): 4096 x 4096 Q4_0 is 9.4 MB (3.1 us at 3 TB/s) and
// 0.54 GFLOP (~1 us of dense fp16 mma at the m16n8k16 issue rate): bytes bound if enough loads
// are in flight: ~2 blocks of 8 warps per SM, each lane with 2 x 16 weight loads of a round
// (512 columns) issued at once.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/gemv_pieces.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/mma.cuh"
#include "kernels/cuda/weight_decode.cuh"  // dispatch_weight_format

namespace bl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarp;
constexpr int kWarpRows = 16;                   // one mma M
constexpr int kBlockRows = kWarps * kWarpRows;  // 128
constexpr int kTileTokens = 8;                  // one mma N
constexpr int kUnitCols = 256;                  // K granularity: a Q4_K / Q6_K super-block
constexpr int kRoundCols = 2 * kUnitCols;       // x columns staged per round
// Row pitch of the staged x in halves: 512 + 16 shifts each token row by 8 banks, so the 8
// tokens x 4 lanes of a B load hit different banks in each half-warp (Q4_0's piece layout).
constexpr int kXPitch = kRoundCols + 16;

struct SkinnyArgs {
  const uint8_t* w;
  size_t row_bytes;
  int64_t rows, cols;
  const float* x;  // [cols, n], 16-byte aligned, cols % 256 == 0
  int n;
  float* out;  // [rows, n]
  const float* bias;
  bool accumulate;     // out += W x (else out = W x; zeroed before the launch when split)
  int64_t split_cols;  // columns per K split, a multiple of kUnitCols
  bool split;          // several K splits: atomics
};

// One round of a warp: kSteps steps of 32 columns from column k0 (x staged in xs from k0),
// fully unrolled so that all 2 x kSteps weight loads of a lane are issued before the first
// decode needs one (a 512-column round was 4 serial memory round trips with `unroll 4`).
template <DType T, int kTiles, bool kTiled, int kSteps, int kTokens>
__device__ __forceinline__ void warp_round(const uint8_t* row_a, const uint8_t* row_b, int64_t k0, int c,
                                           int g, const __half (*xs)[kXPitch], float acc[kTiles][4]) {
  const int64_t s0 = k0 / 32;
#pragma unroll
  for (int i = 0; i < kSteps; ++i) {
    const int64_t piece = 4 * (s0 + i) + c;
    uint32_t a_lo[4], a_hi[4];
    int64_t o0, o1;
    piece_a_fragments<T, kTiled>(row_a, row_b, piece, a_lo, a_hi, o0, o1);
    const int l0 = static_cast<int>(o0 - k0), l1 = static_cast<int>(o1 - k0);
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

// kTiles: token tiles of 8 (1 for n <= 8, 2 for n <= 16). Two blocks per SM (<= 128 registers
// a thread): the grid is sized for about that many.
template <DType T, int kTiles, bool kTiled>
__global__ void __launch_bounds__(kThreads, 2) gemv_skinny_kernel(SkinnyArgs p) {
  constexpr int kTokens = kTiles * kTileTokens;
  __shared__ __align__(16) __half xs[kTokens][kXPitch];

  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int g = lane / 4, c = lane % 4;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBlockRows + warp * kWarpRows;
  // Rows past the end decode the last row (valid memory); their results are not stored.
  const uint8_t* row_a = p.w + min(row0 + g, p.rows - 1) * p.row_bytes;
  const uint8_t* row_b = p.w + min(row0 + g + 8, p.rows - 1) * p.row_bytes;
  const int64_t k_begin = static_cast<int64_t>(blockIdx.y) * p.split_cols;
  const int64_t k_end = min(k_begin + p.split_cols, p.cols);

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
      h.x = pack_half2(v.x, v.y);
      h.y = pack_half2(v.z, v.w);
      *reinterpret_cast<uint2*>(&xs[t][4 * q4]) = h;
    }
    __syncthreads();
    if (round_cols == kRoundCols)
      warp_round<T, kTiles, kTiled, kRoundCols / 32, kTokens>(row_a, row_b, k0, c, g, xs, acc);
    else
      warp_round<T, kTiles, kTiled, kUnitCols / 32, kTokens>(row_a, row_b, k0, c, g, xs, acc);
  }

  // acc[t]: {row g, token 2c}, {row g, token 2c + 1}, {row g + 8, token 2c}, {row g + 8,
  // token 2c + 1} of token tile t.
  const bool add_bias = p.bias && blockIdx.y == 0;
#pragma unroll
  for (int t = 0; t < kTiles; ++t)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = row0 + g + (e >= 2 ? 8 : 0);
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

template <DType T, bool kTiled>
void launch_layout(const SkinnyArgs& p, dim3 grid, cudaStream_t stream) {
  if (p.n <= kTileTokens)
    gemv_skinny_kernel<T, 1, kTiled><<<grid, kThreads, 0, stream>>>(p);
  else
    gemv_skinny_kernel<T, 2, kTiled><<<grid, kThreads, 0, stream>>>(p);
}

// The formats with skinny pieces: the block formats (not F32 / F16 / BF16).
template <DType T>
constexpr bool is_skinny_format() {
  return T == DType::Q8_0 || T == DType::Q4_0 || T == DType::Q4_1 || T == DType::Q4_K || T == DType::Q5_K ||
         T == DType::Q6_K;
}

template <DType T>
void launch_format(const SkinnyArgs& p, bool tiled, dim3 grid, cudaStream_t stream) {
  if constexpr (is_tileable<T>()) {
    if (tiled) return launch_layout<T, true>(p, grid, stream);
  }
  launch_layout<T, false>(p, grid, stream);
}

int multiprocessors() {
  static const int n = [] {
    int device = 0, count = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device);
    return std::max(count, 1);
  }();
  return n;
}

}  // namespace

bool gemv_skinny_applies(const WeightView& w, int n_tokens) {
  if (n_tokens < kSkinnyMinTokens || n_tokens > kGemvMaxTokens || w.cols % kUnitCols != 0 || w.rows <= 0)
    return false;
  bool block_format = false;
  dispatch_weight_format(w.dtype, [&]<DType T>() { block_format = is_skinny_format<T>(); });
  return block_format;
}

bool launch_gemv_skinny(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                        bool accumulate, cudaStream_t stream) {
  if (!gemv_skinny_applies(w, n_tokens) || reinterpret_cast<uintptr_t>(x) % 16 != 0) return false;
  // K splits: enough blocks for ~2 per SM, each split at least one 256-column unit.
  const int64_t row_blocks = (w.rows + kBlockRows - 1) / kBlockRows;
  const int64_t units = w.cols / kUnitCols;
  const int64_t want = (2 * multiprocessors() + row_blocks - 1) / row_blocks;
  const int64_t units_per_split =
      (units + std::clamp<int64_t>(want, 1, units) - 1) / std::clamp<int64_t>(want, 1, units);
  const int64_t split_cols = units_per_split * kUnitCols;
  const int64_t splits = (w.cols + split_cols - 1) / split_cols;
  const SkinnyArgs p{static_cast<const uint8_t*>(w.data),
                     w.row_bytes,
                     w.rows,
                     w.cols,
                     x,
                     n_tokens,
                     out,
                     bias,
                     accumulate,
                     split_cols,
                     splits > 1};
  if (p.split && !accumulate)
    cudaMemsetAsync(out, 0, static_cast<size_t>(w.rows) * n_tokens * sizeof(float), stream);
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(splits));
  dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (is_skinny_format<T>()) launch_format<T>(p, w.tiled, grid, stream);
  });
  return true;  // gemv_skinny_applies admitted only skinny formats
}

}  // namespace bl::cuda
