// CPU matrix products with weights in any supported format.
//
// Quantized weights: the activations are quantized once per call to 8-bit blocks (Q8_0 for
// the 32-element formats, with fp32 side arrays on x86, or Q8_1 in the scalar kernels of the
// formats with a min; Q8_K for the K-quants) and multiplied with integer dot products (AVX2
// maddubs / madd, also used at the AVX-512 level; a VNNI variant exists, see dot_avx512.cpp);
// F32/F16/BF16 weights use fp32 FMAs (F16C / AVX-512 conversions). The ISA is chosen at run
// time (cpu_features.h); dot_kernels.h has the per-ISA kernel tables.
#pragma once

#include <cstdint>
#include <optional>

#include "core/aligned_buffer.h"
#include "core/status.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_features.h"

namespace bl::cpu {

bool matmul_supported(DType weight_type);

// Activation precision. One 8-bit pass leaves ~0.4 % error per activation; over a 30-layer
// model that moves logits by a few percent, and greedy decoding drifts from an fp32
// implementation after a few tokens. int8x2 sends x as two 8-bit terms, x ~ a1 + a2, where a2
// quantizes the residual x - a1 with its own block scales (~2^-8 of a1's step); both terms are
// columns of one dot call, so each weight block is decoded once for both (~1.2x the integer
// work of int8, not 2x).
enum class ActPrecision { int8, int8x2 };
// int8x2 unless BITLIGHT_CPU_ACT=int8 (read once).
ActPrecision active_act_precision();
// The dot kernels of Q2_K and Q3_K: one term (int8, llama.cpp's precision) unless
// BITLIGHT_CPU_ACT=int8x2. At 2-3 bits a weight's own rounding is ~10-15x the int8 activation's
// (rms step / sqrt(12) of 4-8 levels against 255), so the second term buys nothing visible, and
// it costs 1.6-1.85x on these compute-bound kernels (Zen 3, matmul_bench ffn_gate_up, 2 threads:
// q2_k 10.0 -> 18.4 GB/s, q3_k 9.9 -> 15.8 with one term; docs/cpu_kernels.md).
ActPrecision low_bit_act_precision();
// The table terms of the lookup-table kernels (bl<b>g<g> weights, lut_matmul.h): one int8 table
// (T-MAC's) unless BITLIGHT_CPU_LUT_ACT=int8x2 (read once). On AVX2 a second term doubles the
// lookups per byte and makes decode compute-bound (Zen 3, synthetic llama3-1b, one series: bl2g128
// 64 vs 92 %, bl3g128 62 vs 94 % of the read bandwidth with one term); its precision costs ~0.004
// nats of KL on SmolLM2 (README, quality table; docs/cpu_kernels.md, twelfth session).
ActPrecision lut_act_precision();
// The precision a matmul with weights of this type runs at by default: lut_act_precision() for
// the bl types, low_bit_act_precision() for Q2_K and Q3_K, active_act_precision() for the others.
ActPrecision default_act_precision(DType weight_type);

// out[rows, n] = W[cols, rows] · x[cols, n] (+ bias[rows]). x, out, bias F32.
// scratch holds the quantized activations; it grows on first use and is reused after.
// Shapes must have passed check_matmul (asserted in debug builds).
void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
            AlignedBuffer& scratch);
// The same at a given ISA level (lowered to what the CPU supports) and precision (without one,
// default_act_precision of the weight's type); for tests and benchmarks.
void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
            AlignedBuffer& scratch, Isa isa, std::optional<ActPrecision> precision = std::nullopt);

// What a one-token matmul can do inside its own threads (CpuBackend::fused_matmul): take
// x' = rms_norm(x, eps) * norm or x' = silu(x) * up (not both) as its input, each thread making
// the columns it turns into activation tables, and add its product to out instead of storing
// it. So a decode step has no norm, SwiGLU or residual add between its matmuls: each was a
// pass over x on one thread, or a thread-pool region of its own, while the other core idled.
struct DecodeFusion {
  const float* norm = nullptr;  // [cols]
  float eps = 0.0f;
  const float* up = nullptr;    // [cols]
  bool accumulate = false;      // out += W · x' (+ bias)
};
// Whether matmul takes a DecodeFusion for this weight: the bl<b>g<g> types (lut_matmul.h).
bool matmul_fuses_decode(const Tensor& w);
// out[rows] (+)= W[cols, rows] · x'[cols] (+ bias) for one token (x [cols, 1]), as above; only
// where matmul_fuses_decode(w).
void matmul_decode_fused(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, const DecodeFusion& fusion,
                         ThreadPool& pool, AlignedBuffer& scratch);

// Why matmul cannot run on these operands (format, dtypes, shapes, devices), or Ok.
Status check_matmul(const Tensor& w, const Tensor& x, const Tensor& out, const Tensor* bias);

// Bytes of scratch a matmul with this weight type, cols and n tokens needs, so a session can
// allocate it when it plans (then matmul never allocates).
size_t matmul_scratch_bytes(DType weight_type, int64_t cols, int64_t n);

// out[d, n] = dequantized rows ids[0..n) of table [d, n_vocab].
void get_rows(const Tensor& table, const int32_t* ids, int64_t n, Tensor& out);

}  // namespace bl::cpu
