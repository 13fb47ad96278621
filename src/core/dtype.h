// Element and block formats. Ids are the GGML type ids, so a GGUF tensor's type field maps
// directly; bitlight's own formats (issue: low bits) take ids from 1000 up.
// The block geometry (elements per block, bytes per block) lives here once; the reference
// quantizers and the kernels live in quant/ and kernels/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace bl {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
};

struct DTypeInfo {
  DType dtype;
  std::string_view name;  // as GGUF tools print it: "q4_0", "f16"
  int64_t block_elems;    // elements per block (1 for plain types)
  int64_t block_bytes;    // bytes per block
  bool quantized;
};

// nullptr for ids this build does not know (a GGUF file may carry any u32).
const DTypeInfo* dtype_info(DType t);
inline const DTypeInfo* dtype_info(uint32_t id) { return dtype_info(static_cast<DType>(id)); }
std::optional<DType> dtype_from_name(std::string_view name);  // case-insensitive "q4_0", "F16"
std::string_view dtype_name(DType t);                         // "?" when unknown

// Bytes of a row of n elements; n must be a multiple of the block size (checked by callers
// that read files, asserted here).
size_t row_bytes(DType t, int64_t n);

}  // namespace bl
