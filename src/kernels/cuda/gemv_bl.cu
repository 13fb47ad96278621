// Decode GEMV on bl<b>g<g> weights in their device layout (bl_tiles.cuh): out[rows, n] = W x, n <= 4
// per launch (launch_gemv_bl loops over groups of 4 tokens). Two kernels:
//  - gemv_bl_token_kernel: cols % 256 == 0 (the models' shapes). x is staged as gemv_dp4a.cu
//    stages it (gemv_int8_x.cuh), so one token takes the same prologues (norm or SwiGLU inside,
//    x quantized once by a kernel before it, or the attention's sums; 2..4 tokens none), and its
//    first weights are in flight before it waits for the kernel before it (PDL). Work as below,
//    in two buffers of 1..4 x blocks a lane (units_per_buffer), the next ones in flight across
//    the end of a tile.
//  - gemv_bl_kernel: cols % 256 != 0 (and everything with BITLIGHT_CUDA_BL_TOKEN=0).
//
// x is quantized to int8 per 32 values in shared memory by every block (as gemv_dp4a.cu: each
// x_k off by up to max|x_block| / 254), with d (scale) and d * sum(q) per block. A block of 8
// warps owns one 16-row tile at a time; lane = (a = lane % 4: rows 4a..4a+3, lane / 4: a slot),
// 64 slots per block, each taking every 64th 32-column x block of the tile (b code lines: one
// 16-byte load each, rows 4a..4a+3; a line's dword = one row's 8 nibbles, transposed at upload:
// a shift and mask and one dp4a per quad run), two x blocks' loads in flight. Per x block: out_r += s_r (d * int_dot -
// z_r * d * sum(q)) with its group's s, z. Rows reduce over slots by shuffles and over the 8
// warps in shared memory.
//
// Napkin (H100, 132 SMs ~1.75 GHz, ~3 TB/s): ~13 B/clk/SM of weights, ~3.2 dwords. bl4g128: 8
// weights per dword, ~5 integer instructions (3 shift/mask, 2 dp4a; 8 more when the kernel
// transposed the dword itself, before the device layout) -> ~16 of the 64 integer lanes/clk/SM;
// bl2g128: 16 weights per dword, ~12 instructions -> ~39/64.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "core/env_switch.h"
#include "kernels/cuda/bl_tiles.cuh"
#include "kernels/cuda/gemv_int8_x.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rope.cuh"
#include "quant/bl_group.h"

namespace bl::cuda {
namespace {

using namespace bltile;
using namespace int8x;  // kThreads, kWarps, kXBlock; the x staging of the one-token kernel

constexpr int kSlotsPerWarp = 8;                // lane / 4
constexpr int kSlots = kWarps * kSlotsPerWarp;  // x blocks of a tile side by side

struct XBlockScale {
  float d;     // int8 step of the block
  float dsum;  // d * sum of its int8 values: the block's share of sum_group x
};

struct BlGemvArgs {
  const uint8_t* w;
  int64_t rows, cols;
  int group;  // g
  const float* x;  // [cols, n]
  int n;           // tokens in this launch, <= kTokens
  float* out;      // [rows, n]
  const float* bias;
  bool accumulate;
};

template <int kBits, int kU = 0>
__device__ __forceinline__ void dot_lines(const uint4 (&v)[kBits], const int* xw, int (&acc)[4]) {
  if constexpr (kU < kBits) {
    acc[0] = dot_line_dword<kBits, kU>(v[kU].x, xw, acc[0]);
    acc[1] = dot_line_dword<kBits, kU>(v[kU].y, xw, acc[1]);
    acc[2] = dot_line_dword<kBits, kU>(v[kU].z, xw, acc[2]);
    acc[3] = dot_line_dword<kBits, kU>(v[kU].w, xw, acc[3]);
    dot_lines<kBits, kU + 1>(v, xw, acc);
  }
}

// The fp16 s and z of rows 4a..4a+3 of a tile group (its header's words at 8a and 32 + 8a), as floats.
struct RowScales {
  float s[4], z[4];
};
__device__ __forceinline__ RowScales row_scales(uint2 s4, uint2 z4) {
  const __half2* sh = reinterpret_cast<const __half2*>(&s4);
  const __half2* zh = reinterpret_cast<const __half2*>(&z4);
  const float2 s01 = __half22float2(sh[0]), s23 = __half22float2(sh[1]);
  const float2 z01 = __half22float2(zh[0]), z23 = __half22float2(zh[1]);
  return {{s01.x, s01.y, s23.x, s23.y}, {z01.x, z01.y, z23.x, z23.y}};
}

// res[r][t] += s_r (d int_dot_r - z_r dsum) for rows 4a + r: one 32-column x block of token t
// (x32: its int8 values in shared memory, d its step, dsum = d * sum of them) against the
// block's b code lines.
template <int kBits, int kTokens>
__device__ __forceinline__ void add_block_dots(const uint4 (&lines)[kBits], const int8_t* x32, float d, float dsum,
                                               const RowScales& rs, float (&res)[4][kTokens], int t) {
  const int4 x0 = reinterpret_cast<const int4*>(x32)[0], x1 = reinterpret_cast<const int4*>(x32)[1];
  const int xw[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
  int acc[4] = {0, 0, 0, 0};
  dot_lines<kBits>(lines, xw, acc);
#pragma unroll
  for (int r = 0; r < 4; ++r) res[r][t] += rs.s[r] * fmaf(d, static_cast<float>(acc[r]), -rs.z[r] * dsum);
}

// A lane's sum over the 8 slots of its warp that share its rows (lanes a + 4h).
__device__ __forceinline__ float sum_over_slots(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 4);
  v += __shfl_xor_sync(0xffffffffu, v, 8);
  return v + __shfl_xor_sync(0xffffffffu, v, 16);
}

template <int kBits, int kTokens>
__global__ void __launch_bounds__(kThreads) gemv_bl_kernel(BlGemvArgs p) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int64_t n_xblocks = p.cols / kXBlock;
  int8_t* xq = reinterpret_cast<int8_t*>(smem);                            // [kTokens][cols]
  auto* xs = reinterpret_cast<XBlockScale*>(smem + kTokens * p.cols);      // [kTokens][cols / 32]
  __shared__ float partial[kWarps][kTileRows][kTokens];

  pdl_wait();  // x and out belong to the kernel before (pdl.cuh)
  // Stage x: one thread per (token, 32-value block); tokens past n are zeros.
  for (int64_t i = threadIdx.x; i < kTokens * n_xblocks; i += kThreads) {
    const int t = static_cast<int>(i / n_xblocks);
    const int64_t b = i % n_xblocks;
    float v[kXBlock];
    float amax = 0.0f;
    const float4* src = reinterpret_cast<const float4*>(p.x + t * p.cols + b * kXBlock);
#pragma unroll
    for (int k = 0; k < kXBlock / 4; ++k) {
      const float4 f = t < p.n ? src[k] : make_float4(0.f, 0.f, 0.f, 0.f);
      v[4 * k] = f.x, v[4 * k + 1] = f.y, v[4 * k + 2] = f.z, v[4 * k + 3] = f.w;
    }
#pragma unroll
    for (int k = 0; k < kXBlock; ++k) amax = fmaxf(amax, fabsf(v[k]));
    const float d = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    int sum = 0;
    uint32_t words[kXBlock / 4];
#pragma unroll
    for (int k = 0; k < kXBlock / 4; ++k) {
      uint32_t wd = 0;
#pragma unroll
      for (int m = 0; m < 4; ++m) {
        const int q = __float2int_rn(v[4 * k + m] * inv);
        sum += q;
        wd |= static_cast<uint32_t>(q & 0xFF) << (8 * m);
      }
      words[k] = wd;
    }
    uint4* dst = reinterpret_cast<uint4*>(xq + t * p.cols + b * kXBlock);
    dst[0] = make_uint4(words[0], words[1], words[2], words[3]);
    dst[1] = make_uint4(words[4], words[5], words[6], words[7]);
    xs[t * n_xblocks + b] = {d, d * static_cast<float>(sum)};
  }
  __syncthreads();
  pdl_allow_next();

  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int a = lane % 4, slot = warp * kSlotsPerWarp + lane / 4;
  const int blocks_per_group = p.group / kXBlock;
  const int64_t groups = p.cols / p.group, tiles = p.rows / kTileRows;
  const int64_t tg_bytes = tile_group_bytes(kBits, p.group);
  // One 32-column x block of the tile: its b code lines (rows 4a..4a+3), then
  // res_r += s_r (d * int_dot - z_r * d * sum(q)) for its group's s, z.
  auto load = [&](const uint8_t* tile_base, int64_t xb, uint4 (&v)[kBits]) {
    const uint8_t* lines = tile_base + (xb / blocks_per_group) * tg_bytes + kHeaderBytes +
                           kLineBytes * kBits * (xb % blocks_per_group) + 16 * a;
#pragma unroll
    for (int u = 0; u < kBits; ++u) v[u] = __ldg(reinterpret_cast<const uint4*>(lines + kLineBytes * u));
  };
  auto use = [&](const uint8_t* tile_base, int64_t xb, const uint4 (&v)[kBits], float (&res)[4][kTokens]) {
    const uint8_t* tg = tile_base + (xb / blocks_per_group) * tg_bytes;
    const RowScales rs = row_scales(__ldg(reinterpret_cast<const uint2*>(tg + 8 * a)),
                                    __ldg(reinterpret_cast<const uint2*>(tg + 32 + 8 * a)));
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      const XBlockScale sc = xs[t * n_xblocks + xb];
      add_block_dots<kBits>(v, xq + t * p.cols + xb * kXBlock, sc.d, sc.dsum, rs, res, t);
    }
  };
  const int64_t xblocks_per_tile = groups * blocks_per_group;
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    float res[4][kTokens] = {};
    const uint8_t* tile_base = p.w + tile * groups * tg_bytes;
    // Two x blocks in flight per lane: both blocks' loads are issued before either is used.
    for (int64_t xb = slot; xb < xblocks_per_tile; xb += 2 * kSlots) {
      uint4 v0[kBits], v1[kBits];
      const bool second = xb + kSlots < xblocks_per_tile;
      load(tile_base, xb, v0);
      if (second) load(tile_base, xb + kSlots, v1);
      use(tile_base, xb, v0, res);
      if (second) use(tile_base, xb + kSlots, v1, res);
    }
    // Sum over the 8 slots of the warp (lanes a + 4h), then over the warps.
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        const float v = sum_over_slots(res[r][t]);
        if (lane < 4) partial[warp][4 * a + r][t] = v;
      }
    __syncthreads();
    for (int i = threadIdx.x; i < kTileRows * kTokens; i += kThreads) {
      const int r = i / kTokens, t = i % kTokens;
      if (t >= p.n) continue;
      const int64_t row = tile * kTileRows + r;
      float sum = p.bias ? p.bias[row] : 0.0f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += partial[w][r][t];
      float* o = p.out + t * p.rows + row;
      *o = p.accumulate ? *o + sum : sum;
    }
    __syncthreads();
  }
}

// ---- one token: gemv_bl_token_kernel ----

// The tiles' shape at run time (g is not a template parameter).
struct BlTiles {
  int group_xblocks_log2;  // log2(g / 32): g = 32, 64, 128
  int64_t group_bytes;     // tile_group_bytes(b, g)
  int64_t tile_bytes;      // a 16-row tile: cols / g groups
};

// One lane's share of one 32-column x block of a tile: its b code lines for rows 4a..4a+3 and
// those rows' fp16 s and z for the block's group.
template <int kBits>
struct BlUnit {
  uint4 lines[kBits];
  uint2 s, z;
};
// Units a buffer holds, for enough bytes in flight (one unit is 16 b bytes a lane). H100, 8B
// and 1B whole-model decode (docs/cuda.md, "Nineteenth session"): bl4g128 with 2 units a buffer
// against 1, +2.5 % / +6.5 %; bl2g128 with 3 against 2, -4 % (126 registers). Several tokens
// reuse each unit and hold their sums: one unit (2 at 1 bit). (Measured while the kernel still
// transposed each dword itself; not measured again since the device layout took ~8 integer
// instructions a dword out.)
template <int kBits, int kTokens>
constexpr int units_per_buffer() {
  if (kTokens > 1) return kBits == 1 ? 2 : 1;
  return kBits == 1 ? 4 : kBits <= 4 ? 2 : 1;
}

// A block's work is a sequence of (tile, k) items, the same for all its threads: tile
// blockIdx.x, then gridDim.x further, ...; k = 0 .. per_tile - 1, the lane's x blocks slot +
// (k U + j) kSlots, j < U = units_per_buffer (none past the row's end). So every thread reaches a
// tile's end at the same item, and the barrier of the reduction there is uniform. kTokens: 1,
// or 2 / 4 for p.n <= kTokens tokens without a prologue (x staged per token, [n][cols]).
// kRopeStore (one token): the rope epilogue of p.fuse.rope_store (GemvRopeStore), threads 0, 2,
// .., 14 of the reduction each storing one row pair of the tile; the angles of a head's pairs in
// shared memory, computed before the wait.
template <int kBits, int kTokens, Prologue kPro, bool kRopeStore = false>
__global__ void __launch_bounds__(kThreads, 2) gemv_bl_token_kernel(GemvArgs p, BlTiles l) {
  static_assert(!kRopeStore || kTokens == 1, "the rope epilogue: one token");
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float partial[2][kWarps][kTileRows][kTokens];  // by the parity of the block's tile count
  __shared__ float2 rope_cs[kRopeStore ? kAttentionMaxHeadDim / 2 : 1];  // read after stage_x's barrier
  if constexpr (kRopeStore) rope_angles(p.fuse.rope_store, rope_cs);
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int a = lane % 4, slot = warp * kSlotsPerWarp + lane / 4;
  const int64_t xblocks = p.cols / kXBlock, tiles = p.rows / kTileRows;
  constexpr int kUnits = units_per_buffer<kBits, kTokens>();
  using Buffer = BlUnit<kBits>[kUnits];
  const int64_t per_tile = (xblocks + kSlots * kUnits - 1) / (kSlots * kUnits);
  const int in_group_mask = (1 << l.group_xblocks_log2) - 1;
  struct Item {
    int64_t tile, k;
  };
  auto next = [&](Item it) { return it.k + 1 < per_tile ? Item{it.tile, it.k + 1} : Item{it.tile + gridDim.x, 0}; };
  auto load_unit = [&](BlUnit<kBits>& u, int64_t tile, int64_t xb) {
    if (tile >= tiles || xb >= xblocks) return;
    const uint8_t* tg = p.w + tile * l.tile_bytes + (xb >> l.group_xblocks_log2) * l.group_bytes;
    const uint8_t* lines = tg + kHeaderBytes + kLineBytes * kBits * (xb & in_group_mask) + 16 * a;
#pragma unroll
    for (int k = 0; k < kBits; ++k) u.lines[k] = __ldcs(reinterpret_cast<const uint4*>(lines + kLineBytes * k));
    u.s = __ldg(reinterpret_cast<const uint2*>(tg + 8 * a));       // shared by the group's x blocks
    u.z = __ldg(reinterpret_cast<const uint2*>(tg + 32 + 8 * a));
  };
  const int8_t* xq = reinterpret_cast<const int8_t*>(smem);                // [n][cols]
  const XScale* xs = reinterpret_cast<const XScale*>(smem + p.n * p.cols);  // [n][cols / 32]
  auto load = [&](Buffer& buf, Item it) {
#pragma unroll
    for (int j = 0; j < kUnits; ++j) load_unit(buf[j], it.tile, slot + (it.k * kUnits + j) * kSlots);
  };
  // res[r][t] += s_r (d int_dot_r - z_r d sum(q)) for rows 4a + r, token t.
  auto use_unit = [&](const BlUnit<kBits>& u, int64_t xb, float (&res)[4][kTokens]) {
    if (xb >= xblocks) return;
    const RowScales rs = row_scales(u.s, u.z);
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t >= p.n) break;
      const XScale sc = xs[t * xblocks + xb];
      add_block_dots<kBits>(u.lines, xq + t * p.cols + xb * kXBlock, sc.d, sc.d * static_cast<float>(sc.sum), rs,
                            res, t);
    }
  };
  auto use = [&](const Buffer& buf, Item it, float (&res)[4][kTokens]) {
#pragma unroll
    for (int j = 0; j < kUnits; ++j) use_unit(buf[j], slot + (it.k * kUnits + j) * kSlots, res);
  };

  // Two buffers in flight, as gemv_dp4a.cu's (swapped by unrolling, not copying).
  Buffer buf0, buf1;
  Item ia{blockIdx.x, 0}, ib = next(ia);
  load(buf0, ia);
  load(buf1, ib);  // both in flight while x is staged
  pdl_wait();      // x and out belong to the kernel before (pdl.cuh); the weights do not
  float out_scale[kTokens];
  stage_x<kTokens, kPro>(p, smem, out_scale);
  constexpr bool kScaled = kPro == Prologue::norm || kPro == Prologue::staged;

  float res[4][kTokens];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int t = 0; t < kTokens; ++t) res[r][t] = 0.0f;
  int parity = 0;
  // Sums over the warp's 8 slots (lanes a + 4h) by shuffles, over the 8 warps in shared memory;
  // one barrier a tile (the partials alternate between two buffers).
  auto finish_tile = [&](int64_t tile) {
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        const float v = sum_over_slots(res[r][t]);
        if (lane < 4) partial[parity][warp][4 * a + r][t] = v;
        res[r][t] = 0.0f;
      }
    __syncthreads();
    if constexpr (kRopeStore) {  // rows r, r + 1 of the tile (r = threadIdx.x even): a rope pair
      const int r = static_cast<int>(threadIdx.x);
      if (r < kTileRows && r % 2 == 0) {
        const int64_t row0 = tile * kTileRows + r;
        float v[2] = {0.0f, 0.0f};
#pragma unroll
        for (int w = 0; w < kWarps; ++w) v[0] += partial[parity][w][r][0], v[1] += partial[parity][w][r + 1][0];
#pragma unroll
        for (int i = 0; i < 2; ++i) v[i] = (kScaled ? v[i] * out_scale[0] : v[i]) + (p.bias ? p.bias[row0 + i] : 0.0f);
        const GemvRopeStore& e = p.fuse.rope_store;
        store_rope_pair(e, p.out, p.fuse.accumulate,
                        rope_pair_rotates(e, row0) ? rope_cs[rope_pair_index(e, row0)] : float2{}, row0, v[0], v[1]);
      }
    } else if (threadIdx.x < kTileRows * kTokens) {
      const int r = threadIdx.x / kTokens, t = threadIdx.x % kTokens;
      const int64_t row = tile * kTileRows + r;
      if (t < p.n) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) sum += partial[parity][w][r][t];
        const float v = (kScaled ? sum * out_scale[t] : sum) + (p.bias ? p.bias[row] : 0.0f);
        float* o = p.out + t * p.rows + row;
        *o = p.fuse.accumulate ? *o + v : v;
      }
    }
    parity ^= 1;
  };
  // Multiplies item ia (in buf), refills buf with the item after ib (in flight during the
  // tile's reduction); false once ia is past the end.
  auto step = [&](Buffer& buf) {
    if (ia.tile >= tiles) return false;
    use(buf, ia, res);
    const Item ic = next(ib);
    load(buf, ic);
    if (ib.k == 0) finish_tile(ia.tile);
    ia = ib, ib = ic;
    return true;
  };
  while (step(buf0) && step(buf1)) {
  }
}

size_t smem_bytes(int64_t cols, int tokens) {
  return static_cast<size_t>(tokens) * (cols + cols / kXBlock * sizeof(XBlockScale));
}

template <int kBits, int kTokens>
bool launch_tokens(const BlGemvArgs& p, cudaStream_t stream) {
  auto kernel = gemv_bl_kernel<kBits, kTokens>;
  const size_t smem = smem_bytes(p.cols, kTokens);
  static int max_dynamic = [&] {
    int device = 0, optin = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    cudaFuncAttributes attr{};
    cudaFuncGetAttributes(&attr, kernel);
    const int dyn = optin - static_cast<int>(attr.sharedSizeBytes);
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn);
    return dyn;
  }();
  if (smem > static_cast<size_t>(max_dynamic)) return false;
  int per_sm = 0, device = 0, sms = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t tiles = p.rows / kTileRows;
  const int64_t grid = std::min<int64_t>(tiles, static_cast<int64_t>(std::max(per_sm, 1)) * sms);
  launch_pdl(kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), smem, stream, p);
  return true;
}

template <int kTokens>
bool launch_bits(int bits, const BlGemvArgs& p, cudaStream_t stream) {
  bool ok = false;  // false for bits outside 1..8
  dispatch_bits(bits, [&]<int kBits>() { ok = launch_tokens<kBits, kTokens>(p, stream); });
  return ok;
}

// The opt-in shared memory kKernel may ask for beyond its static shared memory; raises its limit
// to that on the first call (once per kernel: a template on the kernel itself, not its type).
template <auto kKernel>
size_t max_dynamic_smem() {
  static const size_t max_dynamic = [] {
    const auto kernel = kKernel;
    int device = 0, optin = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    cudaFuncAttributes attr{};
    cudaFuncGetAttributes(&attr, kernel);
    const int dyn = optin - static_cast<int>(attr.sharedSizeBytes);
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, dyn);
    return static_cast<size_t>(std::max(dyn, 0));
  }();
  return max_dynamic;
}

template <int kBits, int kTokens, Prologue kPro, bool kRopeStore = false>
bool launch_token(const GemvArgs& p, const BlTiles& l, cudaStream_t stream) {
  const auto kernel = gemv_bl_token_kernel<kBits, kTokens, kPro, kRopeStore>;
  const size_t smem = static_cast<size_t>(p.n * quantized_x_bytes(p.cols));
  if (smem > max_dynamic_smem<gemv_bl_token_kernel<kBits, kTokens, kPro, kRopeStore>>()) return false;
  int per_sm = 0, device = 0, sms = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int64_t tiles = p.rows / kTileRows;
  const int64_t grid = std::min<int64_t>(tiles, static_cast<int64_t>(std::max(per_sm, 1)) * sms);
  launch_pdl(kernel, dim3(static_cast<unsigned>(grid)), dim3(kThreads), smem, stream, p, l);
  return true;
}

// Several tokens only at 1..4 bits: wider codes with 2 or 4 tokens' sums spilled 128-952 bytes
// (ptxas, at the 128 registers of 2 blocks an SM); those run on gemv_bl_kernel.
template <int kTokens, Prologue kPro, bool kRopeStore = false>
bool launch_token_bits(int bits, const GemvArgs& p, const BlTiles& l, cudaStream_t stream) {
  switch (bits) {
    case 1: return launch_token<1, kTokens, kPro, kRopeStore>(p, l, stream);
    case 2: return launch_token<2, kTokens, kPro, kRopeStore>(p, l, stream);
    case 3: return launch_token<3, kTokens, kPro, kRopeStore>(p, l, stream);
    case 4: return launch_token<4, kTokens, kPro, kRopeStore>(p, l, stream);
  }
  if constexpr (kTokens == 1) {
    switch (bits) {
      case 5: return launch_token<5, 1, kPro, kRopeStore>(p, l, stream);
      case 6: return launch_token<6, 1, kPro, kRopeStore>(p, l, stream);
      case 7: return launch_token<7, 1, kPro, kRopeStore>(p, l, stream);
      case 8: return launch_token<8, 1, kPro, kRopeStore>(p, l, stream);
    }
  }
  return false;
}

BlTiles tiles_of(const WeightView& w) {
  const quant::BlGroupShape shape = *quant::bl_group_shape(w.dtype);
  BlTiles l;
  l.group_xblocks_log2 = shape.group_size == 32 ? 0 : shape.group_size == 64 ? 1 : 2;
  l.group_bytes = tile_group_bytes(shape.bits, shape.group_size);
  l.tile_bytes = w.cols / shape.group_size * l.group_bytes;
  return l;
}

// p.n tokens on gemv_bl_token_kernel: one with the prologue p carries, or 2..4 without one.
// The rope epilogue (one token) with x staged by the quantize kernel or the norm inside only
// (a QKV GEMV's prologues).
bool launch_token_gemv(const WeightView& w, const GemvArgs& p, cudaStream_t stream) {
  const int bits = quant::bl_group_shape(w.dtype)->bits;
  const BlTiles l = tiles_of(w);
  if (p.fuse.rope_store.positions) {
    if (p.n != 1 || p.attention.buffer || p.fuse.up) return false;
    if (p.x_staged) return launch_token_bits<1, Prologue::staged, true>(bits, p, l, stream);
    if (p.fuse.norm) return launch_token_bits<1, Prologue::norm, true>(bits, p, l, stream);
    return false;
  }
  if (p.n == 2) return launch_token_bits<2, Prologue::none>(bits, p, l, stream);
  if (p.n > 2) return launch_token_bits<4, Prologue::none>(bits, p, l, stream);
  if (p.attention.buffer) return launch_token_bits<1, Prologue::attention>(bits, p, l, stream);
  if (p.x_staged) return launch_token_bits<1, Prologue::staged>(bits, p, l, stream);
  if (p.fuse.norm) return launch_token_bits<1, Prologue::norm>(bits, p, l, stream);
  if (p.fuse.up) return launch_token_bits<1, Prologue::gate>(bits, p, l, stream);
  return launch_token_bits<1, Prologue::none>(bits, p, l, stream);
}

// BITLIGHT_CUDA_BL_TOKEN=0: every token count runs on gemv_bl_kernel, with the prologues as
// plain ops and the attention's combine kernel (comparisons).
const bool token_kernel_enabled = env_choice("BITLIGHT_CUDA_BL_TOKEN", {"0", "1"}) != "0";

}  // namespace

bool gemv_bl_token_applies(const WeightView& w) {
  const auto shape = quant::bl_group_shape(w.dtype);
  if (!token_kernel_enabled || !shape || w.rows < kTileRows || w.rows % kTileRows != 0 || w.cols % 256 != 0 ||
      w.cols % shape->group_size != 0 || !aligned16(w.data))
    return false;
  int device = 0, optin = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  // 2 KB for the kernel's static shared memory (partial sums, the norm's warp sums).
  return static_cast<size_t>(quantized_x_bytes(w.cols)) + 2048 <= static_cast<size_t>(optin);
}

bool launch_gemv_bl(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                    const GemvFusion& fuse, cudaStream_t stream) {
  const auto shape = quant::bl_group_shape(w.dtype);
  if (!shape || n_tokens < 1 || w.rows % kTileRows != 0 || w.cols % shape->group_size != 0 || !aligned16(x) ||
      !aligned16(w.data))
    return false;
  const bool token_kernel = gemv_bl_token_applies(w);
  if (n_tokens == 1 && token_kernel && aligned16(fuse.norm) && aligned16(fuse.up)) {
    const GemvArgs p{static_cast<const uint8_t*>(w.data), 0, w.rows, w.cols, x, 1, out, bias, fuse};
    return launch_token_gemv(w, p, stream);
  }
  if (fuse.prologue() || fuse.rope_store.positions) return false;
  if (w.rows == 0) return true;
  if (launch_gemv_bl_skinny(w, x, n_tokens, out, bias, fuse.accumulate, stream)) return true;
  for (int t0 = 0; t0 < n_tokens; t0 += kBlGemvMaxTokens) {
    const int n = std::min(kBlGemvMaxTokens, n_tokens - t0);
    const GemvArgs tp{static_cast<const uint8_t*>(w.data), 0, w.rows, w.cols, x + t0 * w.cols, n, out + t0 * w.rows,
                      bias, GemvFusion{.accumulate = fuse.accumulate}};
    if (token_kernel && launch_token_gemv(w, tp, stream)) continue;
    const BlGemvArgs p{static_cast<const uint8_t*>(w.data), w.rows, w.cols, shape->group_size, x + t0 * w.cols, n,
                       out + t0 * w.rows, bias, fuse.accumulate};
    const bool ok = n == 1 ? launch_bits<1>(shape->bits, p, stream) : launch_bits<4>(shape->bits, p, stream);
    if (!ok) return false;
  }
  return true;
}

bool launch_gemv_bl_x_quantized_once(const WeightView& w, const float* x, int n_tokens, float* out,
                                     const float* bias, const GemvFusion& fuse, void* scratch,
                                     size_t scratch_bytes, cudaStream_t stream) {
  if (n_tokens != 1 || !gemv_bl_token_applies(w) || !aligned16(x) || !aligned16(fuse.norm) ||
      !aligned16(fuse.up) || !aligned16(scratch) ||
      scratch_bytes < static_cast<size_t>(quantized_x_once_bytes(w.cols)) || !quantize_once_fits(w.cols))
    return false;
  if (fuse.stage_next.dst) return false;  // the bl GEMV does not stage the next x
  const StagedX staged = launch_quantize_x_once(x, fuse, w.cols, scratch, stream);
  return launch_gemv_bl_staged(w, staged, out, bias, fuse, stream);
}

bool launch_gemv_bl_staged(const WeightView& w, const StagedX& x, float* out, const float* bias,
                           const GemvFusion& fuse, cudaStream_t stream) {
  if (!gemv_bl_token_applies(w) || x.n_partials > kMaxStagedPartials || fuse.stage_next.dst) return false;
  GemvArgs p{static_cast<const uint8_t*>(w.data), 0, w.rows, w.cols, nullptr, 1, out, bias, fuse};
  p.x_staged = x.bytes;
  p.sumsq_partials = x.sumsq_partials;
  p.n_partials = x.n_partials;
  return launch_token_gemv(w, p, stream);
}

bool gemv_bl_after_attention_applies(const WeightView& w, int n_head, int head_dim) {
  return gemv_bl_token_applies(w) && n_head > 0 && head_dim > 0 && head_dim % 8 == 0 &&
         static_cast<int64_t>(n_head) * head_dim == w.cols;
}

bool launch_gemv_bl_after_attention(const WeightView& w, const AttentionSums& sums, float* out, const float* bias,
                                    bool accumulate, cudaStream_t stream) {
  if (!sums.buffer || !gemv_bl_after_attention_applies(w, sums.n_head, sums.head_dim)) return false;
  GemvArgs p{static_cast<const uint8_t*>(w.data), 0, w.rows, w.cols, sums.num(), 1, out, bias,
             GemvFusion{.accumulate = accumulate}};
  p.attention = sums;
  return launch_token_gemv(w, p, stream);
}

}  // namespace bl::cuda
