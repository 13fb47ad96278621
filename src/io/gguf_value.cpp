#include "io/gguf_value.h"

#include <algorithm>
#include <cassert>
#include <cstdint>
#include <cstdio>
#include <type_traits>

namespace bl {

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::u8: return "u8";
    case GgufType::i8: return "i8";
    case GgufType::u16: return "u16";
    case GgufType::i16: return "i16";
    case GgufType::u32: return "u32";
    case GgufType::i32: return "i32";
    case GgufType::f32: return "f32";
    case GgufType::boolean: return "bool";
    case GgufType::string: return "string";
    case GgufType::array: return "array";
    case GgufType::u64: return "u64";
    case GgufType::i64: return "i64";
    case GgufType::f64: return "f64";
  }
  return "unknown";
}

bool gguf_is_integer(GgufType t) {
  switch (t) {
    case GgufType::u8: case GgufType::i8: case GgufType::u16: case GgufType::i16:
    case GgufType::u32: case GgufType::i32: case GgufType::u64: case GgufType::i64:
      return true;
    default:
      return false;
  }
}

bool gguf_is_float(GgufType t) { return t == GgufType::f32 || t == GgufType::f64; }

std::string gguf_type_text(const GgufValue& v) {
  if (v.type == GgufType::array) return std::string("array of ") + gguf_type_name(v.elem_type);
  return gguf_type_name(v.type);
}

GgufValue gguf_int(GgufType type, int64_t v) {
  assert(gguf_is_integer(type));
  GgufValue out;
  out.type = type;
  out.value = v;
  return out;
}

GgufValue gguf_u64(uint64_t v) {
  GgufValue out;
  out.type = GgufType::u64;
  if (v <= static_cast<uint64_t>(INT64_MAX))
    out.value = static_cast<int64_t>(v);
  else
    out.value = v;
  return out;
}

GgufValue gguf_float(GgufType type, double v) {
  assert(gguf_is_float(type));
  GgufValue out;
  out.type = type;
  out.value = v;
  return out;
}

GgufValue gguf_bool(bool v) {
  GgufValue out;
  out.type = GgufType::boolean;
  out.value = v;
  return out;
}

GgufValue gguf_string(std::string v) {
  GgufValue out;
  out.type = GgufType::string;
  out.value = std::move(v);
  return out;
}

GgufValue gguf_int_array(GgufType elem_type, std::vector<int64_t> v) {
  assert(gguf_is_integer(elem_type));
  GgufValue out;
  out.type = GgufType::array;
  out.elem_type = elem_type;
  out.value = std::move(v);
  return out;
}

GgufValue gguf_float_array(GgufType elem_type, std::vector<double> v) {
  assert(gguf_is_float(elem_type));
  GgufValue out;
  out.type = GgufType::array;
  out.elem_type = elem_type;
  out.value = std::move(v);
  return out;
}

GgufValue gguf_bool_array(std::vector<bool> v) {
  GgufValue out;
  out.type = GgufType::array;
  out.elem_type = GgufType::boolean;
  out.value = std::move(v);
  return out;
}

GgufValue gguf_string_array(std::vector<std::string> v) {
  GgufValue out;
  out.type = GgufType::array;
  out.elem_type = GgufType::string;
  out.value = std::move(v);
  return out;
}

namespace {

std::string quoted(const std::string& s, size_t max_chars) {
  std::string out = "\"";
  size_t n = 0;
  for (char c : s) {
    if (n++ == max_chars) {
      out += "...";
      break;
    }
    unsigned char u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;  // UTF-8 passes through
    }
  }
  return out + "\"";
}

std::string number_text(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

template <typename T, typename F>
std::string list_text(const std::vector<T>& v, size_t max_elems, F&& one) {
  std::string out = "[";
  size_t shown = std::min(v.size(), max_elems);
  for (size_t i = 0; i < shown; ++i) out += (i ? ", " : "") + one(v[i]);
  if (shown < v.size()) out += (shown ? ", ... (" : "... (") + std::to_string(v.size() - shown) + " more)";
  return out + "]";
}

}  // namespace

std::string gguf_value_text(const GgufValue& v, size_t max_elems, size_t max_string_chars) {
  return std::visit(
      [&](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, uint64_t>) {
          return std::to_string(x);
        } else if constexpr (std::is_same_v<T, double>) {
          return number_text(x);
        } else if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::string>) {
          return quoted(x, max_string_chars);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          return list_text(x, max_elems, [&](const std::string& s) { return quoted(s, max_string_chars); });
        } else if constexpr (std::is_same_v<T, std::vector<double>>) {
          return list_text(x, max_elems, [](double d) { return number_text(d); });
        } else if constexpr (std::is_same_v<T, std::vector<bool>>) {
          std::vector<int> ints(x.begin(), x.end());
          return list_text(ints, max_elems, [](int b) { return std::string(b ? "true" : "false"); });
        } else {
          return list_text(x, max_elems, [](auto i) { return std::to_string(i); });
        }
      },
      v.value);
}

}  // namespace bl
