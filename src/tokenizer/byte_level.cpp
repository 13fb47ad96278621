#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace bl::byte_level {

namespace {

bool maps_to_itself(uint32_t b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Tables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 0x144> from_cp{};  // code points 0..0x143 cover the whole mapping; -1 = none
  Tables() {
    from_cp.fill(-1);
    uint32_t next_shifted = 0x100;
    for (uint32_t b = 0; b < 256; ++b) {
      to_cp[b] = maps_to_itself(b) ? b : next_shifted++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

// Decodes the code point of a complete UTF-8 sequence of `len` bytes.
uint32_t code_point_of(std::string_view s, size_t len) {
  const auto b0 = static_cast<uint8_t>(s[0]);
  if (len == 1) return b0;
  uint32_t cp = b0 & (0xFF >> (len + 1));
  for (size_t i = 1; i < len; ++i) cp = (cp << 6) | (static_cast<uint8_t>(s[i]) & 0x3F);
  return cp;
}

}  // namespace

uint32_t byte_to_code_point(uint8_t byte) { return tables().to_cp[byte]; }

std::optional<uint8_t> code_point_to_byte(uint32_t cp) {
  if (cp >= tables().from_cp.size() || tables().from_cp[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(tables().from_cp[cp]);
}

std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8::append_code_point(out, byte_to_code_point(static_cast<uint8_t>(c)));
  return out;
}

std::string decode(std::string_view mapped) {
  std::string out;
  out.reserve(mapped.size());
  size_t pos = 0;
  while (pos < mapped.size()) {
    const std::string_view rest = mapped.substr(pos);
    const utf8::Seq seq = utf8::next_sequence(rest);
    const size_t len = seq.kind == utf8::SeqKind::complete ? seq.length : 1;
    const auto byte =
        seq.kind == utf8::SeqKind::complete ? code_point_to_byte(code_point_of(rest, len)) : std::nullopt;
    if (byte) {
      out += static_cast<char>(*byte);
    } else {
      out.append(rest.substr(0, len));
    }
    pos += len;
  }
  return out;
}

}  // namespace bl::byte_level
