// Everything a tokenizer is built from, as plain vectors: filled from a model file's
// tokenizer.ggml.* metadata by Tokenizer::from_model_file, or by hand in tests.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

namespace bl {

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
  undefined = 0,
  normal = 1,
  unknown = 2,
  control = 3,       // <|im_start|>, <s>: matched in text only with EncodeOptions::parse_special
  user_defined = 4,  // added tokens: always matched in text
  unused = 5,
  byte = 6,  // SentencePiece byte fallback "<0xAB>"
};

struct TokenizerConfig {
  std::string model;  // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
  std::string pre;    // tokenizer.ggml.pre: the pre-tokenizer regex family (gpt2 only)
  std::vector<std::string> tokens;
  std::vector<float> scores;         // "llama": merge priority per token, higher merges first
  std::vector<int32_t> token_types;  // TokenType per token; empty = all normal
  std::vector<std::string> merges;   // "gpt2": "left right", rank = index
  TokenId bos_id = -1;
  TokenId eos_id = -1;
  TokenId eot_id = -1;
  TokenId eom_id = -1;
  TokenId unknown_id = -1;
  TokenId padding_id = -1;
  // Unset: the family's default (llama: BOS and space prefix on; gpt2: all off; EOS off).
  std::optional<bool> add_bos;
  std::optional<bool> add_eos;
  std::optional<bool> add_space_prefix;
};

// Builds the tokenizer of config.model; errors name the field that is inconsistent (a token
// id out of range, a vector of the wrong length, an unknown model or pre-tokenizer).
Expected<std::unique_ptr<Tokenizer>> make_tokenizer(const TokenizerConfig& config);

}  // namespace bl
