// UTF-8 helpers shared by the tokenizers and the stream decoder. Invalid input is never an
// error here: callers decide whether bad bytes become U+FFFD or pass through as bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace bl::utf8 {

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// What starts at text[0]: a complete valid sequence of `length` bytes, a valid but truncated
// prefix (the text ends inside it), or an invalid byte run of `length` bytes (the maximal
// subpart, as Unicode's "substitution of maximal subparts" defines it; at least 1).
enum class SeqKind { complete, truncated, invalid };
struct Seq {
  SeqKind kind;
  size_t length;
};
Seq next_sequence(std::string_view text);

// Byte length of the character starting at text[0]: the full sequence when valid, else 1
// (an invalid or truncated byte stands alone). 0 only for empty text.
size_t char_length(std::string_view text);

// Appends the UTF-8 encoding of a code point (<= 0x10FFFF, not a surrogate).
void append_code_point(std::string& out, uint32_t cp);

// Text with every invalid or truncated sequence replaced by U+FFFD.
std::string sanitize(std::string_view text);

}  // namespace bl::utf8
