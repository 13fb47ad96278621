// The skinny GEMM (gemv_skinny.cuh) on the block formats' pieces: lane (g, c) decodes piece
// 4s + c of rows g and g + 8 (gemv_pieces.cuh: 8 weights for x columns o0..o0+3 and
// o1..o1+3) in step s. Pieces 4s..4s+3 of a row lie in one 256-column (super-)block, so rounds
// of whole 256-column units hold every column their pieces need.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/gemv_pieces.cuh"
#include "kernels/cuda/gemv_skinny.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/weight_decode.cuh"  // dispatch_weight_format

namespace bl::cuda {
namespace {

using namespace skinny;

// A Q4_0 piece of one row (as Piece<Q4_0>::load: weights 4q .. 4q + 3 at o0, 16 + 4q .. at o1)
// straight to fp16 pairs, without fp32: h = {(w0, w2), (w1, w3), (w4, w6), (w5, w7)}. A nibble
// masked into 0x6400 is fp16 1024 + q; minus 1032 is q - 8 exactly, times d one rounding: the
// same bits as the fp32 decode rounded to fp16, for a shift, a mask-or, an hsub2 and an hmul2 a
// pair where the fp32 decode takes a byte_perm, an fadd and an fmul a weight and a pack a pair
// (Nsight Compute counted ~140 warp instructions a 16-row step with the fp32 decode).
template <bool kTiled>
__device__ __forceinline__ void q4_0_piece_halves(const uint8_t* row, int64_t i, uint32_t h[4], int64_t& o0,
                                                  int64_t& o1) {
  const int64_t b = i >> 2;
  const int q = static_cast<int>(i & 3);
  const BlockRef blk = block_ref<DType::Q4_0, kTiled>(row, b);
  const uint32_t d_bits = *reinterpret_cast<const uint16_t*>(blk.hdr);
  const uint32_t v =
      kTiled ? *reinterpret_cast<const uint32_t*>(blk.body + 4 * q) : load_u32_from_u16(blk.body + 4 * q);
  const uint32_t d2 = d_bits * 0x00010001u;  // (d, d)
  auto pair = [d2](uint32_t bits) {
    const uint32_t biased = (bits & 0x000F000Fu) | 0x64006400u;
    const __half2 w = __hmul2(__hsub2(*reinterpret_cast<const __half2*>(&biased),
                                      __half2half2(__ushort_as_half(0x6408))),  // 1032
                              *reinterpret_cast<const __half2*>(&d2));
    return *reinterpret_cast<const uint32_t*>(&w);
  };
  h[0] = pair(v);        // low nibbles of bytes 0, 2: weights 4q, 4q + 2
  h[1] = pair(v >> 8);   // bytes 1, 3: 4q + 1, 4q + 3
  h[2] = pair(v >> 4);   // high nibbles of bytes 0, 2: 16 + 4q, 16 + 4q + 2
  h[3] = pair(v >> 12);  // bytes 1, 3: 16 + 4q + 1, 16 + 4q + 3
  o0 = b * 32 + 4 * q;
  o1 = o0 + 16;
}

// The loads and the decode of a step are one call; with the round fully unrolled the compiler
// issues all of its loads first.
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
  // Step i's A fragments, each pair of columns in the staged order (o, o + 2), (o + 1, o + 3).
  __device__ void fragments(int i, uint32_t a_lo[4], uint32_t a_hi[4], int& l0, int& l1) const {
    const int64_t piece = 4 * (k0 / kStepCols + i) + c;
    int64_t o0, o1;
    if constexpr (T == DType::Q4_0) {
      uint32_t ha[4], hb[4];
      q4_0_piece_halves<kTiled>(row_a, piece, ha, o0, o1);
      q4_0_piece_halves<kTiled>(row_b, piece, hb, o0, o1);
      a_lo[0] = ha[0], a_lo[1] = hb[0], a_lo[2] = ha[1], a_lo[3] = hb[1];
      a_hi[0] = ha[2], a_hi[1] = hb[2], a_hi[2] = ha[3], a_hi[3] = hb[3];
    } else {
      float wa[kPiece], wb[kPiece];
      Piece<T, kTiled>::load(row_a, piece, wa, o0, o1);
      Piece<T, kTiled>::load(row_b, piece, wb, o0, o1);
      a_lo[0] = pack_half2(wa[0], wa[2]), a_lo[1] = pack_half2(wb[0], wb[2]);
      a_lo[2] = pack_half2(wa[1], wa[3]), a_lo[3] = pack_half2(wb[1], wb[3]);
      a_hi[0] = pack_half2(wa[4], wa[6]), a_hi[1] = pack_half2(wb[4], wb[6]);
      a_hi[2] = pack_half2(wa[5], wa[7]), a_hi[3] = pack_half2(wb[5], wb[7]);
    }
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
  SkinnyArgs p{.w = static_cast<const uint8_t*>(w.data),
               .row_bytes = w.row_bytes,
               .rows = w.rows,
               .cols = w.cols,
               .x = x,
               .n = n_tokens,
               .out = out,
               .bias = bias,
               .accumulate = accumulate};
  const dim3 grid = plan_grid(p, stream);
  dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (is_skinny_format<T>()) launch_format<T>(p, w.tiled, grid, stream);
  });
  return true;  // gemv_skinny_applies admitted only skinny formats
}

}  // namespace bl::cuda
