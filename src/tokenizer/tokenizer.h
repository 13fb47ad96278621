// Text <-> token ids, built from a model file's tokenizer.ggml.* metadata (GGUF, or the same
// keys translated from tokenizer.json by io/).
//
// Two families: byte-level BPE (tokenizer.ggml.model = "gpt2"; GPT-2, Llama 3, Qwen2, SmolLM2;
// the pre-tokenizer regex is chosen by tokenizer.ggml.pre) and SentencePiece-style BPE
// (tokenizer.ggml.model = "llama"; Llama 2, Mistral, Gemma; scores + byte fallback).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bl {

class ModelFile;

using TokenId = int32_t;

struct EncodeOptions {
  bool add_bos = true;         // prepend BOS when the model asks for it (tokenizer.ggml.add_bos_token)
  bool parse_special = false;  // turn "<|im_start|>" etc. in the text into their special ids
  bool add_eos = true;         // append EOS when the model asks for it (tokenizer.ggml.add_eos_token)
};

class Tokenizer {
 public:
  static Expected<std::unique_ptr<Tokenizer>> from_model_file(const ModelFile& file);
  virtual ~Tokenizer() = default;

  virtual std::vector<TokenId> encode(std::string_view text, const EncodeOptions& options = {}) const = 0;
  // The bytes of one token (byte-level BPE tokens map back to raw bytes; special tokens
  // give their text). May be a partial UTF-8 sequence: use StreamDecoder for display.
  virtual std::string token_bytes(TokenId id) const = 0;
  // The concatenated token_bytes. SentencePiece models that prefix a space when encoding
  // (add_space_prefix) drop it again from the first text token, as Hugging Face does.
  std::string decode(const std::vector<TokenId>& ids) const;

  virtual int32_t vocab_size() const = 0;
  virtual TokenId bos() const = 0;  // -1 when the model has none
  virtual TokenId eos() const = 0;
  virtual bool is_end_of_generation(TokenId id) const = 0;  // eos, eot, <|im_end|>, <end_of_turn>...
  virtual bool adds_bos() const = 0;
  virtual std::string_view token_text(TokenId id) const = 0;  // the vocabulary entry as stored

 protected:
  virtual bool decode_drops_prefix_space() const { return false; }
};

// Turns a stream of tokens into valid UTF-8 text: holds back an incomplete multi-byte
// sequence until the token that completes it arrives; invalid bytes become U+FFFD.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string push(TokenId id);  // the text that became complete with this token
  std::string flush();           // whatever is left (invalid tail as U+FFFD)

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

}  // namespace bl
