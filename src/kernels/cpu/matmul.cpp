// cpu::matmul: quantize the activations once, then one dot kernel per (weight row, tile of up
// to kMaxDotCols tokens), rows split across the thread pool.
//
// Each thread owns a contiguous range of weight rows, so it streams its share of W from DRAM
// exactly once per call, whatever n is: a row (cols * bits / 8 bytes, ~1 KiB for Q4_0 at
// cols = 2048) stays in L1 while every column tile of x is multiplied with it.
#include "kernels/cpu/matmul.h"

#include <algorithm>
#include <cassert>
#include <string>

#include "core/env_switch.h"
#include "kernels/cpu/dot_kernels.h"
#include "kernels/cpu/interleaved_rows.h"
#include "kernels/cpu/lut_matmul.h"
#include "kernels/cpu/matmul_interleaved.h"
#include "quant/blocks.h"
#include "quant/quant.h"

namespace bl::cpu {
namespace {

constexpr size_t kCacheLine = 64;

// Rows per parallel_for grain: enough work per chunk that dispatch stays cheap, small enough
// that two threads split a 512-row K/V projection evenly.
constexpr int64_t kRowGrain = 16;

}  // namespace

size_t act_column_bytes(const DotKernel& k, int64_t cols) {
  if (k.act == DType::F32) return 0;
  size_t bytes = row_bytes(k.act, cols);
  if (k.layout != ActLayout::blocks)
    bytes = act_scales_offset(k.layout, cols / kQK) + 2 * sizeof(float) * static_cast<size_t>(cols / kQK);
  return (bytes + kCacheLine - 1) / kCacheLine * kCacheLine;
}

bool matmul_supported(DType weight_type) {
  return dot_kernel_scalar(weight_type) != nullptr || lut_matmul_supported(weight_type);  // bl<b>g<g>: lut_matmul.h
}

namespace {

// The precision an environment variable names (int8 or int8x2), or nullopt when it is unset or
// names neither (with a warning).
std::optional<ActPrecision> precision_from_env(const char* name) {
  const auto v = env_choice(name, {"int8", "int8x2"});
  if (v == "int8x2") return ActPrecision::int8x2;
  if (v == "int8") return ActPrecision::int8;
  return std::nullopt;
}

std::optional<ActPrecision> dot_precision_from_env() {
  static const std::optional<ActPrecision> precision = precision_from_env("BITLIGHT_CPU_ACT");
  return precision;
}

}  // namespace

ActPrecision active_act_precision() { return dot_precision_from_env().value_or(ActPrecision::int8x2); }

ActPrecision low_bit_act_precision() { return dot_precision_from_env().value_or(ActPrecision::int8); }

ActPrecision lut_act_precision() {
  static const ActPrecision precision = precision_from_env("BITLIGHT_CPU_LUT_ACT").value_or(ActPrecision::int8);
  return precision;
}

ActPrecision default_act_precision(DType weight_type) {
  if (lut_matmul_supported(weight_type)) return lut_act_precision();
  if (weight_type == DType::Q2_K || weight_type == DType::Q3_K) return low_bit_act_precision();
  return active_act_precision();
}

namespace {

// Column c of x back in fp32, exactly as the kernel sees its activations.
void dequantize_act_column(const DotKernel& k, const void* column, float* x, int64_t cols) {
  if (k.dequantize_act) {
    k.dequantize_act(column, x, cols);
  } else {
    dequantize_row(k.act, column, x, cols);
  }
}

}  // namespace

Status check_matmul(const Tensor& w, const Tensor& x, const Tensor& out, const Tensor* bias) {
  if (!matmul_supported(w.dtype))
    return unsupported("matmul: no CPU kernel for weight type " + std::string(dtype_name(w.dtype)));
  if (w.device != Device::cpu || x.device != Device::cpu || out.device != Device::cpu)
    return invalid_argument("matmul: operands must be on the CPU");
  if (w.layout == Layout::tiles16 && !can_interleave(w.dtype, w.rows()))
    return invalid_argument("matmul: weight " + shape_string(w) + " cannot be in the 16-row tile layout");
  if (x.dtype != DType::F32 || out.dtype != DType::F32) return invalid_argument("matmul: x and out must be f32");
  const DTypeInfo* info = dtype_info(w.dtype);
  if (w.cols() % info->block_elems != 0)
    return invalid_argument("matmul: weight cols " + std::to_string(w.cols()) + " is not a multiple of the " +
                            std::string(info->name) + " block size " + std::to_string(info->block_elems));
  if (x.cols() != w.cols())
    return invalid_argument("matmul: x has " + std::to_string(x.cols()) + " features, W has " +
                            std::to_string(w.cols()) + " cols");
  if (out.cols() != w.rows() || out.rows() != x.rows())
    return invalid_argument("matmul: out is " + shape_string(out) + ", expected [" + std::to_string(w.rows()) + ", " +
                            std::to_string(x.rows()) + "]");
  if (bias && (bias->dtype != DType::F32 || bias->elements() != w.rows()))
    return invalid_argument("matmul: bias must be f32 with " + std::to_string(w.rows()) + " elements");
  return Status::Ok();
}

size_t matmul_scratch_bytes(DType weight_type, int64_t cols, int64_t n) {
  if (lut_matmul_supported(weight_type)) return lut_matmul_scratch_bytes(weight_type, cols, n);
  size_t most = 0;
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
    if (const DotKernel* k = find_dot_kernel(weight_type, isa)) most = std::max(most, act_column_bytes(*k, cols));
  // Two activation terms per column, plus one fp32 column of residual per column.
  const size_t row_layout = (2 * most + static_cast<size_t>(cols) * sizeof(float)) * static_cast<size_t>(n);
  // The weight may have been interleaved at load (CpuBackend::upload_weight).
  return can_interleave(weight_type, kTileRows) ? std::max(row_layout, interleaved_matmul_scratch_bytes(cols, n))
                                                : row_layout;
}

void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
            AlignedBuffer& scratch) {
  matmul(w, x, out, bias, pool, scratch, active_isa());
}

bool matmul_fuses_decode(const Tensor& w) { return lut_matmul_supported(w.dtype); }

void matmul_decode_fused(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, const DecodeFusion& fusion,
                         ThreadPool& pool, AlignedBuffer& scratch) {
  assert(check_matmul(w, x, out, bias).ok() && x.rows() == 1 && matmul_fuses_decode(w));
  lut_matmul(w, x, out, bias, pool, scratch, active_isa(), default_act_precision(w.dtype), fusion);
}

void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
            AlignedBuffer& scratch, Isa isa, std::optional<ActPrecision> requested) {
  assert(check_matmul(w, x, out, bias).ok());
  const ActPrecision precision = requested.value_or(default_act_precision(w.dtype));
  if (w.layout == Layout::tiles16) return interleaved_matmul(w, x, out, bias, pool, scratch, isa, precision);
  if (lut_matmul_supported(w.dtype)) return lut_matmul(w, x, out, bias, pool, scratch, isa, precision);
  const DotKernel& k = *find_dot_kernel(w.dtype, isa);
  const int64_t cols = w.cols(), rows = w.rows(), n = x.rows();
  const float* xf = x.as<const float>();

  // x [cols, n] -> n * terms columns of quantized blocks, column_bytes apart (cache-line
  // aligned). With int8x2 the two terms of token t are columns 2t and 2t + 1, so one dot call
  // decodes each weight block once for both terms.
  const void* act = xf;
  size_t column_bytes = static_cast<size_t>(cols) * sizeof(float);
  int terms = 1;
  if (k.act != DType::F32) {
    terms = precision == ActPrecision::int8x2 ? 2 : 1;
    column_bytes = act_column_bytes(k, cols);
    const size_t terms_bytes = column_bytes * static_cast<size_t>(n) * static_cast<size_t>(terms);
    const size_t residual_bytes = terms == 2 ? static_cast<size_t>(cols) * sizeof(float) * static_cast<size_t>(n) : 0;
    if (scratch.bytes() < terms_bytes + residual_bytes && !scratch.resize(terms_bytes + residual_bytes)) {
      assert(!"matmul: cannot allocate activation scratch");
      return;
    }
    char* q = scratch.as<char>();
    float* residual = reinterpret_cast<float*>(q + terms_bytes);  // [cols, n]
    pool.parallel_for(n, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const float* xt = xf + t * cols;
        char* first = q + column_bytes * static_cast<size_t>(t * terms);
        k.quantize_act(xt, first, cols);
        if (terms == 1) continue;
        float* rt = residual + t * cols;
        dequantize_act_column(k, first, rt, cols);
        for (int64_t i = 0; i < cols; ++i) rt[i] = xt[i] - rt[i];
        k.quantize_act(rt, first + column_bytes, cols);
      }
    });
    act = q;
  }

  float* o = out.as<float>();
  const float* b = bias ? bias->as<const float>() : nullptr;
  const char* wbase = static_cast<const char*>(w.data);
  const size_t w_row_bytes = w.row_size();
  const int64_t n_columns = n * terms;
  static_assert(kMaxDotCols % 2 == 0, "a tile must hold both terms of a token");
  pool.parallel_for(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    float tile[kMaxDotCols];
    for (int64_t r = r0; r < r1; ++r) {
      const void* wr = wbase + w_row_bytes * r;
      const float add = b ? b[r] : 0.0f;
      for (int64_t c0 = 0; c0 < n_columns; c0 += kMaxDotCols) {
        const int nc = static_cast<int>(std::min<int64_t>(kMaxDotCols, n_columns - c0));
        k.dot(cols, wr, static_cast<const char*>(act) + column_bytes * c0, column_bytes, nc, tile);
        for (int c = 0; c < nc; c += terms) {
          const float sum = terms == 2 ? tile[c] + tile[c + 1] : tile[c];
          o[(c0 + c) / terms * rows + r] = sum + add;
        }
      }
    }
  });
}

}  // namespace bl::cpu
