// Batched decode (8..16 tokens, >= 2048 rows) for the block formats on tensor cores: the weights are
// dequantized into registers (gemv_pieces.cuh) and multiplied with mma.sync m16n8k16 (fp16
// operands, fp32 accumulation), so the arithmetic is no longer the limit at 16 tokens.
//
// A warp owns 16 rows; lane (g = lane / 4, c = lane % 4) decodes piece 4s + c of rows g and
// g + 8 (8 weights each). A dot product may sum its k in any order as long as A and B agree,
// so the k-slots of the mma fragments are filled straight from the pieces: slots {2c, 2c+1,
// 2c+8, 2c+9} of the first mma get weights 0..3 of the piece (x columns o0..o0+3), those of
// the second mma weights 4..7 (o1..o1+3); the lane that holds B column n = g loads x of token
// n at the same columns. The 8 warps of a block share the 16 rows and split the pieces
// (split-K); their accumulators are summed in shared memory.
//
// Napkin math (H100): 16 tokens x 4096 x 4096 is 0.5 GFLOP, 0.5 us of fp16 tensor-core time
// against ~3 us to read the 4-bit weights: the kernel stays memory-bound, as it should.
// Tolerance: x and the dequantized weights are rounded to fp16 (2^-11 relative per term).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/gemv_pieces.cuh"
#include "kernels/cuda/launchers.h"

namespace bl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarp;
constexpr int kTileRows = 16;    // rows per block (one mma M)
constexpr int kTileTokens = 8;   // tokens per mma N

// kTiles: token tiles of 8 (1 for n <= 8, 2 for n <= 16).
template <DType T, int kTiles, bool kTiled>
__global__ void __launch_bounds__(kThreads) gemv_tc_kernel(GemvArgs p) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int g = lane / 4, c = lane % 4;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kTileRows;
  // Rows past the end decode the last row (valid memory); their results are not stored.
  const uint8_t* row_a = p.w + min(row0 + g, p.rows - 1) * p.row_bytes;
  const uint8_t* row_b = p.w + min(row0 + g + 8, p.rows - 1) * p.row_bytes;

  float acc[kTiles][4];
#pragma unroll
  for (int t = 0; t < kTiles; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;

  const int64_t n_steps = p.cols / (4 * kPiece);  // 32 columns per step
#pragma unroll 2
  for (int64_t s = warp; s < n_steps; s += kWarps) {
    const int64_t piece = 4 * s + c;
    uint32_t a_lo[4], a_hi[4];
    int64_t o0, o1;
    piece_a_fragments<T, kTiled>(row_a, row_b, piece, a_lo, a_hi, o0, o1);
#pragma unroll
    for (int t = 0; t < kTiles; ++t) {
      const int token = t * kTileTokens + g;
      float4 xa = make_float4(0.f, 0.f, 0.f, 0.f), xb = xa;
      if (token < p.n) {
        const float* xt = p.x + token * p.cols;
        xa = __ldg(reinterpret_cast<const float4*>(xt + o0));
        xb = __ldg(reinterpret_cast<const float4*>(xt + o1));
      }
      mma_16816(acc[t], a_lo, pack_half2(xa.x, xa.y), pack_half2(xa.z, xa.w));
      mma_16816(acc[t], a_hi, pack_half2(xb.x, xb.y), pack_half2(xb.z, xb.w));
    }
  }

  // acc[t]: {row g, token 2c}, {row g, token 2c+1}, {row g+8, token 2c}, {row g+8, token 2c+1}
  // of token tile t. Sum the warps' partial products.
  __shared__ float partial[kWarps][kTileRows][kTiles * kTileTokens];
#pragma unroll
  for (int t = 0; t < kTiles; ++t) {
    const int tok = t * kTileTokens + 2 * c;
    partial[warp][g][tok] = acc[t][0];
    partial[warp][g][tok + 1] = acc[t][1];
    partial[warp][g + 8][tok] = acc[t][2];
    partial[warp][g + 8][tok + 1] = acc[t][3];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kTileRows * kTiles * kTileTokens; idx += kThreads) {
    const int r = idx / (kTiles * kTileTokens), t = idx % (kTiles * kTileTokens);
    const int64_t row = row0 + r;
    if (t >= p.n || row >= p.rows) continue;
    float s = p.bias ? p.bias[row] : 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) s += partial[w][r][t];
    p.out[t * p.rows + row] = s;
  }
}

template <DType T, bool kTiled>
void launch_tc_layout(const GemvArgs& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.rows + kTileRows - 1) / kTileRows));
  if (p.n <= kTileTokens) gemv_tc_kernel<T, 1, kTiled><<<grid, kThreads, 0, stream>>>(p);
  else gemv_tc_kernel<T, 2, kTiled><<<grid, kThreads, 0, stream>>>(p);
}

template <DType T>
void launch_tc(const GemvArgs& p, bool tiled, cudaStream_t stream) {
  if constexpr (is_tileable<T>()) {
    if (tiled) return launch_tc_layout<T, true>(p, stream);
  }
  launch_tc_layout<T, false>(p, stream);
}

bool g_tensor_core_gemv = true;

}  // namespace

void set_tensor_core_gemv(bool enabled) { g_tensor_core_gemv = enabled; }
bool tensor_core_gemv_enabled() { return g_tensor_core_gemv; }

bool launch_gemv_tensor_core(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                             cudaStream_t stream) {
  // Where it wins, measured on an H100 (docs/cuda.md): at 16 tokens and 4096 rows it is 2.6x
  // faster than the CUDA-core GEMV; at 1024 rows (64 blocks of 16 rows, half the SMs idle)
  // it is 1.2-1.6x slower, and at 4 tokens it barely beats its own 16-token time. Hence at
  // least 2048 rows (128 blocks) and 8 tokens.
  constexpr int64_t kMinRows = 2048;
  constexpr int kMinTokens = 8;
  if (n_tokens < kMinTokens || n_tokens > kGemvMaxTokens || w.rows < kMinRows || w.cols % (4 * kPiece) != 0 ||
      reinterpret_cast<uintptr_t>(x) % 16 != 0)
    return false;
  const GemvArgs p{static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, x, n_tokens, out, bias};
  switch (w.dtype) {
    case DType::Q8_0: launch_tc<DType::Q8_0>(p, w.tiled, stream); return true;
    case DType::Q4_0: launch_tc<DType::Q4_0>(p, w.tiled, stream); return true;
    case DType::Q4_1: launch_tc<DType::Q4_1>(p, w.tiled, stream); return true;
    case DType::Q4_K: launch_tc<DType::Q4_K>(p, w.tiled, stream); return true;
    case DType::Q5_K: launch_tc<DType::Q5_K>(p, w.tiled, stream); return true;
    case DType::Q6_K: launch_tc<DType::Q6_K>(p, w.tiled, stream); return true;
    default: return false;
  }
}

}  // namespace bl::cuda
