// The vocabulary shared by both tokenizer families: token texts and types, text -> id lookup,
// special-token splitting of input text, and the Tokenizer methods that only need these.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_config.h"

namespace bl {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenIndex = std::unordered_map<std::string, TokenId, StringViewHash, std::equal_to<>>;

// A piece of input text: plain text to tokenize, or one special token found in it.
struct TextFragment {
  std::string_view text;
  TokenId special = -1;  // >= 0: the fragment is this special token
};

class VocabTokenizer : public Tokenizer {
 public:
  // Checks what both families need: token ids in range, token_types of the tokens' length.
  static Status validate(const TokenizerConfig& config);

  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& options = {}) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(tokens_.size()); }
  TokenId bos() const override { return bos_; }
  TokenId eos() const override { return eos_; }
  bool is_end_of_generation(TokenId id) const override;
  bool adds_bos() const override { return add_bos_ && bos_ >= 0; }
  std::string_view token_text(TokenId id) const override;

  // Splits text at special tokens: user-defined tokens always, control tokens only when
  // parse_special. At each position the longest special token that matches wins (as in
  // Hugging Face tokenizers' added-token matching).
  std::vector<TextFragment> split_special(std::string_view text, bool parse_special) const;

 protected:
  // `default_add_bos` applies when config.add_bos is unset. `config` must have passed validate().
  VocabTokenizer(const TokenizerConfig& config, bool default_add_bos);

  // Appends the ids of plain text (no special tokens in it). `after_special` is true at the
  // start of the input and right after a special token (SentencePiece adds its space prefix
  // only there).
  virtual void encode_plain(std::string_view text, bool after_special, std::vector<TokenId>& out) const = 0;

  TokenId find(std::string_view text) const;  // -1 when absent
  TokenType type_of(TokenId id) const;
  bool valid(TokenId id) const { return id >= 0 && id < vocab_size(); }

  std::vector<std::string> tokens_;
  std::vector<TokenType> types_;
  TokenIndex index_;
  TokenId bos_, eos_, unknown_;
  bool add_bos_, add_eos_;

 private:
  // Finds the longest token of a set that starts a text: per first byte, the distinct token
  // lengths (longest first), each tried with one hash lookup. Gemma has ~6,000 special tokens
  // starting with '<', so trying them one by one at every '<' would be slow.
  class PrefixMatcher {
   public:
    void add(const std::string& text, TokenId id);
    void finish();                                        // sorts the lengths; call once after the last add()
    TokenId longest_prefix(std::string_view text) const;  // -1 when none matches

   private:
    TokenIndex by_text_;
    std::array<std::vector<uint32_t>, 256> lengths_by_first_byte_;
  };

  PrefixMatcher all_special_;   // control, user-defined and unknown tokens (parse_special)
  PrefixMatcher user_defined_;  // user-defined tokens only (always matched)
  std::vector<TokenId> end_of_generation_;
};

}  // namespace bl
