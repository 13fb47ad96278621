// cpu::matmul for Layout::tiles16 weights (Q4_0 / Q4_1 / Q8_0 / Q4_K with 16 rows interleaved,
// interleaved_rows.h).
//
// Per tile of 16 rows and block of 32 weights, each activation column costs one vpdpbusd per
// 4 bytes of the 16 rows (the 4 activation bytes broadcast to every row's lane): 8 per block,
// whatever the format; the nibble formats add 3 unpack instructions per 64 weight bytes, shared
// by all columns. The 16 int32 sums of a block are scaled once: out += d_w[16] * (d_x * sum +
// offset), where offset folds Q4_0's -8 and Q8_0's +128 (weights stored as w + 128) into the
// activations' block sums, and Q4_1's min adds m_w[16] * d_x * sum(q_x). Q4_K does the same per
// 32-weight sub-block with its 6-bit scale and min, unpacked for 16 rows at once, and applies d
// and dmin once per super-block.
//
// The activations are quantized per token into int8 blocks of 32 with fp32 scales (round to
// nearest even), one or two terms as ActPrecision says (matmul.h); both terms of a token are
// summed inside the kernel.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/aligned_buffer.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"

namespace bl::cpu {

// Where a token's quantized activations sit in the scratch: for each term, int8 q[cols] (64-byte
// padded) and fp32 d[nb] (64-byte padded); then fp32 offset[nb], the format's per-block term
// (Q4_0: -8 * sum over terms of d * sum(q); Q8_0: -128 * that; Q4_1: that sum itself).
struct TokenActsLayout {
  int64_t cols = 0, nb = 0;
  int terms = 1;
  size_t q_bytes = 0, d_bytes = 0, token_bytes = 0;

  TokenActsLayout(int64_t cols, int terms);
  int8_t* q(void* token, int term) const { return reinterpret_cast<int8_t*>(static_cast<char*>(token) + term_offset(term)); }
  float* d(void* token, int term) const {
    return reinterpret_cast<float*>(static_cast<char*>(token) + term_offset(term) + q_bytes);
  }
  float* offset(void* token) const { return reinterpret_cast<float*>(static_cast<char*>(token) + term_offset(terms)); }

 private:
  size_t term_offset(int term) const { return static_cast<size_t>(term) * (q_bytes + d_bytes); }
};

// What the offset array holds per block, as a multiple of the sum over terms of d * sum(q).
inline float interleaved_offset_factor(DType type) {
  if (type == DType::Q4_0) return -8.0f;    // weights are nibble - 8
  if (type == DType::Q8_0) return -128.0f;  // weights stored as w + 128
  return 1.0f;                              // Q4_1, Q4_K: multiplied by the min in the kernel
}

// One matmul's operands as the tile kernels see them.
struct InterleavedMatmul {
  DType type;
  const uint8_t* w;     // Layout::tiles16
  int64_t cols, rows;
  const char* acts;     // token t at acts + t * layout.token_bytes
  TokenActsLayout layout;
  int64_t n;            // tokens
  const float* bias;    // [rows] or nullptr
  float* out;           // [rows, n]: out[t * rows + r]
};

struct InterleavedKernels {
  // Quantizes token x[cols] into `terms` terms and the offset of `type` (layout above).
  void (*quantize_token)(const float* x, DType type, const TokenActsLayout& layout, void* token);
  // out rows of tiles [tile0, tile1) for tokens [t0, t1).
  void (*tiles)(const InterleavedMatmul& m, int64_t tile0, int64_t tile1, int64_t t0, int64_t t1);
};

// Portable C++ (the reference for the vector kernels; also what a lower ISA level runs on a
// weight that was interleaved at load).
const InterleavedKernels& interleaved_kernels_scalar();
// AVX-512 with VNNI; nullptr when the CPU lacks either.
const InterleavedKernels* interleaved_kernels_avx512();

// Whether the CPU backend should interleave weights at load: the vector kernels exist at the
// active ISA level and BITLIGHT_CPU_INTERLEAVE is not 0 (read once).
bool interleave_at_load();

size_t interleaved_matmul_scratch_bytes(int64_t cols, int64_t n);

// out[rows, n] = W · x (+ bias) for a tiles16 weight; kernels of level isa (scalar below
// AVX-512). Shapes as check_matmul.
void interleaved_matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
                        AlignedBuffer& scratch, Isa isa, ActPrecision precision);

}  // namespace bl::cpu
