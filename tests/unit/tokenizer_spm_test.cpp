// SentencePiece-style BPE (tokenizer.ggml.model = "llama") on a small hand-built vocabulary:
// score-ordered merges, the "▁" space marker and its prefix, byte fallback, decoding.
#include <gtest/gtest.h>

#include <cstdio>

#include "tokenizer/tokenizer_config.h"

namespace bl {
namespace {

constexpr TokenId kUnk = 0, kBos = 1, kEos = 2;
constexpr TokenId kByte0 = 3;  // <0x00> .. <0xFF> are ids 3..258

// <unk> <s> </s>, the 256 byte tokens, then (text, score) pieces.
TokenizerConfig spm_vocab(const std::vector<std::pair<std::string, float>>& pieces) {
  TokenizerConfig c;
  c.model = "llama";
  auto add = [&](std::string text, float score, TokenType type) {
    c.tokens.push_back(std::move(text));
    c.scores.push_back(score);
    c.token_types.push_back(static_cast<int32_t>(type));
  };
  add("<unk>", 0, TokenType::unknown);
  add("<s>", 0, TokenType::control);
  add("</s>", 0, TokenType::control);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    add(name, 0, TokenType::byte);
  }
  for (const auto& [text, score] : pieces) add(text, score, TokenType::normal);
  c.unknown_id = kUnk;
  c.bos_id = kBos;
  c.eos_id = kEos;
  return c;
}

constexpr TokenId kPiece = 259;  // id of the first piece

// Pieces: ▁ h e l o ▁h ll ell ▁hell ▁hello w r d ▁w or ▁wor ▁world ld
const std::vector<std::pair<std::string, float>> kPieces = {
    {"\xE2\x96\x81", -1},
    {"h", -2},
    {"e", -2},
    {"l", -2},
    {"o", -2},
    {"\xE2\x96\x81h", -5},
    {"ll", -3},
    {"ell", -4},
    {"\xE2\x96\x81hell", -6},
    {"\xE2\x96\x81hello", -7},
    {"w", -2},
    {"r", -2},
    {"d", -2},
    {"\xE2\x96\x81w", -5},
    {"or", -3},
    {"\xE2\x96\x81wor", -6},
    {"\xE2\x96\x81world", -8},
    {"ld", -3},
};
TokenId piece_id(const std::string& text) {
  for (size_t i = 0; i < kPieces.size(); ++i) {
    if (kPieces[i].first == text) return kPiece + static_cast<TokenId>(i);
  }
  return -1;
}

std::unique_ptr<Tokenizer> build(const TokenizerConfig& c) {
  auto t = make_tokenizer(c);
  EXPECT_TRUE(t.ok()) << t.status().message();
  return t.ok() ? std::move(t).value() : nullptr;
}

TEST(SentencePieceBpe, MergesByScoreWithSpacePrefixAndBos) {
  auto t = build(spm_vocab(kPieces));
  ASSERT_TRUE(t->adds_bos());  // llama default
  // "hello world" -> "▁hello▁world": ll, or, ld (-3) first, then ell, ▁h, ▁w, ▁hell, ▁wor, ▁hello, ▁world.
  EXPECT_EQ(t->encode("hello world"),
            (std::vector<TokenId>{kBos, piece_id("\xE2\x96\x81hello"), piece_id("\xE2\x96\x81world")}));
  EXPECT_EQ(t->decode(t->encode("hello world")), "<s>hello world");
  EXPECT_EQ(t->decode(t->encode("hello world", {.add_bos = false})), "hello world");
}

TEST(SentencePieceBpe, HigherScoreWinsOverPosition) {
  TokenizerConfig c = spm_vocab({{"a", -1}, {"b", -1}, {"c", -1}, {"ab", -5}, {"bc", -2}});
  c.add_space_prefix = false;
  auto t = build(c);
  // "bc" outscores the leftmost pair "ab"; equal scores would merge leftmost first.
  EXPECT_EQ(t->encode("abc", {.add_bos = false}), (std::vector<TokenId>{kPiece, kPiece + 4}));
  TokenizerConfig tie = spm_vocab({{"a", -1}, {"b", -1}, {"c", -1}, {"ab", -2}, {"bc", -2}});
  tie.add_space_prefix = false;
  auto u = build(tie);
  EXPECT_EQ(u->encode("abc", {.add_bos = false}), (std::vector<TokenId>{kPiece + 3, kPiece + 2}));
}

TEST(SentencePieceBpe, UnknownCharactersFallBackToByteTokens) {
  auto t = build(spm_vocab(kPieces));
  // "é" (C3 A9) is not a piece: two byte tokens. The space prefix "▁" stays a piece.
  const std::vector<TokenId> ids = t->encode("\xC3\xA9", {.add_bos = false});
  EXPECT_EQ(ids, (std::vector<TokenId>{piece_id("\xE2\x96\x81"), kByte0 + 0xC3, kByte0 + 0xA9}));
  EXPECT_EQ(t->token_bytes(kByte0 + 0xC3), "\xC3");
  EXPECT_EQ(t->decode(ids), "\xC3\xA9");
}

TEST(SentencePieceBpe, WithoutByteTokensUnknownCharactersBecomeUnk) {
  TokenizerConfig c = spm_vocab(kPieces);
  for (int b = 0; b < 256; ++b) c.tokens[kByte0 + b] = "unused" + std::to_string(b);
  auto t = build(c);
  EXPECT_EQ(t->encode("h\xC3\xA9", {.add_bos = false}),
            (std::vector<TokenId>{piece_id("\xE2\x96\x81h"), kUnk, kUnk}));
}

TEST(SentencePieceBpe, SpacePrefixOnlyAtStartAndAfterSpecialTokens) {
  auto t = build(spm_vocab(kPieces));
  EXPECT_EQ(t->encode("hello</s>world", {.add_bos = false, .parse_special = true}),
            (std::vector<TokenId>{piece_id("\xE2\x96\x81hello"), kEos, piece_id("\xE2\x96\x81world")}));
  TokenizerConfig c = spm_vocab(kPieces);
  c.add_space_prefix = false;  // Gemma
  auto g = build(c);
  EXPECT_EQ(g->encode("hello", {.add_bos = false}).front(), piece_id("h"));
  EXPECT_EQ(g->decode(g->encode(" hello", {.add_bos = false})), " hello");
}

TEST(SentencePieceBpe, RejectsScoresOfTheWrongLength) {
  TokenizerConfig c = spm_vocab(kPieces);
  c.scores.pop_back();
  auto t = make_tokenizer(c);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("scores"), std::string::npos);
}

}  // namespace
}  // namespace bl
