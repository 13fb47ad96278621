// The skinny GEMM (gemv_skinny.cuh) on bl<b>g<g> tiles in their device layout (bl_tiles.cuh),
// 2..16 tokens: each weight read once for all tokens (gemv_bl.cu's kernels take 4 tokens a
// launch, so 16 tokens read the weights 4 times).
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
// per column pair puts S_m's two bytes in a 16-bit lane, a shift and a mask per quad leave its
// code, ORed into 0x6400 (fp16 1024 + code, exact); then w = s (code - z) in fp16: one hsub2 and
// one hfma2 with -s z per half2.
//
// Napkin (H100, ~13 B/clk/SM of weights at 3 TB/s; 4 warp instructions/clk/SM): bl4, a warp's
// step is 256 B of codes = ~20 clk of its SM's bandwidth = ~80 instruction slots; the step takes
// ~45 (2 loads of codes, 2 of s / z, 4 byte_perm, 8 shift, 8 and-or, 16 fp16 ops, 2-4 mma and
// their x loads, addresses). bl2: ~40 slots for the same ~45, so 2 bits are near compute-bound.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string_view>

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

// A's fragments of one step from the lane's dwords of lines L0 (lo) and L1 (hi) of rows 2g,
// 2g + 1 and their fp16 s, z pairs (mma row g = tile row 2g, g + 8 = 2g + 1).
template <int kBits>
__device__ __forceinline__ void bl_fragments(uint2 lo, uint2 hi, uint32_t s_pair, uint32_t z_pair, int shift,
                                             uint32_t a_lo[4], uint32_t a_hi[4]) {
  constexpr uint32_t kCodeMask = ((1u << kBits) - 1u) * 0x00010001u;
  // 1024 + code of quad j for columns (m, m + 1) of f (S_m, S_m+1 in 16-bit lanes), minus 1024.
  auto codes = [shift](uint32_t f, int j) {
    const uint32_t biased = ((f >> (shift + j * kBits)) & kCodeMask) | 0x64006400u;
    return __hsub2(as_half2(biased), __half2half2(__ushort_as_half(0x6400)));
  };
  // S_0, S_1 and S_2, S_3 of each row (line L0's byte in the low half of each 16-bit lane).
  const uint32_t fa01 = __byte_perm(lo.x, hi.x, 0x5140), fa23 = __byte_perm(lo.x, hi.x, 0x7362);
  const uint32_t fb01 = __byte_perm(lo.y, hi.y, 0x5140), fb23 = __byte_perm(lo.y, hi.y, 0x7362);
  const uint32_t nsz = as_u32(__hmul2(as_half2(s_pair), __hneg2(as_half2(z_pair))));  // -s z
  const __half2 sa = as_half2(__byte_perm(s_pair, 0, 0x1010)), sb = as_half2(__byte_perm(s_pair, 0, 0x3232));
  const __half2 na = as_half2(__byte_perm(nsz, 0, 0x1010)), nb = as_half2(__byte_perm(nsz, 0, 0x3232));
  a_lo[0] = as_u32(__hfma2(codes(fa01, 0), sa, na));
  a_lo[1] = as_u32(__hfma2(codes(fb01, 0), sb, nb));
  a_lo[2] = as_u32(__hfma2(codes(fa23, 0), sa, na));
  a_lo[3] = as_u32(__hfma2(codes(fb23, 0), sb, nb));
  a_hi[0] = as_u32(__hfma2(codes(fa01, 1), sa, na));
  a_hi[1] = as_u32(__hfma2(codes(fb01, 1), sb, nb));
  a_hi[2] = as_u32(__hfma2(codes(fa23, 1), sa, na));
  a_hi[3] = as_u32(__hfma2(codes(fb23, 1), sb, nb));
}

// Where lane (g, c) of a warp finds its bits in a tile (file comment).
template <int kBits>
struct LaneBits {
  static_assert(fits_two_lines(kBits), "b = 7 can need three lines a lane");
  static constexpr bool kTwoLines = needs_two_lines(kBits);
  int64_t tile_group_bytes;
  int group_shift;   // log2 g
  int line0, line1;  // L0 and L1 of the lane, inside a step's b lines
  int shift;         // (2bc) % 8: where the lane's bits start in S_m's 16-bit window
  int row_pair;      // byte offset of rows 2g, 2g + 1 in a line (8g; in the s / z arrays 4g)
  int lane_cols;     // 8c: the lane's first column in a step

  __device__ LaneBits(int group, int g, int c)
      : tile_group_bytes(bltile::tile_group_bytes(kBits, group)),
        group_shift(group == 32 ? 5 : group == 64 ? 6 : 7),  // g is 32, 64 or 128
        line0(2 * kBits * c / 8),
        line1(min(2 * kBits * c / 8 + 1, kBits - 1)),
        shift(2 * kBits * c % 8),
        row_pair(8 * g),
        lane_cols(8 * c) {}

  // The step at column col of the tile (tiles at `tile`, a tile group's start at a multiple of
  // g): its tile group and the lane's first line in it.
  __device__ __forceinline__ void step_at(const uint8_t* tile, int64_t col, const uint8_t*& tg,
                                          const uint8_t*& lines) const {
    tg = tile + (col >> group_shift) * tile_group_bytes;
    const int block = static_cast<int>(col & ((1 << group_shift) - 1)) / kStepCols;  // 32-column block of the group
    lines = tg + bltile::kHeaderBytes + bltile::kLineBytes * kBits * block + row_pair;
  }
};

// The warp's tile (the last one for warps past the end: decoded, not stored).
__device__ __forceinline__ const uint8_t* warp_tile(const SkinnyArgs& p, int64_t row0, int64_t tile_group_bytes) {
  const int64_t tiles = p.rows / bltile::kTileRows;
  return p.w + min(row0 / bltile::kTileRows, tiles - 1) * (p.cols / p.group) * tile_group_bytes;
}

// gemv_skinny_kernel's reader: a round's loads in registers, 8 steps at a time.
template <int kBits>
struct BlReader {
  static constexpr bool kTwoLines = LaneBits<kBits>::kTwoLines;
  static constexpr int kMaxSteps = 8;
  LaneBits<kBits> bits;
  const uint8_t* tile;
  int64_t k0 = 0;
  uint2 lo[kMaxSteps];  // a step's line L0: rows 2g, 2g + 1
  uint2 hi[kMaxSteps];  // line L1 (kTwoLines)
  uint32_t s_pair[kMaxSteps], z_pair[kMaxSteps];  // fp16 s, z of rows 2g, 2g + 1 for the step's group

  __device__ BlReader(const SkinnyArgs& p, int64_t row0, int g, int c)
      : bits(p.group, g, c), tile(warp_tile(p, row0, bits.tile_group_bytes)) {}

  template <int kSteps>
  __device__ void load(int64_t k) {
    k0 = k;
#pragma unroll
    for (int i = 0; i < kSteps; ++i) {
      const uint8_t *tg, *lines;
      bits.step_at(tile, k + i * kStepCols, tg, lines);
      lo[i] = __ldg(reinterpret_cast<const uint2*>(lines + bltile::kLineBytes * bits.line0));
      if constexpr (kTwoLines) hi[i] = __ldg(reinterpret_cast<const uint2*>(lines + bltile::kLineBytes * bits.line1));
      s_pair[i] = __ldg(reinterpret_cast<const uint32_t*>(tg + bits.row_pair / 2));
      z_pair[i] = __ldg(reinterpret_cast<const uint32_t*>(tg + 32 + bits.row_pair / 2));
    }
  }
  __device__ void fragments(int i, uint32_t a_lo[4], uint32_t a_hi[4], int& l0, int& l1) const {
    bl_fragments<kBits>(lo[i], kTwoLines ? hi[i] : lo[i], s_pair[i], z_pair[i], bits.shift, a_lo, a_hi);
    l0 = i * kStepCols + bits.lane_cols, l1 = l0 + 4;
  }
  static constexpr int row_of(int g, int e) { return 2 * g + (e >= 2 ? 1 : 0); }
};

// The ring kernel's reader: the steps of one slot (128 columns of the warp's tile) in shared memory.
template <int kBits>
struct SlotReader {
  static constexpr bool kTwoLines = LaneBits<kBits>::kTwoLines;
  LaneBits<kBits> bits;
  const uint8_t* slot = nullptr;

  __device__ __forceinline__ void fragments(int i, uint32_t a_lo[4], uint32_t a_hi[4], int& l0, int& l1) const {
    const uint8_t *tg, *lines;
    bits.step_at(slot, i * kStepCols, tg, lines);
    const uint2 lo = *reinterpret_cast<const uint2*>(lines + bltile::kLineBytes * bits.line0);
    const uint2 hi = kTwoLines ? *reinterpret_cast<const uint2*>(lines + bltile::kLineBytes * bits.line1) : lo;
    const uint32_t s_pair = *reinterpret_cast<const uint32_t*>(tg + bits.row_pair / 2);
    const uint32_t z_pair = *reinterpret_cast<const uint32_t*>(tg + 32 + bits.row_pair / 2);
    bl_fragments<kBits>(lo, hi, s_pair, z_pair, bits.shift, a_lo, a_hi);
    l0 = i * kStepCols + bits.lane_cols, l1 = l0 + 4;
  }
  static constexpr int row_of(int g, int e) { return 2 * g + (e >= 2 ? 1 : 0); }
};

// The ring: per warp kSlots slots of 128 columns of its tile (128 / g whole tile groups,
// contiguous in the tile), filled with cp.async 16 bytes a lane; kSlots - 1 of them in flight
// while one is decoded (bl4g128: 7 x 1088 B a warp, ~120 KB an SM with 2 blocks), no registers
// held by the loads. Slots: 8 up to 4 bits, 4 above (bl8g32: 4 x 2304 B a warp).
constexpr int kSlotCols = 128;
template <int kBits>
constexpr int ring_slots() {
  return kBits <= 4 ? 8 : 4;
}
__host__ __device__ constexpr int slot_bytes(int bits, int group) {
  return kSlotCols / group * bltile::tile_group_bytes(bits, group);
}
template <int kBits, int kTiles>
constexpr size_t ring_kernel_smem(int group) {
  return sizeof(__half) * kTiles * kTileTokens * kXPitch +
         static_cast<size_t>(kWarps) * ring_slots<kBits>() * slot_bytes(kBits, group);
}

template <int kBits, int kTiles>
__global__ void __launch_bounds__(kThreads, 2) gemv_skinny_bl_ring_kernel(SkinnyArgs p) {
  constexpr int kTokens = kTiles * kTileTokens;
  constexpr int kSlots = ring_slots<kBits>();
  extern __shared__ __align__(16) uint8_t smem[];
  auto xs = reinterpret_cast<__half(*)[kXPitch]>(smem);

  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int g = lane / 4, c = lane % 4;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kBlockRows + warp * kWarpRows;
  SlotReader<kBits> reader{LaneBits<kBits>(p.group, g, c)};
  const uint8_t* tile = warp_tile(p, row0, reader.bits.tile_group_bytes);
  const int ring_slot_bytes = slot_bytes(kBits, p.group);
  uint8_t* ring = smem + sizeof(__half) * kTokens * kXPitch + warp * kSlots * ring_slot_bytes;
  int64_t k_begin, k_end;
  split_range(p, k_begin, k_end);
  const int n_slots = static_cast<int>((k_end - k_begin) / kSlotCols);

  // Slot q's copy (nothing past the end), one commit group either way so that group q is slot q.
  auto issue = [&](int q) {
    if (q < n_slots) {
      const uint8_t* src = tile + ((k_begin + static_cast<int64_t>(q) * kSlotCols) >> reader.bits.group_shift) *
                                      reader.bits.tile_group_bytes;
      uint8_t* dst = ring + (q % kSlots) * ring_slot_bytes;
      for (int i = lane; i < ring_slot_bytes / 16; i += kWarp) cp_async_16(dst + 16 * i, src + 16 * i, 16);
    }
    cp_async_commit();
  };

  float acc[kTiles][4];
#pragma unroll
  for (int t = 0; t < kTiles; ++t) acc[t][0] = acc[t][1] = acc[t][2] = acc[t][3] = 0.0f;

#pragma unroll
  for (int q = 0; q < kSlots - 1; ++q) issue(q);
  for (int q = 0; q < n_slots; ++q) {
    const int64_t k = k_begin + static_cast<int64_t>(q) * kSlotCols;
    const int round_offset = static_cast<int>((k - k_begin) % kRoundCols);  // 0, 128, 256, 384
    if (round_offset == 0)
      stage_x<kTokens>(p, k, static_cast<int>(min(static_cast<int64_t>(kRoundCols), k_end - k)), xs);
    issue(q + kSlots - 1);  // into the slot decoded last time round
    cp_async_wait<kSlots - 1>();  // slot q's group, this lane's part
    __syncwarp();                 // and every other lane's
    reader.slot = ring + (q % kSlots) * ring_slot_bytes;
#pragma unroll
    for (int i = 0; i < kSlotCols / kStepCols; ++i) step_mma<SlotReader<kBits>, kTiles>(reader, i, round_offset, g, xs, acc);
    __syncwarp();  // the slot is read before the next issue overwrites it
  }

  store_acc<SlotReader<kBits>, kTiles>(p, row0, g, c, acc);
}

// BITLIGHT_CUDA_BL_SKINNY: ring (the default), registers (gemv_skinny_kernel with BlReader), 0 (off).
const std::string_view skinny_mode = env_choice("BITLIGHT_CUDA_BL_SKINNY", {"0", "ring", "registers"}).value_or("ring");
const bool skinny_enabled = skinny_mode != "0";

template <int kBits, int kTiles>
bool launch_ring(const SkinnyArgs& p, dim3 grid, cudaStream_t stream) {
  const size_t smem = ring_kernel_smem<kBits, kTiles>(p.group);
  static const bool raised = cudaFuncSetAttribute(gemv_skinny_bl_ring_kernel<kBits, kTiles>,
                                                  cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                  static_cast<int>(ring_kernel_smem<kBits, kTiles>(32))) == cudaSuccess;
  if (!raised) return false;
  gemv_skinny_bl_ring_kernel<kBits, kTiles><<<grid, kThreads, smem, stream>>>(p);
  return true;
}

template <int kBits>
bool launch_bits(const SkinnyArgs& p, dim3 grid, cudaStream_t stream) {
  if constexpr (fits_two_lines(kBits)) {
    if (skinny_mode == "registers") {
      launch_reader<BlReader<kBits>>(p, grid, stream);
      return true;
    }
    return p.n <= kTileTokens ? launch_ring<kBits, 1>(p, grid, stream) : launch_ring<kBits, 2>(p, grid, stream);
  }
  return false;
}

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
  const int bits = quant::bl_group_shape(w.dtype)->bits, group = quant::bl_group_shape(w.dtype)->group_size;
  SkinnyArgs p{static_cast<const uint8_t*>(w.data), 0, w.rows, w.cols, group, x, n_tokens, out, bias,
               accumulate, false};
  const dim3 grid = plan_grid(p, stream);
  switch (bits) {
    case 1: return launch_bits<1>(p, grid, stream);
    case 2: return launch_bits<2>(p, grid, stream);
    case 3: return launch_bits<3>(p, grid, stream);
    case 4: return launch_bits<4>(p, grid, stream);
    case 5: return launch_bits<5>(p, grid, stream);
    case 6: return launch_bits<6>(p, grid, stream);
    case 8: return launch_bits<8>(p, grid, stream);
    default: return false;
  }
}

}  // namespace bl::cuda
