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

bool gguf_is_integer(GgufType t);  // u8..u64, i8..i64
bool gguf_is_float(GgufType t);    // f32, f64
// "u32", "array of string": the type as an error message names it.
std::string gguf_type_text(const GgufValue& v);

// Values of an exact on-disk type (GgufWriter writes v.type as it is). Integer builders take
// an integer type and float builders f32 or f64; another type is a caller bug (asserted).
GgufValue gguf_int(GgufType type, int64_t v);
GgufValue gguf_u64(uint64_t v);
GgufValue gguf_float(GgufType type, double v);
GgufValue gguf_bool(bool v);
GgufValue gguf_string(std::string v);
GgufValue gguf_int_array(GgufType elem_type, std::vector<int64_t> v);
GgufValue gguf_float_array(GgufType elem_type, std::vector<double> v);
GgufValue gguf_bool_array(std::vector<bool> v);
GgufValue gguf_string_array(std::vector<std::string> v);

// The value as text for display: strings quoted, arrays as [a, b, ... (n more)] with at most
// max_elems elements shown, strings cut after max_string_chars.
std::string gguf_value_text(const GgufValue& v, size_t max_elems = 8, size_t max_string_chars = 120);

}  // namespace bl
