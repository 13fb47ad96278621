// GPT-2 byte <-> unicode mapping and the UTF-8 helpers under the tokenizers.
#include <gtest/gtest.h>

#include <set>

#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace bl {
namespace {

TEST(ByteLevel, PrintableBytesMapToThemselvesOthersShiftAbove0x100) {
  EXPECT_EQ(byte_level::byte_to_code_point('A'), uint32_t{'A'});
  EXPECT_EQ(byte_level::byte_to_code_point('~'), uint32_t{'~'});
  EXPECT_EQ(byte_level::byte_to_code_point(0xE9), 0xE9u);  // é: Latin-1 printable
  EXPECT_EQ(byte_level::byte_to_code_point(0x00), 0x100u);
  EXPECT_EQ(byte_level::byte_to_code_point('\n'), 0x10Au);  // "Ċ"
  EXPECT_EQ(byte_level::byte_to_code_point(' '), 0x120u);   // "Ġ"
  EXPECT_EQ(byte_level::byte_to_code_point(0x7F), 0x121u);
  EXPECT_EQ(byte_level::byte_to_code_point(0xA0), 0x142u);
  EXPECT_EQ(byte_level::byte_to_code_point(0xAD), 0x143u);  // soft hyphen: the last shifted byte
}

TEST(ByteLevel, MappingIsABijectionOnAll256Bytes) {
  std::set<uint32_t> seen;
  for (int b = 0; b < 256; ++b) {
    const uint32_t cp = byte_level::byte_to_code_point(static_cast<uint8_t>(b));
    EXPECT_TRUE(seen.insert(cp).second) << "byte " << b << " collides";
    ASSERT_TRUE(byte_level::code_point_to_byte(cp).has_value());
    EXPECT_EQ(*byte_level::code_point_to_byte(cp), b);
  }
  EXPECT_FALSE(byte_level::code_point_to_byte(0x144).has_value());
  EXPECT_FALSE(byte_level::code_point_to_byte(0x4E2D).has_value());
}

TEST(ByteLevel, EncodeDecodeRoundTripsArbitraryBytes) {
  EXPECT_EQ(byte_level::encode("hi there\n"), "hi\xC4\xA0there\xC4\x8A");  // hiĠthereĊ
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(byte_level::decode(byte_level::encode(all)), all);
  // Characters outside the mapping (raw text of an added token) pass through unchanged.
  EXPECT_EQ(byte_level::decode("\xE4\xB8\xAD"), "\xE4\xB8\xAD");  // 中
}

TEST(Utf8, ClassifiesSequences) {
  using utf8::SeqKind;
  EXPECT_EQ(utf8::next_sequence("a").kind, SeqKind::complete);
  EXPECT_EQ(utf8::next_sequence("\xF0\x9F\x98\x80").length, 4u);  // 😀
  EXPECT_EQ(utf8::next_sequence("\xF0\x9F\x98").kind, SeqKind::truncated);
  EXPECT_EQ(utf8::next_sequence("\x80").kind, SeqKind::invalid);          // lone continuation
  EXPECT_EQ(utf8::next_sequence("\xC0\x80").kind, SeqKind::invalid);      // overlong lead
  EXPECT_EQ(utf8::next_sequence("\xED\xA0\x80").kind, SeqKind::invalid);  // surrogate
  const utf8::Seq cut = utf8::next_sequence("\xE4\xB8x");                 // 中 cut short by "x"
  EXPECT_EQ(cut.kind, SeqKind::invalid);
  EXPECT_EQ(cut.length, 2u);  // the maximal subpart, then "x" starts afresh
}

TEST(Utf8, SanitizeReplacesEachMaximalInvalidSubpart) {
  EXPECT_EQ(utf8::sanitize("ok"), "ok");
  EXPECT_EQ(utf8::sanitize("a\xFF"
                           "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(utf8::sanitize("\xE4\xB8x"), "\xEF\xBF\xBDx");
  EXPECT_EQ(utf8::sanitize("\xF0\x9F"), "\xEF\xBF\xBD");
}

}  // namespace
}  // namespace bl
