// cpu::get_rows: embedding lookup, dequantizing each selected row with the reference code
// (a few rows per token, so the scalar dequantizer is not on the critical path); tied
// embeddings may have been interleaved at load for the output matmul (interleaved_rows.h).
#include <algorithm>
#include <cassert>

#include "kernels/cpu/interleaved_rows.h"
#include "kernels/cpu/matmul.h"
#include "quant/quant.h"

namespace bl::cpu {

void get_rows(const Tensor& table, const int32_t* ids, int64_t n, Tensor& out) {
  const int64_t d = table.cols();
  assert(can_dequantize(table.dtype) && out.dtype == DType::F32 && out.cols() == d && out.rows() >= n);
  float* o = out.as<float>();
  for (int64_t i = 0; i < n; ++i) {
    // Token ids are validated where they enter (tokenizer, request); an id out of range here
    // is a bug: it asserts in debug builds and reads nothing (a zero row) in release builds.
    assert(ids[i] >= 0 && ids[i] < table.rows());
    if (ids[i] < 0 || ids[i] >= table.rows()) {
      std::fill(o + i * d, o + (i + 1) * d, 0.0f);
      continue;
    }
    if (table.layout == Layout::tiles16) {
      dequantize_interleaved_row(table, ids[i], o + i * d);
    } else {
      dequantize_matrix_row(table.dtype, table.data, d, ids[i], o + i * d);
    }
  }
}

}  // namespace bl::cpu
