// Host-side entry points of the CUDA kernels (src/kernels/cuda/*.cu).
//
// Each launcher only queues work on `stream`: no allocation, no host synchronisation, so a
// sequence of them can be captured in a CUDA graph. Shapes follow core/tensor.h: ne[0] is the
// contiguous dimension; activations are F32 [d, n_tokens]; weights [cols, rows] in a GGUF
// block format, rows of `row_bytes` bytes. Launchers return false only for a dtype they have
// no kernel for (the caller reports it); CUDA launch errors are read by the caller with
// cudaGetLastError.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "core/dtype.h"
#include "kernels/cuda/block_trace.h"
#include "kernels/cpu/top_k_draw.h"

namespace bl::cuda {

// Whether p is 16-byte aligned, as the kernels' 16-byte loads need (null passes: an operand a
// launch does not use).
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Formats the fused-dequant kernels accept (GEMV, get_rows, dequantize): the GGUF formats
// below and bitlight's bl<b>g<g> (quant/bl_group.h, read as stored: gemv_bl.cu, bl_rows.cu).
bool weight_format_supported(DType t);

// Largest batch the fused-dequant GEMV handles; larger batches go through a tensor-core GEMM.
constexpr int kGemvMaxTokens = 16;

struct WeightView {
  const void* data = nullptr;  // rows * row_bytes bytes, device memory, 16-byte aligned start
  DType dtype = DType::F32;
  int64_t cols = 0;            // elements per row (ne[0])
  int64_t rows = 0;            // output features (ne[1])
  size_t row_bytes = 0;
  bool tiled = false;          // in the tiled layout of weight_layout.cuh (Q4_0, Q4_1, Q8_0, Q6_K)
};

// What a GEMV does besides out = W x (Backend::fused_matmul), so that a decode step needs no
// separate rms_norm, silu_mul or add kernels: x' = rms_norm(x) * norm, or silu(x) * up, on the
// way in (one token: the dp4a kernel, which stages x in shared memory anyway, and the fp32
// kernel for the plain types, per piece as x streams), out += W x' on the way out (the dp4a and
// fp32 GEMVs).
// The x of the next GEMV, made by this one (decode, one token; MatmulFusion::norm_next): the dp4a
// GEMV with x quantized once that adds into the residual stream (the down GEMV: out += W x, rows
// = the next GEMV's cols) also writes norm * out quantized to int8 per 32 rows, and each 32 rows'
// sum of out^2, as the bytes a GEMV with x quantized once copies (StagedX, rows / 32 partial
// sums: staged_next_x), so that no quantize kernel runs between the two (H100: 8B q4_0 +1.5 %;
// the O GEMV after the attention doing the same was no faster, docs/cuda.md "Twenty-second
// session"). dst holds stage_next_bytes(rows), 16-byte aligned, not what this GEMV reads.
struct StageNext {
  const float* norm = nullptr;  // [rows] the next GEMV's norm weight
  uint8_t* dst = nullptr;
};

// Rotary embedding (launch_rope and the fused rope kernels below, a QKV GEMV's GemvRopeStore).
struct RopeLaunch {
  int head_dim = 0;
  int n_heads = 0;
  int64_t n_tokens = 0;
  int n_dims = 0;                      // rotated dims per head, even, <= head_dim
  float freq_base = 10000.0f;
  float freq_scale = 1.0f;
  bool neox = false;
  const float* freq_factors = nullptr;  // device, n_dims / 2 values, or null
};

// The rope and the KV-cache store of the one-token attention after a QKV GEMV, done by that
// GEMV's epilogue (MatmulFusion::rope_next; the dp4a, fp32 and bl GEMVs, gemv_rope_store_applies):
// out = [q (q_rows); k (kv_rows); v (kv_rows)], each row pair (2i, 2i + 1) one rope pair
// of a head (ggml's normal rope, not neox), rotated at positions[0] with rope_cos_sin's angles;
// the k rows (rotated) and v rows also go into the caches at slot positions[0].
struct GemvRopeStore {
  const int32_t* positions = nullptr;  // [1], device; null: no rope epilogue
  RopeLaunch rope = {};
  int64_t q_rows = 0, kv_rows = 0;
  void* k_cache = nullptr;  // [head_dim, n_head_kv, n_ctx] f16 or f32
  void* v_cache = nullptr;
  bool cache_f16 = true;
  int64_t n_ctx = 0;  // cache slots: a position outside [0, n_ctx) stores nothing
};

struct GemvFusion {
  const float* norm = nullptr;  // [cols], 16-byte aligned
  float eps = 0.0f;
  const float* up = nullptr;    // [cols, n] like x, 16-byte aligned; x is the gate
  bool accumulate = false;
  // SwiGLU split over two one-token fp32 GEMVs (plain types, gemv_fp32_prologue_applies): the
  // gate/up GEMV stores silu(v) in its out rows below silu_rows (the gate half), and the down
  // GEMV with gate_activated takes x as silu(gate) already: x' = x * up.
  int64_t silu_rows = 0;
  bool gate_activated = false;
  StageNext stage_next = {};  // set only where gemv_stages_next_applies
  GemvRopeStore rope_store = {};  // set only where gemv_rope_store_applies
  bool prologue() const { return norm || up; }
};

// A one-token split-KV attention whose softmax is left unnormalised for the GEMV of the output
// projection after it (FlashDecoding++'s "unified max"): instead of each split writing its
// partial (m_s, l_s, acc_s) for a combine kernel, it adds e^(m_s - phi) acc_s and e^(m_s - phi)
// l_s into num and den of its head with float atomics, phi being the same number for every split
// of a head: the score of slot 0 (which every token sees, so den >= 1). The GEMV divides as it
// quantizes x, and the combine kernel and its boundary go (docs/cuda.md "Eighteenth session").
// A split whose max exceeds phi by more than kAttentionSumsMaxExponent (e^60 x up to 2^20 slots
// stays finite in fp32) adds nothing; it counts itself in overflowed, and the GEMV combines that
// head exactly from the splits' partials (m_s, l_s, acc_s) instead. One buffer holds num
// [n_head * head_dim], then den, overflowed (int) and phi [n_head] each
// (attention_sums_floats); num, den and overflowed must be zero when the attention starts.
constexpr float kAttentionSumsMaxExponent = 60.0f;
struct AttentionSums {
  float* buffer = nullptr;             // attention_sums_floats(n_head, head_dim) floats
  const float* partial_ml = nullptr;   // [n_splits, n_head, 2]: each split's (m_s, l_s)
  const float* partial_acc = nullptr;  // [n_splits, n_head, head_dim]: acc_s of overflowed splits
  int n_splits = 0, n_head = 0, head_dim = 0;
  __host__ __device__ float* num() const { return buffer; }
  __host__ __device__ float* den() const { return buffer + static_cast<int64_t>(n_head) * head_dim; }
  __host__ __device__ int* overflowed() const { return reinterpret_cast<int*>(den() + n_head); }
  __host__ __device__ float* phi() const { return den() + 2 * n_head; }
};
// Floats of one AttentionSums buffer.
constexpr int64_t attention_sums_floats(int n_head, int head_dim) {
  return static_cast<int64_t>(n_head) * (head_dim + 3);
}

// The operands of one GEMV launch as the kernels take them (gemv.cu, gemv_dp4a.cu,
// gemv_tensor_core.cu): w's rows of row_bytes bytes, x [cols, n], out [rows, n], bias or null.
struct GemvArgs {
  const uint8_t* w;
  size_t row_bytes;
  int64_t rows;
  int64_t cols;
  const float* x;  // [cols, n]
  int n;
  float* out;      // [rows, n]
  const float* bias;
  GemvFusion fuse = {};
  // The dp4a GEMV with x quantized beforehand (launch_gemv_dp4a_x_quantized_once): the bytes it
  // copies to shared memory as they are, and with a norm the partial sums of x^2 [n_partials].
  const uint8_t* x_staged = nullptr;
  const float* sumsq_partials = nullptr;
  int n_partials = 0;
  // launch_gemv_after_attention: x is num / den of these sums (x points at their num).
  AttentionSums attention = {};
  block_trace::Slot trace = {};  // set by the launch (trace builds: block_trace.h)
};

// ---- the tiled weight layout (weight_layout.cuh, weight_tiling.cu) ----

// Whether upload tiles a weight of this format and row length: Q4_0, Q4_1, Q8_0, Q6_K with
// cols a multiple of 8 blocks.
bool weight_tileable(DType t, int64_t cols);
// dst = src (rows of row_bytes, GGUF layout) in the tiled layout; both device memory.
bool launch_tile_weight(DType t, const void* src, void* dst, int64_t rows, size_t row_bytes, cudaStream_t stream);
// The inverse on the host, for read() of a tiled weight: whole rows, in place is not allowed.
bool untile_rows_on_host(DType t, const void* tiled, void* gguf, int64_t rows, size_t row_bytes);

// out[rows, n] = W · x[cols, n] (+ bias[rows]); n in [1, kGemvMaxTokens]; bias may be null.
bool launch_gemv(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                 cudaStream_t stream);
// Whether the fp32 GEMV takes a prologue (norm or up, `second`) for one token of this weight:
// F16 / BF16 / F32, cols % 8 == 0, rows, x and second 16-byte aligned.
bool gemv_fp32_prologue_applies(const WeightView& w, const float* x, const float* second);
// The same with a fusion: false (nothing launched) when no GEMV path does it for this weight and
// batch (a prologue needs one token on the dp4a path or plain-type weights with aligned rows;
// accumulate is left to the caller where launch_gemv would pick the tensor-core kernel); the
// caller then runs the plain ops.
bool launch_gemv_fused(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                       const GemvFusion& fuse, cudaStream_t stream);

// The integer path of launch_gemv (gemv_dp4a.cu): block formats at 1..kDp4aMaxTokens tokens
// with cols % 256 == 0 (Q4_K, Q5_K; Q4_0, Q4_1, Q8_0, Q6_K when tiled). x is quantized to int8
// per 32 values (scale max|x| / 127) inside the kernel and the dot products run on dp4a, so
// each x_k is off by up to max|x_block| / 254. false when it does not apply.
constexpr int kDp4aMaxTokens = 4;
bool gemv_dp4a_applies(const WeightView& w, int n_tokens);
// Whether the one-token GEMV of w takes the rope epilogue e (GemvRopeStore): the dp4a GEMV
// (block formats), the fp32 one for F16 / BF16 / F32 rows of whole pieces over 1024 columns
// (with the norm inside or no prologue), or the bl one (gemv_bl_token_applies; x staged or the
// norm inside); w's rows are [q; k; v] in whole heads, the rope is not neox. The fused launchers
// then run such a kernel or nothing (launch_gemv_fused, launch_gemv_x_quantized_once,
// launch_gemv_staged; not with a StageNext).
bool gemv_rope_store_applies(const WeightView& w, const GemvRopeStore& e);
bool launch_gemv_dp4a(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                      cudaStream_t stream, const GemvFusion& fuse = {});
// One token through the dp4a GEMV with x quantized once: a small kernel (cols / 2048 blocks)
// applies the prologue (x * norm, or silu(x) * up), quantizes x' to int8 per 32 into `scratch`
// and sums x^2 per block; every GEMV block then copies those 1.25 bytes per column to shared
// memory instead of reading 4 (+4) bytes per column and quantizing them itself, and scales its
// sums by the 1 / rms of the partial sums. For wide inputs (the 8B shapes' 4096 and 14336
// columns), where the in-GEMV prologue costs every block several L2 round trips (docs/cuda.md).
// scratch: 16-byte aligned, not aliasing x / out, at least int8x::quantized_x_once_bytes(cols)
// (gemv_int8_x.cuh: 1.25 bytes a column and a float per 2048; the backend passes cols floats).
// false (nothing launched) unless n_tokens == 1 and the dp4a path takes w (cols <= 32768), or
// when scratch is short or unaligned.
bool gemv_dp4a_x_quantized_once_applies(const WeightView& w, int n_tokens);
bool launch_gemv_dp4a_x_quantized_once(const WeightView& w, const float* x, int n_tokens, float* out,
                                       const float* bias, const GemvFusion& fuse, void* scratch,
                                       size_t scratch_bytes, cudaStream_t stream);
// launch_gemv_dp4a_x_quantized_once, or for bl weights launch_gemv_bl_x_quantized_once (below):
// the first that applies; false (nothing launched) when neither does.
bool launch_gemv_x_quantized_once(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                                  const GemvFusion& fuse, void* scratch, size_t scratch_bytes, cudaStream_t stream);
// The first half of launch_gemv_dp4a_x_quantized_once, for either integer GEMV (the dp4a one and
// the bl one read the same bytes): the kernel that applies fuse's prologue to one token's x and
// quantizes it into scratch; what the GEMV then copies (GemvArgs::x_staged / sumsq_partials /
// n_partials). cols % 256 == 0, scratch as above; launched with PDL.
struct StagedX {
  const uint8_t* bytes;
  const float* sumsq_partials;  // null without a norm
  int n_partials;
};
StagedX launch_quantize_x_once(const float* x, const GemvFusion& fuse, int64_t cols, void* scratch,
                               cudaStream_t stream);
// One token through the integer GEMV (dp4a or bl, whichever takes w) with x as staged
// beforehand, by launch_quantize_x_once or by the GEMV before (StageNext); fuse.eps with a norm's
// partial sums, fuse.accumulate. false (nothing launched) when neither takes w that way.
bool gemv_staged_applies(const WeightView& w);
bool launch_gemv_staged(const WeightView& w, const StagedX& x, float* out, const float* bias, const GemvFusion& fuse,
                        cudaStream_t stream);
bool gemv_dp4a_staged_applies(const WeightView& w);
bool launch_gemv_dp4a_staged(const WeightView& w, const StagedX& x, float* out, const float* bias,
                             const GemvFusion& fuse, cudaStream_t stream);
bool launch_gemv_bl_staged(const WeightView& w, const StagedX& x, float* out, const float* bias,
                           const GemvFusion& fuse, cudaStream_t stream);
// StageNext (above): the bytes dst needs for a GEMV of `rows` rows, what the next GEMV then
// copies, and whether the one-token GEMV of w with x quantized once can stage the next x: the
// dp4a GEMV takes w, rows % 256 == 0 (the next GEMV's cols), rows / 32 <= 128
// (gemv_int8_x.cuh's kMaxStagedPartials: rows <= 4096), and the kernel runs from sm_90 code
// (thread-block clusters, a pair of blocks per 32 rows).
int64_t stage_next_bytes(int64_t rows);
StagedX staged_next_x(const StageNext& next, int64_t rows);
bool gemv_stages_next_applies(const WeightView& w);
// One token through a GEMV with x taken from a split-KV attention's sums (AttentionSums,
// attention_sums.cuh): x = num / den per head (the exact combine for a head with overflowed
// splits), made by each block of the dp4a GEMV as it quantizes x, or per piece as the fp32 GEMV
// streams it. out += W x with accumulate. false (nothing launched) unless w.cols == n_head *
// head_dim with head_dim % 8 == 0 and the dp4a GEMV takes w for one token (x fitting in shared
// memory), or the one-token bl GEMV takes w (gemv_bl_token_applies), or w has at most 2048
// columns and is a plain type with 16-byte aligned rows or another block format (Q5_0, untiled
// Q4_0: the fp32 GEMV; wider, its per-piece division costs more than the combine kernel).
bool gemv_after_attention_applies(const WeightView& w, int n_head, int head_dim);
bool launch_gemv_after_attention(const WeightView& w, const AttentionSums& sums, float* out, const float* bias,
                                 bool accumulate, cudaStream_t stream);
// The dp4a half of the two (gemv_dp4a.cu).
bool gemv_dp4a_after_attention_applies(const WeightView& w, int n_head, int head_dim);
bool launch_gemv_dp4a_after_attention(const WeightView& w, const AttentionSums& sums, float* out, const float* bias,
                                      bool accumulate, cudaStream_t stream);

// The bl<b>g<g> path of launch_gemv (gemv_bl.cu): weights as stored in 16-row tiles, x
// quantized to int8 per 32 values in the kernel (each x_k off by up to max|x_block| / 254),
// kBlGemvMaxTokens tokens per launch (more tokens: one launch per 4; 5..16 tokens take the skinny
// GEMM first where gemv_bl_skinny_applies). out += W x with
// fuse.accumulate. One token of a weight that gemv_bl_token_applies to also takes fuse's norm or
// SwiGLU prologue (as the dp4a GEMV: inside every block); otherwise a prologue returns false.
// false (nothing launched) for other dtypes, rows % 16 != 0 or unaligned x.
constexpr int kBlGemvMaxTokens = 4;
bool launch_gemv_bl(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                    const GemvFusion& fuse, cudaStream_t stream);
// Whether one token of w runs on the bl GEMV that reads x as the dp4a one does (gemv_int8_x.cuh:
// a prologue inside, x quantized once beforehand, or attention sums): a bl type, rows % 16 == 0,
// cols % 256 == 0, x fitting in shared memory. 2..16 tokens of such a weight at 1..4 bits run
// on it too, 4 a launch, without prologues, where the skinny GEMM does not take them.
bool gemv_bl_token_applies(const WeightView& w);
// As launch_gemv_dp4a_x_quantized_once and launch_gemv_dp4a_after_attention, for bl weights.
bool launch_gemv_bl_x_quantized_once(const WeightView& w, const float* x, int n_tokens, float* out,
                                     const float* bias, const GemvFusion& fuse, void* scratch,
                                     size_t scratch_bytes, cudaStream_t stream);
bool gemv_bl_after_attention_applies(const WeightView& w, int n_head, int head_dim);
bool launch_gemv_bl_after_attention(const WeightView& w, const AttentionSums& sums, float* out, const float* bias,
                                    bool accumulate, cudaStream_t stream);
// bl<b>g<g> rows decoded (bl_rows.cu): the prefill operand (as launch_dequantize) and get_rows.
bool launch_dequantize_bl(const WeightView& w, uint16_t* dst, bool to_bf16, cudaStream_t stream);
bool launch_get_rows_bl(const WeightView& table, const int32_t* ids, int64_t n_tokens, float* out,
                        cudaStream_t stream);

// The tensor-core path of launch_gemv (gemv_tensor_core.cu): block formats at 8..16 tokens
// and >= 2048 rows, fp16 operands. On by default; the tests and the benchmark switch it off to check and time
// the CUDA-core path too (process-wide, not thread-safe: set it before issuing work).
void set_tensor_core_gemv(bool enabled);
bool tensor_core_gemv_enabled();
// Whether the fp32 GEMV takes the norm / SwiGLU prologue for block-format weights the dp4a
// GEMV does not take (gemv.cu); otherwise the prologue runs as a kernel of its own. On by
// default; BITLIGHT_CUDA_BLOCK_PROLOGUE=0 switches it off (comparisons). Process-wide, as above.
void set_block_fp32_prologue(bool enabled);
// false when it does not apply (format, batch, alignment); launch_gemv then runs the other.
bool launch_gemv_tensor_core(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                             cudaStream_t stream);

// The batched-decode path of launch_gemv / launch_gemv_fused (gemv_skinny.cu): Q8_0, Q4_0, Q4_1,
// Q4_K, Q5_K, Q6_K at kSkinnyMinTokens..kGemvMaxTokens tokens, cols % 256 == 0, on tensor cores
// with x rounded to fp16 and each weight decoded once for all tokens; K split across blocks
// with atomics (out zeroed first unless accumulate: out += W x). Taken only while
// tensor_core_gemv_enabled(). false (nothing launched) when it does not apply (or x unaligned).
// From 4 tokens: at 2 (and by the trend 3) the dp4a GEMV, whose time grows with the tokens,
// is faster than the skinny GEMM, whose time is flat over 2..16 (H100, 8B q4_0 -B 2: 598 tok/s
// against 385; -B 4: 703 against 751; docs/cuda.md "Twenty-ninth session").
constexpr int kSkinnyMinTokens = 4;
bool gemv_skinny_applies(const WeightView& w, int n_tokens);
bool launch_gemv_skinny(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                        bool accumulate, cudaStream_t stream);
// The same skinny GEMM on bl<b>g<g> tiles (gemv_skinny_bl.cu; launch_gemv_bl takes it first at
// kBlSkinnyMinTokens..16 tokens without a prologue): b != 7, cols % 256 == 0, x rounded to fp16,
// weights dequantized to fp16. Taken while tensor_core_gemv_enabled() and not
// BITLIGHT_CUDA_BL_SKINNY=0. From 5 tokens: up to 4 the bl GEMV reads the weights once too, and
// is as fast at 4 (8B bl4g128 -B 4: 1048 tok/s against 1034) and faster at 2 (652 against 531).
constexpr int kBlSkinnyMinTokens = kBlGemvMaxTokens + 1;
bool gemv_bl_skinny_applies(const WeightView& w, int n_tokens);
bool launch_gemv_bl_skinny(const WeightView& w, const float* x, int n_tokens, float* out, const float* bias,
                           bool accumulate, cudaStream_t stream);

// The prefill GEMM of block-quantized weights with the dequantization in its main loop
// (gemm_in_loop_wgmma.cu, wgmma on sm_90a): out[n][rows] (+= with accumulate) W x, x [n][cols]
// fp16 16-byte aligned, out fp32 or (out_half) fp16, fp32 sums. Applies to tiled Q4_0, Q4_1 and
// Q8_0 and to Q4_K / Q5_K weights (cols % 256 == 0), each up to its token count (below), and n >
// kGemvMaxTokens on a compute capability 9.0 GPU running the binary's sm_90a code. false
// (nothing launched) where it does not apply.
//
// Where the CUDA backend takes it instead of the dequantize pass + cuBLAS (process-wide;
// BITLIGHT_CUDA_INLOOP_GEMM=0|1|2 at start-up, default 2): off; only for a layer's q, k and v
// stored as one matrix (one GEMM for the three); everywhere, gate and up also as one GEMM (H100,
// 8B q4_0 pp2048: 67-68 % of the bf16 peak against 62-64 % off, docs/cuda.md).
enum class InLoopGemmUse { off, qkv, everywhere };
// The block tile (weight rows x tokens): automatic takes 128 x 256, or 128 x 128 where the wider
// one gives fewer blocks than the GPU has SMs; the others force one (tests, comparisons;
// BITLIGHT_CUDA_INLOOP_GEMM_TILE=128x256|128x128 at start-up).
enum class InLoopGemmTile { automatic, rows128_tokens256, rows128_tokens128 };
// Up to how many tokens the backend gives the kernel a format (0: never; a format it does not
// read stays 0). BITLIGHT_CUDA_INLOOP_GEMM_FORMATS=q4_0,q4_1,... at start-up: those at any count,
// the others never. By default Q4_0, Q4_1, Q8_0 and Q4_K at any count and Q5_K up to 512 tokens.
// H100, whole 8B forward against the dequantize pass + cuBLAS, alternating: q8_0 pp2048 62-64 %
// of the bf16 peak against 61 % (in clusters of 2; blocks alone it lost, 59 %); q5_k pp512 42 %
// against 40 % (the dequantize pass costs the same at any token count, the GEMM a quarter of
// pp2048's), pp2048 56 % against 60-62 % (its main loop has ~25 % more instructions than Q4_K's:
// the fifth bits), docs/cuda.md.
constexpr int64_t kInLoopGemmAnyTokens = INT64_MAX;
void set_in_loop_gemm_max_tokens(DType t, int64_t max_tokens);
int64_t in_loop_gemm_max_tokens(DType t);
// Blocks a cluster (1 or 2; BITLIGHT_CUDA_INLOOP_GEMM_CLUSTER=1 at start-up, default 2): the
// blocks of a cluster take neighbouring row tiles of the same tokens and share the x tile by
// TMA multicast, so each reads half of it from L2 (H100, whole 8B q4_0 pp2048: 69-70 % of the
// bf16 peak in clusters of 2, 67-68 % alone).
void set_in_loop_gemm_cluster(int blocks);
int in_loop_gemm_cluster();
// For the tests and the benchmark: set before issuing work.
void set_in_loop_gemm(InLoopGemmUse use, InLoopGemmTile tile = InLoopGemmTile::automatic);
InLoopGemmUse in_loop_gemm_use();
int64_t in_loop_gemm_launch_count();  // launches so far (process-wide, not thread-safe; for the tests)
bool gemm_in_loop_applies(const WeightView& w, int64_t n_tokens);
bool launch_gemm_in_loop(const WeightView& w, const uint16_t* x, int64_t n_tokens, void* out, bool out_half,
                         bool accumulate, cudaStream_t stream);
// The same over the rows of several matrices stored one after another (the q, k, v or gate, up
// weights of a layer, fused at load): rows [first_row, the next range's first_row) go to out
// [n][ld] at column row - first_row. Ranges in increasing first_row, the first at 0.
struct GemmRowRange {
  int64_t first_row;
  void* out;
  int64_t ld;
};
constexpr int kGemmMaxRowRanges = 3;
bool launch_gemm_in_loop_row_ranges(const WeightView& w, const uint16_t* x, int64_t n_tokens,
                                    std::span<const GemmRowRange> outputs, bool out_half, bool accumulate,
                                    cudaStream_t stream);
// dst[rows * cols] (row-major, fp16 or bf16 bits) = dequantized W. `to_bf16` picks bf16.
bool launch_dequantize(const WeightView& w, uint16_t* dst, bool to_bf16, cudaStream_t stream);

// ---- the activation operand of a prefill GEMM (prefill_operands.cu), fp16 or (to_bf16) bf16 ----

// dst[i] = src[i] rounded, n elements.
void launch_f32_to_half(const float* src, uint16_t* dst, int64_t n, bool to_bf16, cudaStream_t stream);
// dst[i] = silu(gate[i]) * up[i] rounded, n elements.
void launch_silu_mul_to_half(const float* gate, const float* up, int64_t n, uint16_t* dst, bool to_bf16,
                             cudaStream_t stream);
// dst[i] = silu(gate[i]) * up[i] rounded, gate and up fp16 (bf16 with `bf16`) as a prefill
// GEMM wrote them, n elements.
void launch_silu_mul_halves(const uint16_t* gate, const uint16_t* up, int64_t n, uint16_t* dst, bool bf16,
                            cudaStream_t stream);
// dst[:, t] = rms_norm(x[:, t]) * weight rounded (as launch_rms_norm); x [d, n]. false (nothing
// launched) unless d % 4 == 0, x and weight 16-byte and dst 8-byte aligned.
bool launch_rms_norm_to_half(const float* x, const float* weight, float eps, int64_t d, int64_t n_tokens, uint16_t* dst,
                             bool to_bf16, cudaStream_t stream);

// out[:, t] += bias for each of n tokens; out [rows, n].
void launch_add_bias(float* out, const float* bias, int64_t rows, int64_t n_tokens, cudaStream_t stream);

// out[d, i] = dequantized row ids[i] of table [d, n_vocab]; ids out of [0, n_vocab) give zeros.
bool launch_get_rows(const WeightView& table, const int32_t* ids, int64_t n_tokens, float* out,
                     cudaStream_t stream);

// out[:, t] = x[:, t] / sqrt(mean(x[:, t]^2) + eps) * weight; x, out [d, n].
void launch_rms_norm(const float* x, const float* weight, float eps, int64_t d, int64_t n_tokens,
                     float* out, cudaStream_t stream);
// out[:, t] += the same normed x[:, t] (Backend::add_rms_norm); out must not alias x.
void launch_add_rms_norm(const float* x, const float* weight, float eps, int64_t d, int64_t n_tokens, float* out,
                         cudaStream_t stream);

// out = a + b and out = silu(gate) * up, n elements.
void launch_add(const float* a, const float* b, float* out, int64_t n, cudaStream_t stream);
void launch_silu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
void launch_gelu_mul(const float* gate, const float* up, float* out, int64_t n, cudaStream_t stream);
void launch_scale(const float* x, float factor, float* out, int64_t n, cudaStream_t stream);

// Rotates x [head_dim, n_heads, n_tokens] in place at positions [n_tokens] (I32, device).
void launch_rope(float* x, const int32_t* positions, const RopeLaunch& p, cudaStream_t stream);

// rope on q [head_dim, n_head, n] and k [head_dim, n_head_kv, n] in place, and k (rotated), v
// into the caches at positions (as launch_rope then launch_kv_store), one kernel. seq_slots > 0:
// one sequence per token, token t's slot is t * seq_slots + positions[t] (positions[t] <
// seq_slots, else not stored) and n_ctx is ignored.
// q_angles (where rope_q_angles_apply): q is left as it is and each token's (cos, sin) of its
// n_dims / 2 pairs go to q_angles [n_tokens, n_dims / 2] instead, for launch_prefill_attention
// to rotate q as it loads it (q's fp32 round trip, ~2/3 of this kernel's bytes, saved).
void launch_rope_kv_store(float* q, float* k, const float* v, void* k_cache, void* v_cache, bool cache_f16,
                          int n_head, int n_head_kv, int64_t n_ctx, const int32_t* positions, const RopeLaunch& p,
                          cudaStream_t stream, int64_t seq_slots = 0, float2* q_angles = nullptr);
// Whether launch_rope_kv_store takes q_angles for these operands (a prompt chunk of at least
// 64 tokens of one sequence: the one-block-per-token kernel).
bool rope_q_angles_apply(const float* q, const float* k, const void* k_cache, const RopeLaunch& p);

// Writes k, v [head_dim * n_head_kv, n] into the caches [head_dim * n_head_kv, n_ctx] at slots
// positions[i]; slots outside [0, n_ctx) are skipped. Cache elements F32 or F16 (cache_f16).
void launch_kv_store(const float* k, const float* v, void* k_cache, void* v_cache, bool cache_f16,
                     int64_t kv_dim, int64_t n_tokens, int64_t n_ctx, const int32_t* positions,
                     cudaStream_t stream);

struct AttentionLaunch {
  int n_head = 0;
  int n_head_kv = 0;
  int head_dim = 0;  // <= kAttentionMaxHeadDim, multiple of 2
  float scale = 1.0f;
  int64_t n_tokens = 0;
  int64_t n_ctx = 0;  // cache capacity in slots
  bool cache_f16 = true;
  int n_splits =
      1;  // KV range split across blocks (FlashDecoding), 1..kAttentionMaxSplits; 1 = no fixup pass
  // > 0: one sequence per token (SequenceBatch): token t sees slots [t * seq_slots, t * seq_slots
  // + positions[t]] and n_ctx is taken as seq_slots (the decode kernel only, not prefill).
  int64_t seq_slots = 0;
  // One token per sequence (n_tokens == 1 or seq_slots > 0) only: every slot a token reads but
  // its own was written by kernels that have completed before the kernel just before this one
  // began, so the decode kernel loads those K/V rows before waiting for it (pdl.cuh) and only the
  // own slot after. The caller vouches for it (CudaBackend tracks its cache writes).
  bool kv_loads_early = false;
  // > 0: sliding-window attention, the token at position p sees slots [p - window + 1, p] only.
  int window = 0;
};
constexpr int kAttentionMaxHeadDim = 256;
constexpr int kAttentionMaxSplits = 64;  // the fixup kernel reads the splits' (max, sum) with one warp

// Floats of workspace the split-KV attention needs (0 when n_splits == 1).
size_t attention_workspace_floats(const AttentionLaunch& p);
// Splits chosen so that roughly `n_sms` * 2 blocks run; at most n_ctx / 32 + 1 and kAttentionMaxSplits.
int attention_pick_splits(int n_head_kv, int64_t n_tokens, int64_t n_ctx, int n_sms);

// Causal attention: out [head_dim, n_head, n] for q of the same shape over the caches, token i
// seeing slots [0, positions[i]]. workspace: attention_workspace_floats(p) floats.
// With sums.buffer (where attention_sums_apply): out is not written, the splits add into that
// AttentionSums buffer and no combine kernel runs; sums.clear (may be null): clear_floats floats
// the kernel zeroes once the kernel before it has completed (the other sums buffer, whose GEMV
// has completed by then).
struct AttentionSumsLaunch {
  float* buffer = nullptr;
  float* clear = nullptr;
  int64_t clear_floats = 0;
};
void launch_attention(const float* q, const void* k_cache, const void* v_cache, const int32_t* positions,
                      const AttentionLaunch& p, float* workspace, float* out, cudaStream_t stream,
                      const AttentionSumsLaunch& sums = {});
// Whether a launch takes sums: one token of one sequence (seq_slots 0), more than one split.
bool attention_sums_apply(const AttentionLaunch& p);
// The AttentionSums a launch with sums.buffer = buffer and this workspace leaves for the GEMV.
AttentionSums attention_sums_view(const AttentionLaunch& p, float* workspace, float* buffer);

// launch_rope_kv_store then launch_attention for one token of one sequence (q [head_dim, n_head],
// k, v [head_dim, n_head_kv] as the QKV matmul wrote them), without the rope kernel: each
// attention block rotates its query heads itself, and the block whose slots hold the token's
// own writes its rotated k and v into the caches (q and k are left unrotated). Applies with at
// most 8 query heads per KV head (one block group) and r.head_dim == p.head_dim.
bool rope_attention_applies(const AttentionLaunch& p, const RopeLaunch& r);
void launch_rope_attention(const float* q, const float* k, const float* v, void* k_cache, void* v_cache,
                           const int32_t* positions, const AttentionLaunch& p, const RopeLaunch& r, float* workspace,
                           float* out, cudaStream_t stream, const AttentionSumsLaunch& sums = {});

// The same causal attention for a chunk of prompt tokens on tensor cores (prefill_attention.cu,
// FlashAttention-2 style: Q and P rounded to fp16, fp32 accumulation), for f16 caches, head_dim
// 64 or 128 and n_head a multiple of n_head_kv. Fewer tokens than kPrefillAttentionMinTokens
// stay on launch_attention: one pass over the cache per token is what decode needs, in fp32.
constexpr int64_t kPrefillAttentionMinTokens = kGemvMaxTokens + 1;
bool prefill_attention_applies(const AttentionLaunch& p);
// The rope of q done by launch_prefill_attention as it loads q: angles [n_tokens, head_dim / 2]
// (cos, sin) from launch_rope_kv_store's q_angles; rotary over the whole head only (n_dims ==
// head_dim), so each rope pair's two dims sit in one thread's mma fragments.
struct PrefillRope {
  const float2* angles = nullptr;  // null: q is rotated already
  bool neox = false;
};
void launch_prefill_attention(const float* q, const void* k_cache, const void* v_cache, const int32_t* positions,
                              const AttentionLaunch& p, float* out, cudaStream_t stream, const PrefillRope& rope = {});

// ids[t] = argmax of logits[:, t] ([n_vocab, n_tokens]): the lowest index among equal maxima,
// NaN never picked (all NaN: 0), sampling.cu. workspace: argmax_workspace_bytes(capacity) of
// device memory for up to `capacity` tokens, zeroed once before its first launch (each launch
// leaves it ready for the next, whatever its n_tokens <= capacity).
size_t argmax_workspace_bytes(int64_t capacity);
void launch_argmax(const float* logits, int64_t n_vocab, int64_t n_tokens, int32_t* ids, void* workspace,
                   int64_t capacity, cudaStream_t stream);

// ids[t] = cpu::draw_from_top_k(logits[:, t], draws[t]) (draws: device memory, one record per
// token), sample_top_k.cu, for 1 <= top_k <= kMaxDeviceTopK and n_vocab up to 64 slices of 4096
// (sample_top_k_applies; a top_k outside that range is clamped into it: callers check first).
// workspace: sample_top_k_workspace_bytes(capacity), zeroed once, as argmax's.
using TopKDrawParams = cpu::TopKDraw;
constexpr int kMaxDeviceTopK = 64;
bool sample_top_k_applies(int top_k, int64_t n_vocab);
size_t sample_top_k_workspace_bytes(int64_t capacity);
void launch_sample_top_k(const float* logits, int64_t n_vocab, int64_t n_tokens, const TopKDrawParams* draws,
                         int32_t* ids, void* workspace, int64_t capacity, cudaStream_t stream);

}  // namespace bl::cuda
