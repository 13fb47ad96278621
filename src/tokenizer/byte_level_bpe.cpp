// Byte-level BPE: the text is split into words by the pre-tokenizer regex, each word's bytes
// become one symbol each (as GPT-2's byte -> unicode characters), and adjacent symbols are
// merged by merge rank, lowest rank first and leftmost first on ties (as Hugging Face
// tokenizers and llama.cpp do).
#include <queue>
#include <unordered_map>

#include "tokenizer/byte_level.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer_families.h"
#include "tokenizer/vocab.h"

namespace bl {

namespace {

struct Merge {
  int32_t rank;
  TokenId result;
};

uint64_t pair_key(TokenId left, TokenId right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

class ByteLevelBpe final : public VocabTokenizer {
 public:
  ByteLevelBpe(const TokenizerConfig& config, PreTokenizer pre)
      : VocabTokenizer(config, /*default_add_bos=*/false), pre_(std::move(pre)) {
    for (int b = 0; b < 256; ++b)
      byte_token_[b] = find(byte_level::encode(std::string(1, static_cast<char>(b))));
    merges_.reserve(config.merges.size());
    for (size_t rank = 0; rank < config.merges.size(); ++rank) {
      const std::string& merge = config.merges[rank];
      // "left right"; the separator search starts at 1 so a left part that is itself a
      // space character still parses.
      const size_t space = merge.find(' ', 1);
      if (space == std::string::npos) continue;
      const std::string_view left(merge.data(), space);
      const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
      const TokenId l = find(left), r = find(right);
      const TokenId joined = find(std::string(left) + std::string(right));
      // A merge whose parts or result are missing from the vocabulary can never produce a
      // token, so it is dropped (tokenizers rejects such files outright).
      if (l < 0 || r < 0 || joined < 0) continue;
      merges_.try_emplace(pair_key(l, r), Merge{static_cast<int32_t>(rank), joined});
    }
  }

  std::string token_bytes(TokenId id) const override {
    switch (type_of(id)) {
      case TokenType::control:
      case TokenType::user_defined:
      case TokenType::unknown:
        return std::string(token_text(id));  // stored as raw text, not byte-mapped
      default:
        return byte_level::decode(token_text(id));
    }
  }

 protected:
  void encode_plain(std::string_view text, bool /*after_special*/, std::vector<TokenId>& out) const override {
    std::vector<std::string_view> words;
    pre_.split(text, words);
    for (std::string_view word : words) encode_word(word, out);
  }

 private:
  struct Symbol {
    TokenId id;
    int32_t prev, next;  // neighbours in the word, -1 at the ends
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t left, right;  // symbol indices
    TokenId left_id, right_id, result;
    // std::priority_queue pops the largest: make that the lowest rank, then the leftmost.
    bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };

  void push_candidate(std::vector<Symbol>& symbols, int32_t left, int32_t right,
                      std::priority_queue<Candidate>& queue) const {
    if (left < 0 || right < 0) return;
    const TokenId l = symbols[left].id, r = symbols[right].id;
    if (l < 0 || r < 0) return;
    const auto it = merges_.find(pair_key(l, r));
    if (it == merges_.end()) return;
    queue.push({it->second.rank, left, right, l, r, it->second.result});
  }

  void encode_word(std::string_view word, std::vector<TokenId>& out) const {
    if (pre_.ignore_merges()) {
      const TokenId whole = find(byte_level::encode(word));
      if (whole >= 0) {
        out.push_back(whole);
        return;
      }
    }
    const auto n = static_cast<int32_t>(word.size());
    std::vector<Symbol> symbols(word.size());  // (n) one per byte at first
    for (int32_t i = 0; i < n; ++i) {
      symbols[i] = {byte_token_[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1, true};
    }
    std::priority_queue<Candidate> queue;
    for (int32_t i = 0; i + 1 < n; ++i) push_candidate(symbols, i, i + 1, queue);
    while (!queue.empty()) {
      const Candidate c = queue.top();
      queue.pop();
      Symbol& left = symbols[c.left];
      Symbol& right = symbols[c.right];
      // Stale candidates: one side was merged away or changed since this pair was queued.
      if (!left.alive || !right.alive || left.next != c.right || left.id != c.left_id ||
          right.id != c.right_id) {
        continue;
      }
      left.id = c.result;
      left.next = right.next;
      right.alive = false;
      if (right.next >= 0) symbols[right.next].prev = c.left;
      push_candidate(symbols, left.prev, c.left, queue);
      push_candidate(symbols, c.left, left.next, queue);
    }
    for (int32_t i = 0; i >= 0 && i < n; i = symbols[i].next) {
      if (symbols[i].id >= 0) {
        out.push_back(symbols[i].id);
      } else if (unknown_ >= 0) {
        out.push_back(unknown_);  // a byte the vocabulary has no token for
      }
    }
  }

  PreTokenizer pre_;
  TokenId byte_token_[256];
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank and merged id
};

}  // namespace

Expected<std::unique_ptr<Tokenizer>> make_byte_level_bpe(const TokenizerConfig& config) {
  BL_RETURN_IF_ERROR(VocabTokenizer::validate(config));
  BL_ASSIGN_OR_RETURN(PreTokenizer pre, PreTokenizer::for_name(config.pre));
  return std::unique_ptr<Tokenizer>(new ByteLevelBpe(config, std::move(pre)));
}

}  // namespace bl
