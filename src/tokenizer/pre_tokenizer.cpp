#include "tokenizer/pre_tokenizer.h"

#include <array>
#include <map>
#include <mutex>
#include <string>

#include "tokenizer/pcre_regex.h"

namespace bl {

namespace {

// Whitespace as Hugging Face's regex engine (Oniguruma) defines \s: PCRE2's Unicode \s plus
// U+0085 (NEL). BL_WS is the inside of a character class.
#define BL_WS "\\s\\x{85}"

// GPT-2 (tokenizers' ByteLevel pre-tokenizer). The trailing \s+ catches a lone whitespace
// character followed by a non-space, which \s+(?!\S) cannot take.
constexpr const char* kGpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" BL_WS
                              "\\p{L}\\p{N}]+|[" BL_WS "]+(?![^" BL_WS "])|[" BL_WS "]+";

// Llama 3: case-insensitive contractions, letters with one leading non-letter, digits in
// groups of up to 3, punctuation runs swallowing trailing newlines. The contractions are
// spelled out instead of (?i:...) so Unicode case folding cannot match e.g. U+017F "ſ" as "s".
constexpr const char* kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^" BL_WS "\\p{L}\\p{N}]+[\\r\\n]*|[" BL_WS "]*[\\r\\n]+|[" BL_WS "]+(?![^" BL_WS "])|[" BL_WS "]+";

// Qwen2: Llama 3's pattern with single digits.
constexpr const char* kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^" BL_WS "\\p{L}\\p{N}]+[\\r\\n]*|[" BL_WS "]*[\\r\\n]+|[" BL_WS "]+(?![^" BL_WS "])|[" BL_WS "]+";

// Every digit on its own (tokenizers' Digits(individual_digits=true)), applied before GPT-2's
// pattern by SmolLM2 and StarCoder.
constexpr const char* kSingleDigit = "\\p{N}";

#undef BL_WS

struct Family {
  std::vector<const char*> patterns;
  bool ignore_merges = false;
};

const Family* family_of(std::string_view pre) {
  static const Family gpt2{{kGpt2}};
  static const Family llama3{{kLlama3}, true};
  static const Family qwen2{{kQwen2}};
  static const Family digits_then_gpt2{{kSingleDigit, kGpt2}};
  static const std::map<std::string_view, const Family*> by_name = {
      {"", &gpt2},
      {"default", &gpt2},
      {"gpt2", &gpt2},
      {"gpt-2", &gpt2},
      {"mpt", &gpt2},
      {"olmo", &gpt2},
      {"jais", &gpt2},
      {"llama3", &llama3},
      {"llama-bpe", &llama3},
      {"llama-v3", &llama3},
      {"falcon3", &llama3},
      {"pixtral", &llama3},
      {"dbrx", &llama3},
      {"smaug-bpe", &llama3},
      {"qwen2", &qwen2},
      {"stablelm2", &qwen2},
      {"deepseek-r1-qwen", &qwen2},
      {"smollm", &digits_then_gpt2},
      {"starcoder", &digits_then_gpt2},
      {"refact", &digits_then_gpt2},
      {"command-r", &digits_then_gpt2},
      {"codeshell", &digits_then_gpt2},
  };
  const auto it = by_name.find(pre);
  return it == by_name.end() ? nullptr : it->second;
}

// Compiled patterns are shared by every tokenizer of the process: there are only a handful.
Expected<std::shared_ptr<const PcreRegex>> compiled(const char* pattern) {
  static std::mutex mutex;
  static std::map<const char*, std::shared_ptr<const PcreRegex>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = cache[pattern];
  if (!slot) {
    BL_ASSIGN_OR_RETURN(auto regex, PcreRegex::compile(pattern));
    slot = std::move(regex);
  }
  return slot;
}

}  // namespace

Expected<PreTokenizer> PreTokenizer::for_name(std::string_view pre) {
  const Family* family = family_of(pre);
  if (family == nullptr) {
    return unsupported("tokenizer.ggml.pre '" + std::string(pre) +
                       "' is not a known pre-tokenizer (known: gpt2, llama-bpe/llama3, qwen2, smollm, "
                       "starcoder and their aliases)");
  }
  PreTokenizer result;
  result.ignore_merges_ = family->ignore_merges;
  for (const char* pattern : family->patterns) {
    BL_ASSIGN_OR_RETURN(auto regex, compiled(pattern));
    result.stages_.push_back(std::move(regex));
  }
  return result;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& words) const {
  std::vector<std::string_view> pieces{text};
  std::vector<std::string_view> next;
  for (const auto& stage : stages_) {
    next.clear();
    for (std::string_view piece : pieces) {
      size_t gap_begin = 0;
      stage->for_each_match(piece, [&](size_t begin, size_t end) {
        if (begin > gap_begin) next.push_back(piece.substr(gap_begin, begin - gap_begin));
        next.push_back(piece.substr(begin, end - begin));
        gap_begin = end;
      });
      if (gap_begin < piece.size()) next.push_back(piece.substr(gap_begin));
    }
    pieces.swap(next);
  }
  for (std::string_view piece : pieces) {
    if (!piece.empty()) words.push_back(piece);
  }
}

}  // namespace bl
