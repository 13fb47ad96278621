// GPT-2's byte <-> unicode mapping: byte-level BPE vocabularies store every byte as a
// printable code point (printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100..U+0143 in byte order), so " " is stored as "Ġ" (U+0120) and "\n" as "Ċ" (U+010A).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bl::byte_level {

uint32_t byte_to_code_point(uint8_t byte);
// The byte a code point stands for; nullopt for code points outside the mapping.
std::optional<uint8_t> code_point_to_byte(uint32_t cp);

// "hi there" -> "hiĠthere": every byte becomes the UTF-8 of its code point.
std::string encode(std::string_view bytes);
// The inverse; characters outside the mapping (e.g. raw text of an added token) are kept as
// their UTF-8 bytes.
std::string decode(std::string_view mapped);

}  // namespace bl::byte_level
