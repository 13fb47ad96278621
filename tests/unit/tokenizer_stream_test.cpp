// StreamDecoder: UTF-8 split across tokens is held back until complete; invalid bytes become
// U+FFFD; flush() settles whatever is left.
#include <gtest/gtest.h>

#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_config.h"

namespace bl {
namespace {

// Byte-level vocabulary of the 256 single-byte tokens: token id = byte.
std::unique_ptr<Tokenizer> bytes_tokenizer() {
  TokenizerConfig c;
  c.model = "gpt2";
  for (int b = 0; b < 256; ++b) c.tokens.push_back(byte_level::encode(std::string(1, static_cast<char>(b))));
  auto t = make_tokenizer(c);
  EXPECT_TRUE(t.ok()) << t.status().message();
  return std::move(t).value();
}

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

TEST(StreamDecoder, EmojiSplitAcrossTokensAppearsWhenComplete) {
  auto t = bytes_tokenizer();
  StreamDecoder d(*t);
  EXPECT_EQ(d.push('a'), "a");
  EXPECT_EQ(d.push(0xF0), "");  // 😀 = F0 9F 98 80
  EXPECT_EQ(d.push(0x9F), "");
  EXPECT_EQ(d.push(0x98), "");
  EXPECT_EQ(d.push(0x80), "\xF0\x9F\x98\x80");
  EXPECT_EQ(d.push('b'), "b");
  EXPECT_EQ(d.flush(), "");
}

TEST(StreamDecoder, InvalidBytesBecomeReplacementCharacters) {
  auto t = bytes_tokenizer();
  StreamDecoder d(*t);
  EXPECT_EQ(d.push(0xFF), kReplacement);
  EXPECT_EQ(d.push(0x80), kReplacement);                    // a continuation byte with no lead
  EXPECT_EQ(d.push(0xE4), "");                              // 中 starts ...
  EXPECT_EQ(d.push('x'), std::string(kReplacement) + "x");  // ... and is cut short
}

TEST(StreamDecoder, FlushSettlesATruncatedTail) {
  auto t = bytes_tokenizer();
  StreamDecoder d(*t);
  EXPECT_EQ(d.push(0xE4), "");
  EXPECT_EQ(d.push(0xB8), "");
  EXPECT_EQ(d.flush(), kReplacement);
  EXPECT_EQ(d.flush(), "");  // nothing left
}

TEST(StreamDecoder, StreamedTextEqualsDecodeOfValidText) {
  auto t = bytes_tokenizer();
  const std::string text = "Grüße 😀👍🏽 中文 done";
  const std::vector<TokenId> ids = t->encode(text);
  StreamDecoder d(*t);
  std::string streamed;
  for (TokenId id : ids) streamed += d.push(id);
  streamed += d.flush();
  EXPECT_EQ(streamed, text);
  EXPECT_EQ(t->decode(ids), text);
}

}  // namespace
}  // namespace bl
