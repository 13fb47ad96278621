// GGUF metadata values: the 13 value types of the GGUF spec, arrays included.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace bl {

enum class GgufType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};

const char* gguf_type_name(GgufType t);

struct GgufValue {
  GgufType type = GgufType::u8;
  GgufType elem_type = GgufType::u8;  // for arrays
  // Scalars: integers as int64_t (u64 above INT64_MAX as uint64_t), floats as double.
  // Arrays keep one vector of the widened element type.
  std::variant<int64_t, uint64_t, double, bool, std::string, std::vector<int64_t>, std::vector<uint64_t>,
               std::vector<double>, std::vector<bool>, std::vector<std::string>>
      value;
};

struct GgufKeyValue {
  std::string key;
  GgufValue value;
};

}  // namespace bl
