// Decode GEMV on bl<b>g<g> weights read as stored (bl_tiles.cuh): out[rows, n] = W x, n <= 4
// per launch (launch_gemv_bl loops over groups of 4 tokens).
//
// x is quantized to int8 per 32 values in shared memory by every block (as gemv_dp4a.cu: each
// x_k off by up to max|x_block| / 254), with d (scale) and d * sum(q) per block. A block of 8
// warps owns one 16-row tile at a time; lane = (a = lane % 4: rows 4a..4a+3, lane / 4: a slot),
// 64 slots per block, each taking every 64th 32-column x block of the tile (b code lines: one
// 16-byte load each, rows 4a..4a+3; a line's dword = one row's 8 nibbles: transpose + one dp4a
// per quad run), two x blocks' loads in flight. Per x block: out_r += s_r (d * int_dot -
// z_r * d * sum(q)) with its group's s, z. Rows reduce over slots by shuffles and over the 8
// warps in shared memory.
//
// Napkin (H100, 132 SMs ~1.7 GHz, ~3 TB/s): ~13 B/clk/SM of weights. bl4g128: 8 weights per
// dword, ~13 integer instructions (8 transpose, 3 shift/mask, 2 dp4a) -> ~37 of the 64
// integer lanes/clk/SM; bl2g128: 16 weights per dword, ~20 instructions -> ~53/64. Both
// should be able to stream near the bandwidth if enough loads are in flight.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/cuda/bl_tiles.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"
#include "quant/bl_group.h"

namespace bl::cuda {
namespace {

using namespace bltile;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kSlotsPerWarp = 8;                // lane / 4
constexpr int kSlots = kWarps * kSlotsPerWarp;  // x blocks of a tile side by side
constexpr int kXBlock = 32;

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
    const uint2 s4 = __ldg(reinterpret_cast<const uint2*>(tg + 8 * a));       // fp16 s of rows 4a..4a+3
    const uint2 z4 = __ldg(reinterpret_cast<const uint2*>(tg + 32 + 8 * a));  // fp16 z
    const __half2* sh = reinterpret_cast<const __half2*>(&s4);
    const __half2* zh = reinterpret_cast<const __half2*>(&z4);
    const float2 s01 = __half22float2(sh[0]), s23 = __half22float2(sh[1]);
    const float2 z01 = __half22float2(zh[0]), z23 = __half22float2(zh[1]);
    const float s[4] = {s01.x, s01.y, s23.x, s23.y}, z[4] = {z01.x, z01.y, z23.x, z23.y};
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      int xw[8];
      const int4* xsrc = reinterpret_cast<const int4*>(xq + t * p.cols + xb * kXBlock);
      const int4 x0 = xsrc[0], x1 = xsrc[1];
      xw[0] = x0.x, xw[1] = x0.y, xw[2] = x0.z, xw[3] = x0.w;
      xw[4] = x1.x, xw[5] = x1.y, xw[6] = x1.z, xw[7] = x1.w;
      int acc[4] = {0, 0, 0, 0};
      dot_lines<kBits>(v, xw, acc);
      const XBlockScale sc = xs[t * n_xblocks + xb];
#pragma unroll
      for (int r = 0; r < 4; ++r) res[r][t] += s[r] * fmaf(sc.d, static_cast<float>(acc[r]), -z[r] * sc.dsum);
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
        float v = res[r][t];
        v += __shfl_xor_sync(0xffffffffu, v, 4);
        v += __shfl_xor_sync(0xffffffffu, v, 8);
        v += __shfl_xor_sync(0xffffffffu, v, 16);
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
  switch (bits) {
    case 1: return launch_tokens<1, kTokens>(p, stream);
    case 2: return launch_tokens<2, kTokens>(p, stream);
    case 3: return launch_tokens<3, kTokens>(p, stream);
    case 4: return launch_tokens<4, kTokens>(p, stream);
    case 5: return launch_tokens<5, kTokens>(p, stream);
    case 6: return launch_tokens<6, kTokens>(p, stream);
    case 7: return launch_tokens<7, kTokens>(p, stream);
    case 8: return launch_tokens<8, kTokens>(p, stream);
    default: return false;
  }
}

}  // namespace

bool launch_gemv_bl(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                    bool accumulate, cudaStream_t stream) {
  const auto shape = quant::bl_group_shape(w.dtype);
  if (!shape || n_tokens < 1 || w.rows % kTileRows != 0 || w.cols % shape->group_size != 0 ||
      reinterpret_cast<uintptr_t>(x) % 16 != 0 || reinterpret_cast<uintptr_t>(w.data) % 16 != 0)
    return false;
  if (w.rows == 0) return true;
  for (int t0 = 0; t0 < n_tokens; t0 += kBlGemvMaxTokens) {
    const int n = std::min(kBlGemvMaxTokens, n_tokens - t0);
    const BlGemvArgs p{static_cast<const uint8_t*>(w.data), w.rows, w.cols, shape->group_size, x + t0 * w.cols, n,
                       out + t0 * w.rows, bias, accumulate};
    const bool ok = n == 1 ? launch_bits<1>(shape->bits, p, stream) : launch_bits<4>(shape->bits, p, stream);
    if (!ok) return false;
  }
  return true;
}

}  // namespace bl::cuda
