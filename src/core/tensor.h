// A non-owning view of a contiguous tensor on some device.
//
// Shapes follow the GGUF/ggml convention: ne[0] is the innermost (contiguous) dimension, so a
// weight matrix W with `rows` output features of `cols` inputs each has ne = {cols, rows}, and
// an activation batch x of n tokens with d features has ne = {d, n}. Quantized dtypes pack
// ne[0] elements into row_bytes(dtype, ne[0]) bytes; ne[0] is a multiple of the block size.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace bl {

enum class Device : uint8_t { cpu, cuda };

// How the blocks of a weight sit in memory. `rows`: as in the model file, row after row.
// `tiles16` (CPU backend only, Q4_0 / Q4_1 / Q8_0 / Q4_K): 16 rows interleaved per tile so that one
// 512-bit register holds 4 bytes of each of 16 rows (kernels/cpu/interleaved_rows.h); the byte
// count is the same, but row(r) does not point at row r. Only code that checks the layout may
// read such a tensor. The bl<b>g<g> types are tiled by their format (DTypeInfo::tile_rows = 16):
// row(r) of those points at row r only when r is a multiple of 16; read rows with
// dequantize_matrix_row (quant/quant.h).
enum class Layout : uint8_t { rows, tiles16 };

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  std::array<int64_t, 4> ne = {0, 1, 1, 1};
  Device device = Device::cpu;
  Layout layout = Layout::rows;

  int64_t cols() const { return ne[0]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }  // everything above the innermost dim
  int64_t elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  size_t row_size() const { return row_bytes(dtype, ne[0]); }
  size_t bytes() const { return row_size() * static_cast<size_t>(rows()); }

  template <typename T>
  T* as() const { return static_cast<T*>(data); }
  // Start of row r (over the flattened outer dims), in bytes from data; Layout::rows only.
  void* row(int64_t r) const { return static_cast<char*>(data) + static_cast<size_t>(r) * row_size(); }
};

inline Tensor make_tensor(void* data, DType dtype, std::array<int64_t, 4> ne, Device device = Device::cpu) {
  return Tensor{data, dtype, ne, device, Layout::rows};
}
inline Tensor make_tensor_2d(void* data, DType dtype, int64_t cols, int64_t rows, Device device = Device::cpu) {
  return Tensor{data, dtype, {cols, rows, 1, 1}, device, Layout::rows};
}

std::string shape_string(const Tensor& t);  // "[576, 1536] q4_1"

}  // namespace bl
