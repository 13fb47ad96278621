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
  // bitlight's group format bl<b>g<g> (quant/bl_group.h): id = 1000 + 10 * bits + {0, 1, 2} for
  // group size {32, 64, 128}.
  BL1G32 = 1010,
  BL1G64 = 1011,
  BL1G128 = 1012,
  BL2G32 = 1020,
  BL2G64 = 1021,
  BL2G128 = 1022,
  BL3G32 = 1030,
  BL3G64 = 1031,
  BL3G128 = 1032,
  BL4G32 = 1040,
  BL4G64 = 1041,
  BL4G128 = 1042,
  BL5G32 = 1050,
  BL5G64 = 1051,
  BL5G128 = 1052,
  BL6G32 = 1060,
  BL6G64 = 1061,
  BL6G128 = 1062,
  BL7G32 = 1070,
  BL7G64 = 1071,
  BL7G128 = 1072,
  BL8G32 = 1080,
  BL8G64 = 1081,
  BL8G128 = 1082,
};

struct DTypeInfo {
  DType dtype;
  std::string_view name;  // as GGUF tools print it: "q4_0", "f16"
  int64_t block_elems;    // elements per block (1 for plain types)
  int64_t block_bytes;    // bytes per block
  bool quantized;
  // Rows stored together: 1 for GGUF's row-major types; 16 for bl<b>g<g>, whose tiles hold
  // 16 rows side by side (quant/bl_group.h), so a tensor's row count must be a multiple of it.
  int64_t tile_rows = 1;
};

// Files holding tiled types (tile_rows > 1) carry this key with this value: the bl types' bytes
// changed layout once (bit planes per row -> 16-row tiles), and an older file must be refused,
// not decoded wrongly. Written by GgufWriter, checked by the GGUF reader.
inline constexpr const char* kTileLayoutKey = "bitlight.tile_layout";
inline constexpr uint32_t kTileLayoutVersion = 2;

// nullptr for ids this build does not know (a GGUF file may carry any u32).
const DTypeInfo* dtype_info(DType t);
inline const DTypeInfo* dtype_info(uint32_t id) { return dtype_info(static_cast<DType>(id)); }
std::optional<DType> dtype_from_name(std::string_view name);  // case-insensitive "q4_0", "F16"
std::string_view dtype_name(DType t);                         // "?" when unknown

// Bytes of a row of n elements; n must be a multiple of the block size (checked by callers
// that read files, asserted here).
size_t row_bytes(DType t, int64_t n);

}  // namespace bl
