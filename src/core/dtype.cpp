#include "core/dtype.h"

#include <array>
#include <cassert>
#include <cctype>

namespace bl {
namespace {

// Block layouts follow ggml's (see quant/ for the field order of each block).
constexpr std::array kDTypes = {
    DTypeInfo{DType::F32, "f32", 1, 4, false},
    DTypeInfo{DType::F16, "f16", 1, 2, false},
    DTypeInfo{DType::Q4_0, "q4_0", 32, 18, true},
    DTypeInfo{DType::Q4_1, "q4_1", 32, 20, true},
    DTypeInfo{DType::Q5_0, "q5_0", 32, 22, true},
    DTypeInfo{DType::Q5_1, "q5_1", 32, 24, true},
    DTypeInfo{DType::Q8_0, "q8_0", 32, 34, true},
    DTypeInfo{DType::Q8_1, "q8_1", 32, 36, true},
    DTypeInfo{DType::Q2_K, "q2_k", 256, 84, true},
    DTypeInfo{DType::Q3_K, "q3_k", 256, 110, true},
    DTypeInfo{DType::Q4_K, "q4_k", 256, 144, true},
    DTypeInfo{DType::Q5_K, "q5_k", 256, 176, true},
    DTypeInfo{DType::Q6_K, "q6_k", 256, 210, true},
    DTypeInfo{DType::Q8_K, "q8_k", 256, 292, true},
    DTypeInfo{DType::I8, "i8", 1, 1, false},
    DTypeInfo{DType::I16, "i16", 1, 2, false},
    DTypeInfo{DType::I32, "i32", 1, 4, false},
    DTypeInfo{DType::I64, "i64", 1, 8, false},
    DTypeInfo{DType::F64, "f64", 1, 8, false},
    DTypeInfo{DType::BF16, "bf16", 1, 2, false},
    DTypeInfo{DType::TQ1_0, "tq1_0", 256, 54, true},
    DTypeInfo{DType::TQ2_0, "tq2_0", 256, 66, true},
    // bl<b>g<g>: per row and group an fp16 scale, an fp16 zero and b * g / 8 bytes of codes, stored
    // in tiles of 16 rows (quant/bl_group.h).
    DTypeInfo{DType::BL1G32, "bl1g32", 32, 8, true, 16},
    DTypeInfo{DType::BL1G64, "bl1g64", 64, 12, true, 16},
    DTypeInfo{DType::BL1G128, "bl1g128", 128, 20, true, 16},
    DTypeInfo{DType::BL2G32, "bl2g32", 32, 12, true, 16},
    DTypeInfo{DType::BL2G64, "bl2g64", 64, 20, true, 16},
    DTypeInfo{DType::BL2G128, "bl2g128", 128, 36, true, 16},
    DTypeInfo{DType::BL3G32, "bl3g32", 32, 16, true, 16},
    DTypeInfo{DType::BL3G64, "bl3g64", 64, 28, true, 16},
    DTypeInfo{DType::BL3G128, "bl3g128", 128, 52, true, 16},
    DTypeInfo{DType::BL4G32, "bl4g32", 32, 20, true, 16},
    DTypeInfo{DType::BL4G64, "bl4g64", 64, 36, true, 16},
    DTypeInfo{DType::BL4G128, "bl4g128", 128, 68, true, 16},
    DTypeInfo{DType::BL5G32, "bl5g32", 32, 24, true, 16},
    DTypeInfo{DType::BL5G64, "bl5g64", 64, 44, true, 16},
    DTypeInfo{DType::BL5G128, "bl5g128", 128, 84, true, 16},
    DTypeInfo{DType::BL6G32, "bl6g32", 32, 28, true, 16},
    DTypeInfo{DType::BL6G64, "bl6g64", 64, 52, true, 16},
    DTypeInfo{DType::BL6G128, "bl6g128", 128, 100, true, 16},
    DTypeInfo{DType::BL7G32, "bl7g32", 32, 32, true, 16},
    DTypeInfo{DType::BL7G64, "bl7g64", 64, 60, true, 16},
    DTypeInfo{DType::BL7G128, "bl7g128", 128, 116, true, 16},
    DTypeInfo{DType::BL8G32, "bl8g32", 32, 36, true, 16},
    DTypeInfo{DType::BL8G64, "bl8g64", 64, 68, true, 16},
    DTypeInfo{DType::BL8G128, "bl8g128", 128, 132, true, 16},
};

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

}  // namespace

const DTypeInfo* dtype_info(DType t) {
  for (const auto& info : kDTypes)
    if (info.dtype == t) return &info;
  return nullptr;
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& info : kDTypes)
    if (iequals(info.name, name)) return info.dtype;
  return std::nullopt;
}

std::string_view dtype_name(DType t) {
  const DTypeInfo* info = dtype_info(t);
  return info ? info->name : std::string_view("?");
}

size_t row_bytes(DType t, int64_t n) {
  const DTypeInfo* info = dtype_info(t);
  assert(info && n % info->block_elems == 0);
  return static_cast<size_t>(n / info->block_elems * info->block_bytes);
}

}  // namespace bl
