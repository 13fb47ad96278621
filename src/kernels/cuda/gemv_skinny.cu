// The skinny GEMM (gemv_skinny.cuh) on the block formats' pieces: lane (g, c) decodes piece
// 4s + c of rows g and g + 8 (gemv_pieces.cuh: 8 weights for x columns o0..o0+3 and
// o1..o1+3) in step s. Pieces 4s..4s+3 of a row lie in one 256-column (super-)block, so rounds
// of whole 256-column units hold every column their pieces need.
#include <cuda_runtime.h>

#include "kernels/cuda/gemv_pieces.cuh"
#include "kernels/cuda/gemv_skinny.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/weight_decode.cuh"  // dispatch_weight_format

namespace bl::cuda {
namespace {

using namespace skinny;

// The loads and the decode of a step are one call (piece_a_fragments); with the round fully
// unrolled the compiler issues all of its loads first.
template <DType T, bool kTiled>
struct PieceReader {
  static constexpr int kMaxSteps = kRoundCols / kStepCols;
  const uint8_t* row_a;
  const uint8_t* row_b;
  int c;
  int64_t k0 = 0;

  // Rows past the end decode the last row (valid memory); their results are not stored.
  __device__ PieceReader(const SkinnyArgs& p, int64_t row0, int g, int c_)
      : row_a(p.w + min(row0 + g, p.rows - 1) * p.row_bytes),
        row_b(p.w + min(row0 + g + 8, p.rows - 1) * p.row_bytes),
        c(c_) {}
  template <int kSteps>
  __device__ void load(int64_t k) {
    k0 = k;
  }
  __device__ void fragments(int i, uint32_t a_lo[4], uint32_t a_hi[4], int& l0, int& l1) const {
    int64_t o0, o1;
    piece_a_fragments<T, kTiled>(row_a, row_b, 4 * (k0 / kStepCols + i) + c, a_lo, a_hi, o0, o1);
    l0 = static_cast<int>(o0 - k0), l1 = static_cast<int>(o1 - k0);
  }
  static constexpr int row_of(int g, int e) { return g + (e >= 2 ? 8 : 0); }
};

// The formats with skinny pieces: the block formats (not F32 / F16 / BF16).
template <DType T>
constexpr bool is_skinny_format() {
  return T == DType::Q8_0 || T == DType::Q4_0 || T == DType::Q4_1 || T == DType::Q4_K || T == DType::Q5_K ||
         T == DType::Q6_K;
}

template <DType T>
void launch_format(const SkinnyArgs& p, bool tiled, dim3 grid, cudaStream_t stream) {
  if constexpr (is_tileable<T>()) {
    if (tiled) return launch_reader<PieceReader<T, true>>(p, grid, stream);
  }
  launch_reader<PieceReader<T, false>>(p, grid, stream);
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
  if (!gemv_skinny_applies(w, n_tokens) || !aligned16(x)) return false;
  SkinnyArgs p{static_cast<const uint8_t*>(w.data),
               w.row_bytes,
               w.rows,
               w.cols,
               0,
               x,
               n_tokens,
               out,
               bias,
               accumulate,
               false};
  const dim3 grid = plan_grid(p, stream);
  dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (is_skinny_format<T>()) launch_format<T>(p, w.tiled, grid, stream);
  });
  return true;  // gemv_skinny_applies admitted only skinny formats
}

}  // namespace bl::cuda
