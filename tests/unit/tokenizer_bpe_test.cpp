// Byte-level BPE on hand-built vocabularies: merge order, pre-tokenizer splits, special tokens,
// BOS/EOS flags, decoding.
#include <gtest/gtest.h>

#include "tokenizer/byte_level.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer_config.h"

namespace bl {
namespace {

// A vocabulary of the 256 byte tokens (id = byte), then `extra` tokens given as raw text
// (byte-level encoded here), then `specials` as control tokens.
TokenizerConfig byte_vocab(const std::vector<std::string>& extra, const std::vector<std::string>& merges,
                           const std::string& pre = "gpt2", const std::vector<std::string>& specials = {}) {
  TokenizerConfig c;
  c.model = "gpt2";
  c.pre = pre;
  for (int b = 0; b < 256; ++b) c.tokens.push_back(byte_level::encode(std::string(1, static_cast<char>(b))));
  for (const std::string& t : extra) c.tokens.push_back(byte_level::encode(t));
  c.token_types.assign(c.tokens.size(), static_cast<int32_t>(TokenType::normal));
  for (const std::string& s : specials) {
    c.tokens.push_back(s);
    c.token_types.push_back(static_cast<int32_t>(TokenType::control));
  }
  for (const std::string& m : merges) {
    const size_t space = m.find(' ', 1);  // from 1: the left part may be a space
    c.merges.push_back(byte_level::encode(m.substr(0, space)) + " " +
                       byte_level::encode(m.substr(space + 1)));
  }
  return c;
}

std::unique_ptr<Tokenizer> build(const TokenizerConfig& c) {
  auto t = make_tokenizer(c);
  EXPECT_TRUE(t.ok()) << t.status().message();
  return t.ok() ? std::move(t).value() : nullptr;
}

std::vector<TokenId> ids_of(const Tokenizer& t, std::string_view text, bool parse_special = false) {
  return t.encode(text, {.add_bos = false, .parse_special = parse_special});
}

constexpr TokenId kExtra = 256;  // id of the first extra token

TEST(ByteLevelBpe, MergesLowestRankFirst) {
  // "b c" outranks "a b": abc -> a + bc -> abc.
  auto t = build(byte_vocab({"bc", "ab", "abc"}, {"b c", "a b", "a bc"}));
  EXPECT_EQ(ids_of(*t, "abc"), (std::vector<TokenId>{kExtra + 2}));
  // With "a b" first, "ab c" is missing, so the word stays ab + c.
  auto u = build(byte_vocab({"bc", "ab", "abc"}, {"a b", "b c", "a bc"}));
  EXPECT_EQ(ids_of(*u, "abc"), (std::vector<TokenId>{kExtra + 1, 'c'}));
}

TEST(ByteLevelBpe, EqualRanksMergeLeftmostFirst) {
  auto t = build(byte_vocab({"aa"}, {"a a"}));
  EXPECT_EQ(ids_of(*t, "aaa"), (std::vector<TokenId>{kExtra, 'a'}));
  EXPECT_EQ(ids_of(*t, "aaaa"), (std::vector<TokenId>{kExtra, kExtra}));
}

TEST(ByteLevelBpe, MergesStayInsideWordsAndUnmergedBytesAreByteTokens) {
  // " b" is its own word under GPT-2's regex, so "a b" can never merge across the space.
  auto t = build(byte_vocab({"ab", " b"}, {"a b", "  b"}));
  EXPECT_EQ(ids_of(*t, "ab b"), (std::vector<TokenId>{kExtra, kExtra + 1}));
  EXPECT_EQ(ids_of(*t, "a\xFF"), (std::vector<TokenId>{'a', 0xFF}));  // invalid UTF-8 stays bytes
}

TEST(ByteLevelBpe, DecodeRestoresBytesExactly) {
  auto t = build(byte_vocab({"he", "hel", "hello", " w"}, {"h e", "he l", "hel lo", "  w"}));
  const std::vector<std::string> texts = {"hello world", "tabs\tand\nnewlines", "\xF0\x9F\x98\x80 emoji",
                                          std::string("nul\0x", 5), "bad \xC3 byte"};
  for (const std::string& text : texts) {
    EXPECT_EQ(t->decode(ids_of(*t, text)), text);
  }
}

TEST(ByteLevelBpe, SpecialTokensNeedParseSpecialAndLongestWins) {
  auto t = build(byte_vocab({}, {}, "gpt2", {"<|a|>", "<|a|>b"}));
  const TokenId a = 256, ab = 257;
  EXPECT_EQ(ids_of(*t, "x<|a|>b", /*parse_special=*/true), (std::vector<TokenId>{'x', ab}));
  EXPECT_EQ(ids_of(*t, "<|a|><|a|>", true), (std::vector<TokenId>{a, a}));
  const std::vector<TokenId> plain = ids_of(*t, "<|a|>", /*parse_special=*/false);
  EXPECT_EQ(plain.size(), 5u);  // five bytes: the marker is ordinary text
  EXPECT_EQ(t->decode(plain), "<|a|>");
  EXPECT_EQ(t->token_bytes(a), "<|a|>");  // special tokens decode to their raw text
}

TEST(ByteLevelBpe, UserDefinedTokensAreMatchedWithoutParseSpecial) {
  TokenizerConfig c = byte_vocab({}, {});
  c.tokens.push_back("<tool>");
  c.token_types.push_back(static_cast<int32_t>(TokenType::user_defined));
  auto t = build(c);
  EXPECT_EQ(ids_of(*t, "a<tool>", false), (std::vector<TokenId>{'a', 256}));
}

TEST(ByteLevelBpe, WithoutParseSpecialALongerControlTokenDoesNotHideAUserDefinedOne) {
  TokenizerConfig c = byte_vocab({}, {}, "gpt2", {"<|a|>b"});  // control, id 256
  c.tokens.push_back("<|a|>");                                 // user-defined, id 257
  c.token_types.push_back(static_cast<int32_t>(TokenType::user_defined));
  auto t = build(c);
  EXPECT_EQ(ids_of(*t, "<|a|>b", /*parse_special=*/false), (std::vector<TokenId>{257, 'b'}));
  EXPECT_EQ(ids_of(*t, "<|a|>b", /*parse_special=*/true), (std::vector<TokenId>{256}));
}

TEST(ByteLevelBpe, BosAndEosFollowTheModelFlagsAndOptions) {
  TokenizerConfig c = byte_vocab({}, {}, "gpt2", {"<s>", "</s>"});
  c.bos_id = 256;
  c.eos_id = 257;
  auto none = build(c);  // gpt2 default: neither
  EXPECT_EQ(none->encode("a"), (std::vector<TokenId>{'a'}));
  EXPECT_FALSE(none->adds_bos());
  c.add_bos = true;
  c.add_eos = true;
  auto both = build(c);
  EXPECT_TRUE(both->adds_bos());
  EXPECT_EQ(both->encode("a"), (std::vector<TokenId>{256, 'a', 257}));
  EXPECT_EQ(both->encode("a", {.add_bos = false, .add_eos = false}), (std::vector<TokenId>{'a'}));
  EXPECT_TRUE(both->is_end_of_generation(257));
  EXPECT_FALSE(both->is_end_of_generation('a'));
}

TEST(ByteLevelBpe, EndOfGenerationIncludesKnownTurnEndTokens) {
  TokenizerConfig c = byte_vocab({}, {}, "gpt2", {"<|endoftext|>", "<|im_start|>", "<|im_end|>"});
  c.eos_id = 258;
  auto t = build(c);
  EXPECT_TRUE(t->is_end_of_generation(256));   // <|endoftext|> by its text
  EXPECT_FALSE(t->is_end_of_generation(257));  // <|im_start|>
  EXPECT_TRUE(t->is_end_of_generation(258));
}

TEST(ByteLevelBpe, RejectsInconsistentConfigs) {
  TokenizerConfig c = byte_vocab({}, {});
  c.bos_id = 999;
  auto bad_id = make_tokenizer(c);
  ASSERT_FALSE(bad_id.ok());
  EXPECT_NE(bad_id.status().message().find("bos_token_id"), std::string::npos);

  c = byte_vocab({}, {});
  c.pre = "no-such-pre";
  auto bad_pre = make_tokenizer(c);
  ASSERT_FALSE(bad_pre.ok());
  EXPECT_NE(bad_pre.status().message().find("no-such-pre"), std::string::npos);

  c = byte_vocab({}, {});
  c.token_types.pop_back();
  EXPECT_FALSE(make_tokenizer(c).ok());

  c = byte_vocab({}, {});
  c.model = "wordpiece";
  EXPECT_EQ(make_tokenizer(c).status().code(), StatusCode::unsupported);
}

TEST(ByteLevelBpe, Llama3LooksUpWholeWordsBeforeMerging) {
  // "abc" is in the vocabulary but no merge chain reaches it: only ignore_merges finds it.
  auto gpt2 = build(byte_vocab({"abc"}, {}, "gpt2"));
  auto llama3 = build(byte_vocab({"abc"}, {}, "llama-bpe"));
  EXPECT_EQ(ids_of(*gpt2, "abc").size(), 3u);
  EXPECT_EQ(ids_of(*llama3, "abc"), (std::vector<TokenId>{kExtra}));
}

std::vector<std::string> words_of(std::string_view pre, std::string_view text) {
  auto p = PreTokenizer::for_name(pre);
  EXPECT_TRUE(p.ok()) << p.status().message();
  std::vector<std::string_view> words;
  if (p.ok()) p->split(text, words);
  return {words.begin(), words.end()};
}

using Words = std::vector<std::string>;

TEST(PreTokenizer, Gpt2) {
  EXPECT_EQ(words_of("gpt2", "Hello world's 123 !!"), (Words{"Hello", " world", "'s", " 123", " !!"}));
  EXPECT_EQ(words_of("gpt2", "a  1"), (Words{"a", " ", " 1"}));
  EXPECT_EQ(words_of("gpt2", "x\n\ny"), (Words{"x", "\n", "\n", "y"}));  // lone \s before a letter
  EXPECT_EQ(words_of("gpt2", "Grüße 中文"), (Words{"Grüße", " 中文"}));
}

TEST(PreTokenizer, SmolLM2SplitsDigitsBeforeTheGpt2Regex) {
  EXPECT_EQ(words_of("smollm", "a  12"), (Words{"a", "  ", "1", "2"}));
  EXPECT_EQ(words_of("smollm", "x1y"), (Words{"x", "1", "y"}));
}

TEST(PreTokenizer, Llama3AndQwen2) {
  EXPECT_EQ(words_of("llama-bpe", "1234567 I'M"), (Words{"123", "456", "7", " I", "'M"}));
  EXPECT_EQ(words_of("qwen2", "123"), (Words{"1", "2", "3"}));
  EXPECT_EQ(words_of("llama3", "a.\n\nb"), (Words{"a", ".\n\n", "b"}));
}

TEST(PreTokenizer, WordsConcatenateToTheInputEvenWithInvalidUtf8) {
  for (std::string_view pre : {"gpt2", "llama3", "qwen2", "smollm"}) {
    const std::string text = "ok \xFF\xFE bad\xC3 utf8 \xF0\x9F\x98\x80 end";
    std::string joined;
    for (const std::string& w : words_of(pre, text)) joined += w;
    EXPECT_EQ(joined, text) << pre;
  }
}

}  // namespace
}  // namespace bl
