// CPU matrix products with bl<b>g<g> weights (quant/bl_group.h) by table lookup (T-MAC), reading
// the weights as they lie in the file.
//
// Per token the activations x [cols] become tables: for each chunk of 16 features, 64 int8
// bytes, byte 16q + e = round(M_q[e] / s_T) with M_q[e] = (sum over m = 0..3 of +-x_{4q+m}) / 2,
// + where bit m of e is set: 4 quads x 16 entries, one scale s_T per weight group (max |M| /
// 127), plus the group's feature sum. M is T-MAC's mirrored table (M[~e] = -M[e]): a code bit
// b is (1 + sign) / 2, so sum_m bit_m x_m = M[e] + (x0 + x1 + x2 + x3) / 2, and M spans half
// the range of the plain subset sums when the features share a sign: half the rounding error
// for the same 8 bits. The 16 entries are all stored (vpermb reads 64 bytes at once).
// A tile of 16 weight rows is then multiplied without unpacking a code: per 64-byte line of
// nibbles, two nibble registers (and, shift+and) index the chunk's table with one vpermb each,
// and one vpdpbusd per register multiplies every looked-up byte by 2^plane and adds the four
// bytes of a row into its int32 sum. So each line costs the same few instructions at every
// bit width, and decode stays bound by the bytes read: 2 bits read half the lines of 4.
// Per group and row, after the integer sum acc_r = sum_p 2^p sum_quads table[...]:
//
//   out[r] += s_r * (s_T * acc_r + ((2^b - 1) / 2 - z_r) * sum_x)
//
// Precision: the activations enter as int8 table entries, by default one term (about the
// precision of int8 activations with a scale per group; lut_act_precision(), matmul.h) or two
// (ActPrecision::int8x2): the residual of the first rounding as a second table, looked up with
// the same indices, at twice the lookups per byte (decode stays memory-bound with AVX-512 VBMI,
// not with AVX2 at 2-3 bits).
//
// Levels: AVX-512 (VNNI + VBMI: vpermb over the 64-byte table), AVX2 (vpshufb per quad table,
// the quads of a register blended, int16 lane-pair sums), and a scalar twin that computes exactly the same
// integers and fp32 operations, which the SIMD levels are tested against.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/aligned_buffer.h"
#include "core/tensor.h"
#include "core/thread_pool.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/matmul.h"

namespace bl::cpu {

bool lut_matmul_supported(DType weight_type);  // the bl<b>g<g> types

// Bytes of scratch for the tables of n tokens of `cols` features.
size_t lut_matmul_scratch_bytes(DType weight_type, int64_t cols, int64_t n);

// out[rows, n] = W[cols, rows] · x[cols, n] (+ bias[rows]); operands as cpu::matmul's
// (check_matmul has passed). isa is lowered to what the CPU supports. precision int8x2: two
// table terms (the residual of the first, rounded again), about 250x finer than one.
// fusion (matmul.h), for one token only: x' instead of x, out += instead of =. With a norm the
// tables are built from x * norm and the sums scaled by 1 / rms(x) afterwards (each group's
// table and sum scale with its input, the int8 entries do not), so the threads build their
// shares before the total sum of squares is known.
void lut_matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
                AlignedBuffer& scratch, Isa isa, ActPrecision precision, const DecodeFusion& fusion = {});

}  // namespace bl::cpu
