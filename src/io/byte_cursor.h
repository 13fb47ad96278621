// A read position over untrusted bytes: every read is checked against the end, and a failed
// read leaves the position unchanged so the caller can report where it was.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace bl {

class ByteCursor {
 public:
  ByteCursor(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t size() const { return size_; }
  uint64_t remaining() const { return size_ - pos_; }
  bool has(uint64_t bytes) const { return bytes <= remaining(); }

  // Little-endian scalar (the host is little-endian; GGUF and safetensors are too).
  template <typename T>
  bool read(T& out) {
    static_assert(std::is_trivially_copyable_v<T>);
    if (!has(sizeof(T))) return false;
    std::memcpy(&out, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return true;
  }

  bool read_string(uint64_t bytes, std::string& out) {
    if (!has(bytes)) return false;
    out.assign(reinterpret_cast<const char*>(data_ + pos_), bytes);
    pos_ += bytes;
    return true;
  }

  bool skip(uint64_t bytes) {
    if (!has(bytes)) return false;
    pos_ += bytes;
    return true;
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

// A name from an untrusted file, made safe to print in an error message: quoted, control and
// non-ASCII bytes escaped as \xNN, cut after max_chars.
inline std::string printable_name(std::string_view s, size_t max_chars = 80) {
  static const char* hex = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size(); ++i) {
    if (out.size() > max_chars) {
      out += "...";
      break;
    }
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  out += "'";
  return out;
}

}  // namespace bl
