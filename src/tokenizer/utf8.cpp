#include "tokenizer/utf8.h"

namespace bl::utf8 {

namespace {

// Sequence length announced by a lead byte, 0 for bytes that cannot start one
// (continuation bytes 80..BF, overlong leads C0/C1, F5..FF beyond U+10FFFF).
size_t lead_length(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// The allowed range of the second byte depends on the lead (rules out overlongs, surrogates
// and code points above U+10FFFF); later bytes are always 80..BF.
bool second_byte_ok(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0:
      return b >= 0xA0 && b <= 0xBF;
    case 0xED:
      return b >= 0x80 && b <= 0x9F;
    case 0xF0:
      return b >= 0x90 && b <= 0xBF;
    case 0xF4:
      return b >= 0x80 && b <= 0x8F;
    default:
      return b >= 0x80 && b <= 0xBF;
  }
}

}  // namespace

Seq next_sequence(std::string_view text) {
  if (text.empty()) return {SeqKind::truncated, 0};
  const auto lead = static_cast<uint8_t>(text[0]);
  const size_t need = lead_length(lead);
  if (need == 0) return {SeqKind::invalid, 1};
  for (size_t i = 1; i < need; ++i) {
    if (i >= text.size()) return {SeqKind::truncated, i};
    const auto b = static_cast<uint8_t>(text[i]);
    const bool ok = i == 1 ? second_byte_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return {SeqKind::invalid, i};
  }
  return {SeqKind::complete, need};
}

size_t char_length(std::string_view text) {
  if (text.empty()) return 0;
  const Seq s = next_sequence(text);
  return s.kind == SeqKind::complete ? s.length : 1;
}

void append_code_point(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string sanitize(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const Seq s = next_sequence(text.substr(pos));
    if (s.kind == SeqKind::complete) {
      out.append(text.substr(pos, s.length));
    } else {
      out.append(kReplacement);
    }
    pos += s.length;
  }
  return out;
}

}  // namespace bl::utf8
