#include "tokenizer/tokenizer.h"

#include "tokenizer/tokenizer_config.h"
#include "tokenizer/tokenizer_families.h"

namespace bl {

std::string Tokenizer::decode(const std::vector<TokenId>& ids) const {
  std::string text;
  for (size_t i = 0; i < ids.size(); ++i) {
    std::string piece = token_bytes(ids[i]);
    // The space prefix sits at the start of the first token after an optional BOS.
    const bool first_text_token = i == 0 || (i == 1 && ids[0] == bos());
    if (first_text_token && ids[i] != bos() && decode_drops_prefix_space() && piece.starts_with(' ')) {
      piece.erase(0, 1);
    }
    text += piece;
  }
  return text;
}

Expected<std::unique_ptr<Tokenizer>> make_tokenizer(const TokenizerConfig& config) {
  if (config.model == "gpt2") return make_byte_level_bpe(config);
  if (config.model == "llama") return make_sentencepiece_bpe(config);
  return unsupported("tokenizer.ggml.model '" + config.model +
                     "' is not supported (supported: gpt2 = byte-level BPE, llama = SentencePiece BPE)");
}

}  // namespace bl
