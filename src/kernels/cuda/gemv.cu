// Fused dequantize + matrix-vector product for decode (1..16 tokens), every weight format, fp32
// arithmetic. launch_gemv tries the tensor-core kernel (8..16 tokens) and the dp4a kernel (block
// formats, 1..4 tokens, gemv_dp4a.cu) first; this one serves the plain types and the rest.
//
// out[r, t] = sum_k W[r, k] * x[k, t]. A block of 256 threads owns kRows adjacent rows; thread
// i decodes pieces i, i + 256, ... of each row (8 weights each, gemv_pieces.cuh, so the block
// reads the rows front to back with coalesced loads) and multiplies them with the matching x
// of every token: each weight byte is read once from HBM for the whole batch, and each x
// float4 loaded from L1 serves kRows rows. Partial sums are reduced with warp shuffles, then
// across the 8 warps through shared memory.
//
// Napkin math (H100, ~3.0 TB/s read): 4096x4096 Q4_0 is 9.4 MB -> 3.1 us at the limit; the
// 8B lm_head 4096x128256 Q4_0 is 296 MB -> 99 us. L1 traffic for x is 4 B x n_tokens /
// kRows per weight: 1 B at batch 1 (under the ~30 TB/s L1 limit at 5e12 4-bit weights/s) but
// 16 B at batch 16, and 16 fp32 FMAs per weight cap batch 16 near 2e12 weights/s: batched
// decode needs the tensor-core skinny GEMM (docs/cuda.md).
#include <cuda_runtime.h>

#include "kernels/cuda/attention_sums.cuh"
#include "kernels/cuda/gemv_pieces.cuh"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/silu.cuh"
#include "quant/bl_group.h"

namespace bl::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kGemvThreads = 256;  // 8 warps per block, all on the same rows
constexpr int kGemvWarps = kGemvThreads / kWarp;
constexpr int kRows = 4;           // rows per block (per warp with kWarpRows): each x float4 serves 4 rows
// Rows of at most this many pieces (1024 columns) take one warp per kRows rows instead of the
// whole block: a block on 4 rows of 80 pieces (Gemma 3 270M's 640 columns) left 176 of its 256
// threads idle and paid a block-wide reduction for 4 outputs (fp32 GEMV ~12 us a call there,
// against ~2 us for the dp4a GEMV on the same layer's tiled matrices; docs/cuda.md).
constexpr int64_t kWarpRowsMaxPieces = 128;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float dot4(const float* w, float4 x, float acc) {
  acc = fmaf(w[0], x.x, acc);
  acc = fmaf(w[1], x.y, acc);
  acc = fmaf(w[2], x.z, acc);
  return fmaf(w[3], x.w, acc);
}

// The prologue of a fused GEMV (GemvFusion) on one token, for the plain types: x' = x * norm
// (the 1 / rms factor is applied to the finished sums: out = (W (x * norm)) / rms) or
// x' = silu(x) * up, computed per piece from x and the second operand as the pieces need them,
// so the separate rms_norm / silu_mul kernel and its boundary go (docs/cuda.md).
// attention: x is a split-KV attention's sums (AttentionSums, attention_sums.cuh), p.x their num.
enum class Fp32Prologue { none, norm, gate, mul, attention };  // mul: x is silu(gate) already (GemvFusion)

__device__ __forceinline__ float squares4(float4 v) { return v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w; }
template <Fp32Prologue kPro>
__device__ __forceinline__ float4 prologue4(float4 x, const float* second, int64_t at) {
  if constexpr (kPro == Fp32Prologue::none) return x;
  const float4 v = __ldg(reinterpret_cast<const float4*>(second + at));
  if constexpr (kPro == Fp32Prologue::norm || kPro == Fp32Prologue::mul)
    return make_float4(x.x * v.x, x.y * v.y, x.z * v.z, x.w * v.w);
  return make_float4(silu(x.x) * v.x, silu(x.y) * v.y, silu(x.z) * v.z, silu(x.w) * v.w);
}

// kTokens: compile-time upper bound of the batch (register arrays need constant sizes); the
// runtime p.n <= kTokens. kVec: rows and x are 16-byte aligned and cols % 8 == 0, so the
// pieces apply; otherwise (plain types with odd rows only) every weight goes the scalar way.
// kTiled: the weight is in the tiled layout (weight_layout.cuh). kPro: the prologue (one token,
// kVec, so cols % 8 == 0 and no scalar tail). kWarpRows: each warp owns kRows rows of its own
// (a block covers 8 x kRows rows), its lanes taking pieces lane, lane + 32, ..., and the sums
// meet in warp shuffles only (short rows, kWarpRowsMaxPieces). kRopeStore (one token, a block
// on its 4 rows): the rope epilogue of p.fuse.rope_store (GemvRopeStore), threads 0 and 2 each
// storing one row pair; the pair's angle computed before the wait (the positions come from the
// host before the step's first kernel), so its fp64 pow and sincos overlap the first loads.
template <DType T, int kTokens, bool kVec, bool kTiled, Fp32Prologue kPro = Fp32Prologue::none, bool kWarpRows = false,
          bool kRopeStore = false>
__global__ void __launch_bounds__(kGemvThreads) gemv_kernel(GemvArgs p) {
  static_assert(kPro == Fp32Prologue::none || (kTokens == 1 && kVec), "prologues: one token, whole pieces");
  static_assert(!kRopeStore || (kTokens == 1 && !kWarpRows && kRows % 2 == 0), "the rope epilogue: row pairs of a block");
  constexpr int kLanes = kWarpRows ? kWarp : kGemvThreads;  // threads sharing the rows
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int tid = kWarpRows ? lane : static_cast<int>(threadIdx.x);
  const int64_t row0 = (kWarpRows ? static_cast<int64_t>(blockIdx.x) * kGemvWarps + warp : blockIdx.x) * kRows;
  // Rows past the end read the last row again (a valid address) and are not stored.
  const uint8_t* rowp[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) rowp[r] = p.w + min(row0 + r, p.rows - 1) * p.row_bytes;

  float acc[kRows][kTokens];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int t = 0; t < kTokens; ++t) acc[r][t] = 0.0f;

  const int64_t n_pieces = kVec ? p.cols / kPiece : 0;
  // With the norm, this thread's part of sum x^2: the block's pieces cover x once, so the
  // block's sum is the whole one (no second pass over x).
  float sumsq = 0.0f;
  // Multiplies one piece of each row with every token's x.
  auto multiply = [&](const float (&w)[kRows][kPiece], int64_t o0, int64_t o1) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t >= p.n) break;
      const float* xt = p.x + t * p.cols;
      const float* second = kPro == Fp32Prologue::norm ? p.fuse.norm : p.fuse.up;
      const float4 xa_in = __ldg(reinterpret_cast<const float4*>(xt + o0));
      const float4 xb_in = __ldg(reinterpret_cast<const float4*>(xt + o1));
      if constexpr (kPro == Fp32Prologue::norm) sumsq += squares4(xa_in) + squares4(xb_in);
      float4 xa, xb;
      if constexpr (kPro == Fp32Prologue::attention) {
        // A piece of a plain type or Q8_0 is 8 consecutive values (o1 = o0 + 4); the other
        // block formats' halves lie apart (o1 = o0 + 16 or + 32), each 4 values of one head.
        float v[8] = {xa_in.x, xa_in.y, xa_in.z, xa_in.w, xb_in.x, xb_in.y, xb_in.z, xb_in.w};
        if (o1 == o0 + 4) {
          attention_values<8>(p.attention, o0, v);
        } else {
          attention_values<4>(p.attention, o0, v);
          attention_values<4>(p.attention, o1, v + 4);
        }
        xa = make_float4(v[0], v[1], v[2], v[3]), xb = make_float4(v[4], v[5], v[6], v[7]);
      } else {
        xa = prologue4<kPro>(xa_in, second, o0), xb = prologue4<kPro>(xb_in, second, o1);
      }
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r][t] = dot4(w[r] + 4, xb, dot4(w[r], xa, acc[r][t]));
    }
  };
  // Launched with PDL (pdl.cuh): the first piece of each row is read before waiting for the
  // kernel before (x and out are its; the weights are not), so a block of the first wave has
  // its loads in flight while that kernel finishes.
  float w_first[kRows][kPiece];
  int64_t f0 = 0, f1 = 0;
  const bool has_first = tid < n_pieces;
  if (has_first) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) Piece<T, kTiled>::load(rowp[r], tid, w_first[r], f0, f1);
  }
  float2 rope_angle{};  // threads 0 and 2: the angle of the pair at row0 + threadIdx.x
  if constexpr (kRopeStore) {
    const GemvRopeStore& e = p.fuse.rope_store;
    const int64_t pair_row = row0 + threadIdx.x;
    if (threadIdx.x < kRows && threadIdx.x % 2 == 0 && pair_row < p.rows && rope_pair_rotates(e, pair_row))
      rope_cos_sin(static_cast<double>(e.positions[0]), rope_pair_index(e, pair_row), e.rope, rope_angle.x,
                   rope_angle.y);
  }
  pdl_wait();
  pdl_allow_next();
  if (has_first) multiply(w_first, f0, f1);
#pragma unroll 2
  for (int64_t i = tid + kLanes; i < n_pieces; i += kLanes) {
    float w[kRows][kPiece];
    int64_t o0 = 0, o1 = 0;
#pragma unroll
    for (int r = 0; r < kRows; ++r) Piece<T, kTiled>::load(rowp[r], i, w[r], o0, o1);
    multiply(w, o0, o1);
  }
  // Weights the pieces did not cover: the row tail (cols % 8) or, without kVec, the whole row;
  // plain types only (block formats always have whole, aligned pieces).
  if constexpr (is_plain_type<T>()) {
    for (int64_t k = n_pieces * kPiece + tid; k < p.cols; k += kLanes) {
      float wk[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) wk[r] = Decoder<T>::element(rowp[r], k);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (t >= p.n) break;
        const float xv = p.x[t * p.cols + k];
#pragma unroll
        for (int r = 0; r < kRows; ++r) acc[r][t] = fmaf(wk[r], xv, acc[r][t]);
      }
    }
  }

  // out[row, t] = s / rms (with the norm) + bias, then silu below silu_rows, stored or added.
  auto store = [&](int r, int t, float s, float out_scale) {
    const int64_t row = row0 + r;
    if (t >= p.n || row >= p.rows) return;
    s = s * out_scale + (p.bias ? p.bias[row] : 0.0f);
    if (row < p.fuse.silu_rows) s = silu(s);
    float* o = p.out + t * p.rows + row;
    *o = p.fuse.accumulate ? *o + s : s;
  };
  if constexpr (kWarpRows) {  // the warp's lanes covered x once: its sums are whole
    const float out_scale =
        kPro == Fp32Prologue::norm ? rsqrtf(warp_sum(sumsq) / static_cast<float>(p.cols) + p.fuse.eps) : 1.0f;
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        const float s = warp_sum(acc[r][t]);
        if (lane == 0) store(r, t, s, out_scale);
      }
  } else {
    // Per warp: the rows' sums, then (with the norm) its part of sum x^2.
    __shared__ float partial[kGemvWarps][kRows * kTokens + 1];
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        const float s = warp_sum(acc[r][t]);
        if (lane == 0) partial[warp][r * kTokens + t] = s;
      }
    if constexpr (kPro == Fp32Prologue::norm) {
      const float s = warp_sum(sumsq);
      if (lane == 0) partial[warp][kRows * kTokens] = s;
    }
    __syncthreads();
    // The norm's 1 / rms scales the finished sums: out = (W (x * norm)) / rms.
    float out_scale = 1.0f;
    if constexpr (kPro == Fp32Prologue::norm) {
      float total = 0.0f;
#pragma unroll
      for (int w = 0; w < kGemvWarps; ++w) total += partial[w][kRows * kTokens];
      out_scale = rsqrtf(total / static_cast<float>(p.cols) + p.fuse.eps);
    }
    if constexpr (kRopeStore) {  // rows row0 + i, row0 + i + 1 (i = threadIdx.x), whole pairs where it applies
      const int i = static_cast<int>(threadIdx.x);
      if (i < kRows && i % 2 == 0 && row0 + i + 1 < p.rows) {
        float v[2] = {0.0f, 0.0f};
#pragma unroll
        for (int w = 0; w < kGemvWarps; ++w) v[0] += partial[w][i], v[1] += partial[w][i + 1];
#pragma unroll
        for (int r = 0; r < 2; ++r) v[r] = v[r] * out_scale + (p.bias ? p.bias[row0 + i + r] : 0.0f);
        store_rope_pair(p.fuse.rope_store, p.out, p.fuse.accumulate, rope_angle, row0 + i, v[0], v[1]);
      }
    } else {
      for (int idx = threadIdx.x; idx < kRows * kTokens; idx += kGemvThreads) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < kGemvWarps; ++w) s += partial[w][idx];
        store(idx / kTokens, idx % kTokens, s, out_scale);
      }
    }
  }
}

// Whether one token's GEMV takes a warp per kRows rows (short rows), and its grid.
bool takes_warp_rows(const GemvArgs& p, bool vec) { return vec && p.cols / kPiece <= kWarpRowsMaxPieces; }
dim3 gemv_grid(const GemvArgs& p, bool warp_rows) {
  const int64_t rows_per_block = warp_rows ? int64_t{kRows} * kGemvWarps : kRows;
  return dim3(static_cast<unsigned>((p.rows + rows_per_block - 1) / rows_per_block));
}

// Launches gemv_kernel<T, 1, true, kTiled, kPro> one token at a time, warp rows where they apply.
template <DType T, bool kTiled, Fp32Prologue kPro>
void launch_one_token(const GemvArgs& p, cudaStream_t stream) {
  const bool warp_rows = takes_warp_rows(p, true);
  if (warp_rows)
    launch_pdl(gemv_kernel<T, 1, true, kTiled, kPro, true>, gemv_grid(p, true), dim3(kGemvThreads), 0, stream, p);
  else
    launch_pdl(gemv_kernel<T, 1, true, kTiled, kPro>, gemv_grid(p, false), dim3(kGemvThreads), 0, stream, p);
}
// The same for a weight stored tiled or not (weight_layout.cuh).
template <DType T, Fp32Prologue kPro>
void launch_one_token(const GemvArgs& p, bool tiled, cudaStream_t stream) {
  if constexpr (is_tileable<T>()) {
    if (tiled) return launch_one_token<T, true, kPro>(p, stream);
  }
  launch_one_token<T, false, kPro>(p, stream);
}

// One token with a prologue, plain types with whole pieces (launch_cuda_core_gemv checks).
template <DType T>
void launch_with_prologue(const GemvArgs& p, bool tiled, cudaStream_t stream) {
  if (p.fuse.norm)
    launch_one_token<T, Fp32Prologue::norm>(p, tiled, stream);
  else if (p.fuse.gate_activated)
    launch_one_token<T, Fp32Prologue::mul>(p, tiled, stream);
  else
    launch_one_token<T, Fp32Prologue::gate>(p, tiled, stream);
}

template <DType T>
void launch_after_attention(const GemvArgs& p, bool tiled, cudaStream_t stream) {
  launch_one_token<T, Fp32Prologue::attention>(p, tiled, stream);
}

template <DType T, int kTokens>
void launch_for_tokens(const GemvArgs& p, bool vec, bool tiled, cudaStream_t stream) {
  if constexpr (kTokens == 1) {
    if (takes_warp_rows(p, vec)) return launch_one_token<T, Fp32Prologue::none>(p, tiled, stream);
  }
  const dim3 grid = gemv_grid(p, false);
  if constexpr (is_tileable<T>()) {
    if (tiled) {
      launch_pdl(gemv_kernel<T, kTokens, true, true>, grid, dim3(kGemvThreads), 0, stream, p);
      return;
    }
  }
  if (vec) {
    launch_pdl(gemv_kernel<T, kTokens, true, false>, grid, dim3(kGemvThreads), 0, stream, p);
  } else if constexpr (is_plain_type<T>()) {
    launch_pdl(gemv_kernel<T, kTokens, false, false>, grid, dim3(kGemvThreads), 0, stream, p);
  }
}

}  // namespace

bool weight_format_supported(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_1: case DType::Q5_0: case DType::Q5_1: case DType::Q4_K: case DType::Q5_K: case DType::Q6_K:
      return true;
    default: return quant::is_bl_group(t);
  }
}

namespace {

bool g_block_fp32_prologue = true;

// F32 / F16 / BF16 (is_plain_type for a runtime dtype).
bool is_plain(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// Whether the fp32 GEMV takes a norm / SwiGLU prologue for a block-format weight: every block
// format but bl<b>g<g> (gemv_bl.cu), x and the second operand 16-byte aligned.
bool block_prologue_applies(const WeightView& w, const float* x, const float* second) {
  const bool plain = is_plain(w.dtype);
  return g_block_fp32_prologue && !plain && !quant::is_bl_group(w.dtype) && weight_format_supported(w.dtype) &&
         aligned16(x) && aligned16(second);
}

// The CUDA-core paths of launch_gemv (dp4a, then fp32) with a fusion the fp32 kernel takes
// (accumulate) or none.
bool launch_cuda_core_gemv(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                           const GemvFusion& fuse, cudaStream_t stream) {
  if (launch_gemv_dp4a(w, x, n_tokens, out, bias, stream, fuse)) return true;
  const GemvArgs p{static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, x, n_tokens, out, bias, fuse};
  // Pieces need 16-byte aligned x (and rows, for the plain types) and cols % 8 == 0; block
  // formats always qualify given an aligned x (their rows are whole blocks of 32 or 256).
  const bool aligned_x = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  const bool plain = is_plain(w.dtype);
  const bool vec = aligned_x && w.cols % kPiece == 0 &&
                   (!plain || (w.row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(w.data) % 16 == 0));
  if (fuse.prologue()) {
    // A norm or SwiGLU prologue for one token: the plain types, and the block formats the dp4a
    // kernel did not take (Q5_0 / Q5_1, rows that are not whole tiles: Gemma 3 270M's 640
    // columns, SmolLM2's 576), which ran a norm kernel of their own before. The second operand
    // is read as float4 like x.
    const float* second = fuse.norm ? fuse.norm : fuse.up;
    if (n_tokens != 1 || !(gemv_fp32_prologue_applies(w, x, second) || block_prologue_applies(w, x, second)))
      return false;
    return dispatch_weight_format(w.dtype, [&]<DType T>() { launch_with_prologue<T>(p, w.tiled, stream); });
  }
  if (!vec && !plain) return false;
  return dispatch_weight_format(w.dtype, [&]<DType T>() {
    if (n_tokens <= 1) launch_for_tokens<T, 1>(p, vec, w.tiled, stream);
    else if (n_tokens <= 2) launch_for_tokens<T, 2>(p, vec, w.tiled, stream);
    else if (n_tokens <= 4) launch_for_tokens<T, 4>(p, vec, w.tiled, stream);
    else if (n_tokens <= 8) launch_for_tokens<T, 8>(p, vec, w.tiled, stream);
    else launch_for_tokens<T, 16>(p, vec, w.tiled, stream);
  });
}

// Whether launch_gemv would take the tensor-core kernel (which has no fusions).
bool takes_tensor_cores(const WeightView& w, int n_tokens) {
  return n_tokens >= 8 && tensor_core_gemv_enabled() && w.rows >= 2048 && !is_plain(w.dtype);
}

// The one-token fp32 GEMV's rope epilogue: plain types with whole pieces in block mode (rows
// of more than kWarpRowsMaxPieces pieces: 4 rows, 2 pairs, a block).
bool fp32_rope_store_applies(const WeightView& w) {
  return is_plain(w.dtype) && w.cols % kPiece == 0 && w.cols / kPiece > kWarpRowsMaxPieces && w.row_bytes % 16 == 0 &&
         aligned16(w.data);
}

// One token of a plain-type weight with the rope epilogue and the norm inside or no prologue.
bool launch_fp32_rope_store(const WeightView& w, const float* x, float* out, const float* bias,
                            const GemvFusion& fuse, cudaStream_t stream) {
  if (!fp32_rope_store_applies(w) || fuse.up || fuse.silu_rows || fuse.gate_activated || !aligned16(x) ||
      !aligned16(fuse.norm))
    return false;
  const GemvArgs p{static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, x, 1, out, bias, fuse};
  return dispatch_weight_format(w.dtype, [&]<DType T>() {
    if constexpr (is_plain_type<T>()) {
      const dim3 grid = gemv_grid(p, false);
      if (fuse.norm)
        launch_pdl(gemv_kernel<T, 1, true, false, Fp32Prologue::norm, false, true>, grid, dim3(kGemvThreads), 0,
                   stream, p);
      else
        launch_pdl(gemv_kernel<T, 1, true, false, Fp32Prologue::none, false, true>, grid, dim3(kGemvThreads), 0,
                   stream, p);
    }
  });
}

}  // namespace

void set_block_fp32_prologue(bool enabled) { g_block_fp32_prologue = enabled; }

bool gemv_rope_store_applies(const WeightView& w, const GemvRopeStore& e) {
  const RopeLaunch& r = e.rope;
  return (gemv_dp4a_applies(w, 1) || fp32_rope_store_applies(w) || gemv_bl_token_applies(w)) && e.positions &&
         e.k_cache && e.v_cache &&
         !r.neox && r.head_dim > 0 && r.head_dim % 2 == 0 && r.n_dims > 0 && r.n_dims % 2 == 0 &&
         r.n_dims <= r.head_dim && r.n_dims <= kAttentionMaxHeadDim && e.q_rows > 0 && e.kv_rows > 0 &&
         e.q_rows % r.head_dim == 0 && e.kv_rows % r.head_dim == 0 && w.rows == e.q_rows + 2 * e.kv_rows;
}

bool gemv_fp32_prologue_applies(const WeightView& w, const float* x, const float* second) {
  const bool plain = is_plain(w.dtype);
  return plain && w.cols % kPiece == 0 && w.row_bytes % 16 == 0 && aligned16(w.data) && aligned16(x) && aligned16(second);
}

bool launch_gemv(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                 cudaStream_t stream) {
  if (quant::is_bl_group(w.dtype)) return launch_gemv_bl(w, x, n_tokens, out, bias, {}, stream);
  if (tensor_core_gemv_enabled() && launch_gemv_skinny(w, x, n_tokens, out, bias, false, stream)) return true;
  if (n_tokens >= 2 && tensor_core_gemv_enabled() && launch_gemv_tensor_core(w, x, n_tokens, out, bias, stream))
    return true;
  return launch_cuda_core_gemv(w, x, n_tokens, out, bias, {}, stream);
}

bool launch_gemv_fused(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                       const GemvFusion& fuse, cudaStream_t stream) {
  if (n_tokens < 1 || n_tokens > kGemvMaxTokens) return false;
  // The rope epilogue (gemv_rope_store_applies): the dp4a kernel's, the fp32 one's or the bl
  // one's, no other path.
  if (fuse.rope_store.positions)
    return n_tokens == 1 && (launch_gemv_dp4a(w, x, 1, out, bias, stream, fuse) ||
                             launch_fp32_rope_store(w, x, out, bias, fuse, stream) ||
                             (quant::is_bl_group(w.dtype) && launch_gemv_bl(w, x, 1, out, bias, fuse, stream)));
  // bl weights: the residual add in the epilogue; a norm / SwiGLU prologue for one token where
  // the bl GEMV stages x as the dp4a one does (gemv_bl_token_applies), else false.
  if (quant::is_bl_group(w.dtype)) return launch_gemv_bl(w, x, n_tokens, out, bias, fuse, stream);
  if (!fuse.prologue() && tensor_core_gemv_enabled() &&
      launch_gemv_skinny(w, x, n_tokens, out, bias, fuse.accumulate, stream))
    return true;
  if (takes_tensor_cores(w, n_tokens)) return false;
  return launch_cuda_core_gemv(w, x, n_tokens, out, bias, fuse, stream);
}

bool launch_gemv_x_quantized_once(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                                  const GemvFusion& fuse, void* scratch, size_t scratch_bytes, cudaStream_t stream) {
  return launch_gemv_dp4a_x_quantized_once(w, x, n_tokens, out, bias, fuse, scratch, scratch_bytes, stream) ||
         launch_gemv_bl_x_quantized_once(w, x, n_tokens, out, bias, fuse, scratch, scratch_bytes, stream);
}

bool gemv_staged_applies(const WeightView& w) { return gemv_dp4a_staged_applies(w) || gemv_bl_token_applies(w); }

bool launch_gemv_staged(const WeightView& w, const StagedX& x, float* out, const float* bias, const GemvFusion& fuse,
                        cudaStream_t stream) {
  return launch_gemv_dp4a_staged(w, x, out, bias, fuse, stream) || launch_gemv_bl_staged(w, x, out, bias, fuse, stream);
}

bool gemv_after_attention_applies(const WeightView& w, int n_head, int head_dim) {
  if (gemv_dp4a_after_attention_applies(w, n_head, head_dim) || gemv_bl_after_attention_applies(w, n_head, head_dim))
    return true;
  // The fp32 GEMV divides per piece of x in every block (4 rows a block), which slows its stream
  // more than the combine kernel costs at 4096 columns (H100, 8B f16: 182.5-183.1 tok/s with the
  // combine, 180.8-181.6 with the sums; 1B f16 at 2048: 817-840 against 846-852; docs/cuda.md
  // "Eighteenth session"), so the plain types take the sums up to 2048 columns.
  // Block formats without a dp4a unit for these rows (Q5_0 at 1024 columns) take the same
  // fp32 GEMV and limit.
  constexpr int64_t kFp32MaxCols = 2048;
  const bool plain = is_plain(w.dtype);
  const bool pieces = plain ? w.row_bytes % 16 == 0 && reinterpret_cast<uintptr_t>(w.data) % 16 == 0
                            : !quant::is_bl_group(w.dtype) && weight_format_supported(w.dtype);
  return pieces && w.cols <= kFp32MaxCols && n_head > 0 && head_dim > 0 && head_dim % 8 == 0 &&
         static_cast<int64_t>(n_head) * head_dim == w.cols;
}

bool launch_gemv_after_attention(const WeightView& w, const AttentionSums& sums, float* out, const float* bias,
                                 bool accumulate, cudaStream_t stream) {
  if (!sums.buffer || !gemv_after_attention_applies(w, sums.n_head, sums.head_dim)) return false;
  if (launch_gemv_dp4a_after_attention(w, sums, out, bias, accumulate, stream) ||
      launch_gemv_bl_after_attention(w, sums, out, bias, accumulate, stream))
    return true;
  GemvArgs p{static_cast<const uint8_t*>(w.data), w.row_bytes, w.rows, w.cols, sums.num(), 1, out, bias,
             GemvFusion{.accumulate = accumulate}};
  p.attention = sums;
  return dispatch_weight_format(w.dtype, [&]<DType T>() { launch_after_attention<T>(p, w.tiled, stream); });
}

}  // namespace bl::cuda
