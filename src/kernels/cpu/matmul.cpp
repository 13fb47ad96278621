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

#include "kernels/cpu/dot_kernels.h"
#include "quant/blocks.h"

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

bool matmul_supported(DType weight_type) { return dot_kernel_scalar(weight_type) != nullptr; }

Status check_matmul(const Tensor& w, const Tensor& x, const Tensor& out, const Tensor* bias) {
  if (!matmul_supported(w.dtype))
    return unsupported("matmul: no CPU kernel for weight type " + std::string(dtype_name(w.dtype)));
  if (w.device != Device::cpu || x.device != Device::cpu || out.device != Device::cpu)
    return invalid_argument("matmul: operands must be on the CPU");
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
  size_t most = 0;
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512})
    if (const DotKernel* k = find_dot_kernel(weight_type, isa)) most = std::max(most, act_column_bytes(*k, cols));
  return most * static_cast<size_t>(n);
}

void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
            AlignedBuffer& scratch) {
  matmul(w, x, out, bias, pool, scratch, active_isa());
}

void matmul(const Tensor& w, const Tensor& x, Tensor& out, const Tensor* bias, ThreadPool& pool,
            AlignedBuffer& scratch, Isa isa) {
  assert(check_matmul(w, x, out, bias).ok());
  const DotKernel& k = *find_dot_kernel(w.dtype, isa);
  const int64_t cols = w.cols(), rows = w.rows(), n = x.rows();
  const float* xf = x.as<const float>();

  // x [cols, n] -> n columns of quantized blocks, column_bytes apart (cache-line aligned).
  const void* act = xf;
  size_t column_bytes = static_cast<size_t>(cols) * sizeof(float);
  if (k.act != DType::F32) {
    column_bytes = act_column_bytes(k, cols);
    const size_t need = column_bytes * static_cast<size_t>(n);
    if (scratch.bytes() < need && !scratch.resize(need)) {
      assert(!"matmul: cannot allocate activation scratch");
      return;
    }
    char* q = scratch.as<char>();
    pool.parallel_for(n, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) k.quantize_act(xf + c * cols, q + column_bytes * c, cols);
    });
    act = q;
  }

  float* o = out.as<float>();
  const float* b = bias ? bias->as<const float>() : nullptr;
  const char* wbase = static_cast<const char*>(w.data);
  const size_t w_row_bytes = w.row_size();
  pool.parallel_for(rows, kRowGrain, [&](int64_t r0, int64_t r1) {
    float tile[kMaxDotCols];
    for (int64_t r = r0; r < r1; ++r) {
      const void* wr = wbase + w_row_bytes * r;
      const float add = b ? b[r] : 0.0f;
      for (int64_t c0 = 0; c0 < n; c0 += kMaxDotCols) {
        const int nc = static_cast<int>(std::min<int64_t>(kMaxDotCols, n - c0));
        k.dot(cols, wr, static_cast<const char*>(act) + column_bytes * c0, column_bytes, nc, tile);
        for (int c = 0; c < nc; ++c) o[(c0 + c) * rows + r] = tile[c] + add;
      }
    }
  });
}

}  // namespace bl::cpu
