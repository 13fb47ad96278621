// SentencePiece-style BPE as llama.cpp runs it for tokenizer.ggml.model = "llama": spaces
// become "▁" (U+2581), optionally one is prefixed, the text starts as one symbol per UTF-8
// character, and the adjacent pair whose concatenation is a vocabulary token with the
// highest score merges first (leftmost on ties). Symbols left outside the vocabulary fall
// back to their bytes as "<0xAB>" tokens.
#include <cstdio>
#include <queue>

#include "tokenizer/tokenizer_families.h"
#include "tokenizer/utf8.h"
#include "tokenizer/vocab.h"

namespace bl {

namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // "▁" U+2581

std::string escape_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  for (char c : text) {
    if (c == ' ') {
      out.append(kSpaceMark);
    } else {
      out += c;
    }
  }
  return out;
}

std::string unescape_spaces(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    if (text.substr(pos).starts_with(kSpaceMark)) {
      out += ' ';
      pos += kSpaceMark.size();
    } else {
      out += text[pos++];
    }
  }
  return out;
}

// "<0xAB>" -> 0xAB; -1 when the text is not a byte token.
int parse_byte_token(std::string_view text) {
  if (text.size() != 6 || !text.starts_with("<0x") || text[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = text[i];
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

class SentencePieceBpe final : public VocabTokenizer {
 public:
  explicit SentencePieceBpe(const TokenizerConfig& config)
      : VocabTokenizer(config, /*default_add_bos=*/true),
        scores_(config.scores),
        add_space_prefix_(config.add_space_prefix.value_or(true)) {
    scores_.resize(tokens_.size(), 0.0f);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      byte_token_[b] = find(name);
    }
  }

  std::string token_bytes(TokenId id) const override {
    switch (type_of(id)) {
      case TokenType::control:
      case TokenType::unknown:
        return std::string(token_text(id));
      case TokenType::byte: {
        const int byte = parse_byte_token(token_text(id));
        return byte >= 0 ? std::string(1, static_cast<char>(byte)) : std::string(token_text(id));
      }
      default:
        return unescape_spaces(token_text(id));
    }
  }

 protected:
  bool decode_drops_prefix_space() const override { return add_space_prefix_; }

  void encode_plain(std::string_view text, bool after_special, std::vector<TokenId>& out) const override {
    std::string escaped;
    if (add_space_prefix_ && after_special) escaped.append(kSpaceMark);
    escaped += escape_spaces(text);
    const std::string_view s(escaped);
    std::vector<Symbol> symbols;
    for (size_t pos = 0; pos < s.size();) {
      const size_t len = utf8::char_length(s.substr(pos));
      const auto index = static_cast<int32_t>(symbols.size());
      symbols.push_back({pos, len, index - 1, -1});
      if (index > 0) symbols[index - 1].next = index;
      pos += len;
    }
    std::priority_queue<Candidate> queue;
    for (size_t i = 1; i < symbols.size(); ++i) {
      push_candidate(s, symbols, static_cast<int32_t>(i - 1), static_cast<int32_t>(i), queue);
    }
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& left = symbols[c.left];
      Symbol& right = symbols[c.right];
      // Stale: a side was merged into something else since the pair was queued.
      if (left.length == 0 || right.length == 0 || left.next != c.right ||
          left.length + right.length != c.length) {
        continue;
      }
      left.length += right.length;
      right.length = 0;
      left.next = right.next;
      if (right.next >= 0) symbols[right.next].prev = c.left;
      push_candidate(s, symbols, left.prev, c.left, queue);
      push_candidate(s, symbols, c.left, left.next, queue);
    }
    for (int32_t i = symbols.empty() ? -1 : 0; i >= 0; i = symbols[i].next) {
      const std::string_view piece = s.substr(symbols[i].begin, symbols[i].length);
      const TokenId id = find(piece);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      for (char byte : piece) {
        const TokenId b = byte_token_[static_cast<uint8_t>(byte)];
        if (b >= 0) {
          out.push_back(b);
        } else if (unknown_ >= 0) {
          out.push_back(unknown_);
        }
      }
    }
  }

 private:
  struct Symbol {
    size_t begin, length;  // bytes of the escaped text; length 0 once merged away
    int32_t prev, next;
  };
  struct Candidate {
    float score;
    int32_t left, right;
    size_t length;  // bytes of the merged piece, to detect stale candidates
    // std::priority_queue pops the largest: the highest score, then the leftmost.
    bool operator<(const Candidate& o) const { return score != o.score ? score < o.score : left > o.left; }
  };

  void push_candidate(std::string_view s, const std::vector<Symbol>& symbols, int32_t left, int32_t right,
                      std::priority_queue<Candidate>& queue) const {
    if (left < 0 || right < 0) return;
    const size_t length = symbols[left].length + symbols[right].length;
    const TokenId id = find(s.substr(symbols[left].begin, length));
    if (id < 0) return;
    queue.push({scores_[id], left, right, length});
  }

  std::vector<float> scores_;
  bool add_space_prefix_;
  TokenId byte_token_[256];
};

}  // namespace

Expected<std::unique_ptr<Tokenizer>> make_sentencepiece_bpe(const TokenizerConfig& config) {
  BL_RETURN_IF_ERROR(VocabTokenizer::validate(config));
  if (!config.scores.empty() && config.scores.size() != config.tokens.size()) {
    return invalid_file("tokenizer.ggml.scores has " + std::to_string(config.scores.size()) +
                        " entries for " + std::to_string(config.tokens.size()) + " tokens");
  }
  return std::unique_ptr<Tokenizer>(new SentencePieceBpe(config));
}

}  // namespace bl
