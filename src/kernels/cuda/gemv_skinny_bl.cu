// The skinny GEMM (gemv_skinny.cuh) on bl<b>g<g> tiles in their device layout (bl_tiles.cuh),
// 5..16 tokens: each weight read once for all tokens (gemv_bl.cu's kernels take 4 tokens a
// launch, so 16 tokens read the weights 4 times; up to 4 tokens they read them once too and are
// as fast or faster).
//
// A warp's 16 rows are one 16-row tile. Lane (g, c) takes tile rows 2g and 2g + 1 (mma rows g
// and g + 8: any row order serves the mma, and this one puts the lane's two rows side by side,
// so one 8-byte load reads both rows' dword of a line and one 4-byte load both rows' s or z)
// and columns 8c .. 8c + 7 of each 32-column step: quads 2(c % 2) and 2(c % 2) + 1 of chunk
// c / 2. In the device layout byte m of line l's dword holds, at bit 4h + i, nibble i of
// register 2l + h for column m of its quad; so for each column-in-quad m the step's b lines
// form one bit string S_m (bit 8l + j = bit j of byte m of line l), and the lane's two quads are
// bits 2bc .. 2bc + 2b - 1 of S_m (quad j: plane p at bit 2bc + jb + p). Those bits lie in lines
// L0 = 2bc / 8 and L0 + 1; b = 1, 2, 4 need only L0 (bits shift + 2b <= 8), b = 3, 5, 6, 8 both,
// b = 7 sometimes a third (not taken here: gemv_bl.cu runs it). Per row and step: one byte_perm
// per column pair (0, 2 and 1, 3: the staged x's order) puts S_m's two bytes in a 16-bit lane, a shift and a
// mask per quad leave its code, ORed into 0x6400 (fp16 1024 + code, exact); then w = s (code - z) in fp16:
// one hsub2 and one hfma2 with -s z per half2.
//
// Napkin (H100, ~13 B/clk/SM of weights at 3 TB/s; 4 warp instructions/clk/SM): bl4, a warp's
// step is 256 B of codes = ~20 clk of its SM's bandwidth = ~80 instruction slots; the step takes
// ~45 (2 loads of codes, 2 of s / z, 4 byte_perm, 8 shift, 8 and-or, 16 fp16 ops, 2-4 mma and
// their x loads, addresses). bl2: ~40 slots for the same ~45, so 2 bits are near compute-bound.
// Measured, it is instruction-bound at both widths: one 16-token launch of the 8B O shape reads
// at 24 % of the HBM peak with its schedulers issuing in 58 % of the cycles (docs/cuda.md,
// "Twenty-ninth session"); keeping more weights in flight (a shared-memory ring) was slower.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "core/env_switch.h"
#include "kernels/cuda/bl_tiles.cuh"
#include "kernels/cuda/gemv_skinny.cuh"
#include "kernels/cuda/launchers.h"
#include "quant/bl_group.h"

namespace bl::cuda {
namespace {

using namespace skinny;

// Whether lane c of b bits needs a second line in some step: bits (2bc) % 8 .. + 2b past a byte.
constexpr bool needs_two_lines(int bits) {
  for (int c = 0; c < 4; ++c)
    if ((2 * bits * c) % 8 + 2 * bits > 8) return true;
  return false;
}
// Whether the lane's bits always lie in two lines (every b but 7).
constexpr bool fits_two_lines(int bits) {
  for (int c = 0; c < 4; ++c)
    if ((2 * bits * c) % 8 + 2 * bits > 16) return false;
  return true;
}

__device__ __forceinline__ uint32_t as_u32(__half2 h) { return *reinterpret_cast<const uint32_t*>(&h); }
__device__ __forceinline__ __half2 as_half2(uint32_t u) { return *reinterpret_cast<const __half2*>(&u); }

template <int kBits>
struct BlReader {
  static_assert(fits_two_lines(kBits), "b = 7 can need three lines a lane");
  static constexpr bool kTwoLines = needs_two_lines(kBits);
  static constexpr int kMaxSteps = 8;
  static constexpr uint32_t kCodeMask = ((1u << kBits) - 1u) * 0x00010001u;

  const uint8_t* tile;  // the warp's tile (the last one for warps past the end: not stored)
  int64_t tile_group_bytes;
  int group_shift;   // log2 g
  int line0, line1;  // L0 and L1 of the lane, inside a step's b lines
  int shift;         // (2bc) % 8: where the lane's bits start in S_m's 16-bit window
  int row_pair;      // byte offset of rows 2g, 2g + 1 in a line and in the s / z arrays (8g, 4g)
  int lane_cols;     // 8c: the lane's first column in a step
  int64_t k0 = 0;
  uint2 lo[kMaxSteps];                            // a step's line L0: rows 2g, 2g + 1
  uint2 hi[kMaxSteps];                            // line L1 (kTwoLines)
  uint32_t s_pair[kMaxSteps], z_pair[kMaxSteps];  // fp16 s, z of rows 2g, 2g + 1 for the step's group

  __device__ BlReader(const SkinnyArgs& p, int64_t row0, int g, int c) {
    const int64_t tiles = p.rows / bltile::kTileRows;
    tile_group_bytes = bltile::tile_group_bytes(kBits, p.group);
    tile = p.w + min(row0 / bltile::kTileRows, tiles - 1) * (p.cols / p.group) * tile_group_bytes;
    group_shift = __ffs(p.group) - 1;
    line0 = 2 * kBits * c / 8;
    line1 = min(line0 + 1, kBits - 1);
    shift = 2 * kBits * c % 8;
    row_pair = 8 * g;
    lane_cols = 8 * c;
  }

  template <int kSteps>
  __device__ void load(int64_t k) {
    k0 = k;
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      const int64_t col = k + i * kStepCols;
      const uint8_t* tg = tile + (col >> group_shift) * tile_group_bytes;
      const int block =
          static_cast<int>(col & ((1 << group_shift) - 1)) / kStepCols;  // 32-column block of the group
      const uint8_t* lines = tg + bltile::kHeaderBytes + bltile::kLineBytes * kBits * block + row_pair;
      lo[i] = __ldg(reinterpret_cast<const uint2*>(lines + bltile::kLineBytes * line0));
      if constexpr (kTwoLines)
        hi[i] = __ldg(reinterpret_cast<const uint2*>(lines + bltile::kLineBytes * line1));
      s_pair[i] = __ldg(reinterpret_cast<const uint32_t*>(tg + row_pair / 2));
      z_pair[i] = __ldg(reinterpret_cast<const uint32_t*>(tg + 32 + row_pair / 2));
    }
  }

  // 1024 + code of quad j for columns (m, m + 2) of f (S_m, S_m+2 in 16-bit lanes), minus 1024.
  __device__ __forceinline__ __half2 codes(uint32_t f, int j) const {
    const uint32_t biased = ((f >> (shift + j * kBits)) & kCodeMask) | 0x64006400u;
    return __hsub2(as_half2(biased), __half2half2(__ushort_as_half(0x6400)));
  }

  __device__ void fragments(int i, uint32_t a_lo[4], uint32_t a_hi[4], int& l0, int& l1) const {
    const uint32_t a0 = lo[i].x, b0 = lo[i].y;  // rows 2g, 2g + 1, line L0
    const uint32_t a1 = kTwoLines ? hi[i].x : a0, b1 = kTwoLines ? hi[i].y : b0;
    // S_0, S_2 and S_1, S_3 of each row (line L0's byte in the low half of each 16-bit lane): the
    // column pairs of the staged x (0, 2), (1, 3).
    const uint32_t fa02 = __byte_perm(a0, a1, 0x6240), fa13 = __byte_perm(a0, a1, 0x7351);
    const uint32_t fb02 = __byte_perm(b0, b1, 0x6240), fb13 = __byte_perm(b0, b1, 0x7351);
    const uint32_t nsz = as_u32(__hmul2(as_half2(s_pair[i]), __hneg2(as_half2(z_pair[i]))));  // -s z
    const __half2 sa = as_half2(__byte_perm(s_pair[i], 0, 0x1010)),
                  sb = as_half2(__byte_perm(s_pair[i], 0, 0x3232));
    const __half2 na = as_half2(__byte_perm(nsz, 0, 0x1010)), nb = as_half2(__byte_perm(nsz, 0, 0x3232));
    a_lo[0] = as_u32(__hfma2(codes(fa02, 0), sa, na));
    a_lo[1] = as_u32(__hfma2(codes(fb02, 0), sb, nb));
    a_lo[2] = as_u32(__hfma2(codes(fa13, 0), sa, na));
    a_lo[3] = as_u32(__hfma2(codes(fb13, 0), sb, nb));
    a_hi[0] = as_u32(__hfma2(codes(fa02, 1), sa, na));
    a_hi[1] = as_u32(__hfma2(codes(fb02, 1), sb, nb));
    a_hi[2] = as_u32(__hfma2(codes(fa13, 1), sa, na));
    a_hi[3] = as_u32(__hfma2(codes(fb13, 1), sb, nb));
    l0 = i * kStepCols + lane_cols, l1 = l0 + 4;
  }

  static constexpr int row_of(int g, int e) { return 2 * g + (e >= 2 ? 1 : 0); }
};

const bool skinny_enabled = env_choice("BITLIGHT_CUDA_BL_SKINNY", {"0", "1"}) != "0";

}  // namespace

bool gemv_bl_skinny_applies(const WeightView& w, int n_tokens) {
  const auto shape = quant::bl_group_shape(w.dtype);
  return skinny_enabled && tensor_core_gemv_enabled() && shape && shape->bits != 7 &&
         n_tokens >= kBlSkinnyMinTokens && n_tokens <= kGemvMaxTokens && w.rows > 0 &&
         w.rows % bltile::kTileRows == 0 && w.cols % kUnitCols == 0 && w.cols % shape->group_size == 0 &&
         aligned16(w.data);
}

bool launch_gemv_bl_skinny(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                           bool accumulate, cudaStream_t stream) {
  if (!gemv_bl_skinny_applies(w, n_tokens) || !aligned16(x)) return false;
  const quant::BlGroupShape shape = *quant::bl_group_shape(w.dtype);
  SkinnyArgs p{.w = static_cast<const uint8_t*>(w.data),
               .rows = w.rows,
               .cols = w.cols,
               .group = shape.group_size,
               .x = x,
               .n = n_tokens,
               .out = out,
               .bias = bias,
               .accumulate = accumulate};
  const dim3 grid = plan_grid(p, stream);
  bool launched = false;  // every width gemv_bl_skinny_applies admits (all but 7 bits)
  bltile::dispatch_bits(shape.bits, [&]<int kBits>() {
    if constexpr (fits_two_lines(kBits)) {
      launch_reader<BlReader<kBits>>(p, grid, stream);
      launched = true;
    }
  });
  return launched;
}

}  // namespace bl::cuda
