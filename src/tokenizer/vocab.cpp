#include "tokenizer/vocab.h"

#include <algorithm>

namespace bl {

namespace {

// Tokens that end a turn in the chat formats we know, by text (llama.cpp does the same):
// GGUF files name only one eos/eot id, but e.g. SmolLM2 ends turns with <|im_end|> and
// documents with <|endoftext|>.
constexpr std::string_view kEndOfGenerationTexts[] = {
    "<|eot_id|>",    "<|im_end|>",      "<|end|>",    "<end_of_turn>",
    "<|endoftext|>", "<|end_of_text|>", "<|eom_id|>", "<EOT>",
};

Status check_id(const TokenizerConfig& config, TokenId id, const char* key) {
  if (id < -1 || id >= static_cast<TokenId>(config.tokens.size())) {
    return invalid_file(std::string("tokenizer.ggml.") + key + " = " + std::to_string(id) +
                        " is outside the vocabulary of " + std::to_string(config.tokens.size()) + " tokens");
  }
  return Status::Ok();
}

}  // namespace

Status VocabTokenizer::validate(const TokenizerConfig& config) {
  if (config.tokens.empty()) return invalid_file("tokenizer.ggml.tokens is empty");
  if (config.tokens.size() > static_cast<size_t>(INT32_MAX))
    return invalid_file("tokenizer.ggml.tokens is too large");
  if (!config.token_types.empty() && config.token_types.size() != config.tokens.size()) {
    return invalid_file("tokenizer.ggml.token_type has " + std::to_string(config.token_types.size()) +
                        " entries for " + std::to_string(config.tokens.size()) + " tokens");
  }
  BL_RETURN_IF_ERROR(check_id(config, config.bos_id, "bos_token_id"));
  BL_RETURN_IF_ERROR(check_id(config, config.eos_id, "eos_token_id"));
  BL_RETURN_IF_ERROR(check_id(config, config.eot_id, "eot_token_id"));
  BL_RETURN_IF_ERROR(check_id(config, config.eom_id, "eom_token_id"));
  BL_RETURN_IF_ERROR(check_id(config, config.unknown_id, "unknown_token_id"));
  BL_RETURN_IF_ERROR(check_id(config, config.padding_id, "padding_token_id"));
  return Status::Ok();
}

VocabTokenizer::VocabTokenizer(const TokenizerConfig& config, bool default_add_bos)
    : tokens_(config.tokens),
      bos_(config.bos_id),
      eos_(config.eos_id),
      unknown_(config.unknown_id),
      add_bos_(config.add_bos.value_or(default_add_bos)),
      add_eos_(config.add_eos.value_or(false)) {
  types_.resize(tokens_.size(), TokenType::normal);
  for (size_t i = 0; i < config.token_types.size(); ++i) {
    const int32_t t = config.token_types[i];
    types_[i] = t >= 0 && t <= 6 ? static_cast<TokenType>(t) : TokenType::undefined;
  }
  index_.reserve(tokens_.size());
  // A text listed twice maps to its last id (as in llama.cpp and Hugging Face's conversion).
  for (size_t i = 0; i < tokens_.size(); ++i) index_.insert_or_assign(tokens_[i], static_cast<TokenId>(i));

  for (size_t i = 0; i < tokens_.size(); ++i) {
    const TokenType t = types_[i];
    const auto id = static_cast<TokenId>(i);
    if (t == TokenType::control || t == TokenType::user_defined || t == TokenType::unknown) {
      all_special_.add(tokens_[i], id);
    }
    if (t == TokenType::user_defined) user_defined_.add(tokens_[i], id);
  }
  all_special_.finish();
  user_defined_.finish();

  for (TokenId id : {config.eos_id, config.eot_id, config.eom_id}) {
    if (id >= 0) end_of_generation_.push_back(id);
  }
  for (std::string_view text : kEndOfGenerationTexts) {
    const TokenId id = find(text);
    if (id >= 0 && types_[id] == TokenType::control) end_of_generation_.push_back(id);
  }
}

void VocabTokenizer::PrefixMatcher::add(const std::string& text, TokenId id) {
  if (text.empty()) return;
  // A text listed twice keeps its last id, as the vocabulary index does (and llama.cpp).
  by_text_.insert_or_assign(text, id);
  lengths_by_first_byte_[static_cast<uint8_t>(text[0])].push_back(static_cast<uint32_t>(text.size()));
}

void VocabTokenizer::PrefixMatcher::finish() {
  for (auto& lengths : lengths_by_first_byte_) {
    std::sort(lengths.begin(), lengths.end(), std::greater<>());
    lengths.erase(std::unique(lengths.begin(), lengths.end()), lengths.end());
  }
}

TokenId VocabTokenizer::PrefixMatcher::longest_prefix(std::string_view text) const {
  if (text.empty()) return -1;
  for (uint32_t length : lengths_by_first_byte_[static_cast<uint8_t>(text[0])]) {
    if (length > text.size()) continue;
    const auto it = by_text_.find(text.substr(0, length));
    if (it != by_text_.end()) return it->second;
  }
  return -1;
}

TokenId VocabTokenizer::find(std::string_view text) const {
  const auto it = index_.find(text);
  return it == index_.end() ? -1 : it->second;
}

TokenType VocabTokenizer::type_of(TokenId id) const { return valid(id) ? types_[id] : TokenType::undefined; }

std::string_view VocabTokenizer::token_text(TokenId id) const {
  return valid(id) ? std::string_view(tokens_[id]) : std::string_view();
}

bool VocabTokenizer::is_end_of_generation(TokenId id) const {
  return std::find(end_of_generation_.begin(), end_of_generation_.end(), id) != end_of_generation_.end();
}

std::vector<TextFragment> VocabTokenizer::split_special(std::string_view text, bool parse_special) const {
  std::vector<TextFragment> fragments;
  size_t plain_begin = 0;
  size_t pos = 0;
  const PrefixMatcher& matcher = parse_special ? all_special_ : user_defined_;
  while (pos < text.size()) {
    const TokenId match = matcher.longest_prefix(text.substr(pos));
    if (match < 0) {
      ++pos;
      continue;
    }
    if (pos > plain_begin) fragments.push_back({text.substr(plain_begin, pos - plain_begin), -1});
    fragments.push_back({text.substr(pos, tokens_[match].size()), match});
    pos += tokens_[match].size();
    plain_begin = pos;
  }
  if (plain_begin < text.size()) fragments.push_back({text.substr(plain_begin), -1});
  return fragments;
}

std::vector<TokenId> VocabTokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<TokenId> ids;
  if (options.add_bos && add_bos_ && bos_ >= 0) ids.push_back(bos_);
  bool after_special = true;
  for (const TextFragment& fragment : split_special(text, options.parse_special)) {
    if (fragment.special >= 0) {
      ids.push_back(fragment.special);
      after_special = true;
    } else {
      encode_plain(fragment.text, after_special, ids);
      after_special = false;
    }
  }
  if (options.add_eos && add_eos_ && eos_ >= 0) ids.push_back(eos_);
  return ids;
}

}  // namespace bl
