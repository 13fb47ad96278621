// tokenizer.json (+ tokenizer_config.json, config.json) -> the tokenizer.ggml.* keys that
// llama.cpp's converter writes, so tokenizer/ reads one vocabulary of keys.
//
// Byte-level BPE ("BPE" model, ByteLevel pre-tokenizer; GPT-2, Llama 3, Qwen2, SmolLM):
//   tokenizer.ggml.model = "gpt2", .tokens (by id; added_tokens included; ids the files leave
//   out, up to config.json's vocab_size, become "[PAD<id>]"), .token_type (1 normal, 3 control
//   = special added token, 4 user-defined = other added token, 5 unused = padding),
//   .merges ("a b"; tokenizer.json stores them as strings or as pairs), .pre guessed from the
//   pre-tokenizer:
//     Split with the Llama 3 regex          -> "llama-bpe"
//     Split with the Qwen2 regex            -> "qwen2"
//     Digits(individual) + ByteLevel(regex) -> "smollm"  (SmolLM, StarCoder)
//     anything else                         -> "gpt2"
//   and bitlight.tokenizer.pre_regexes (string array): the Split regexes as written, in order,
//   for a tokenizer that wants to use them directly rather than trust the guess.
// SentencePiece-style BPE ("BPE" model with byte_fallback; Llama 2, Mistral):
//   tokenizer.ggml.model = "llama", .tokens, .token_type (2 unknown, 6 byte "<0xNN>", 3/4 for
//   added tokens), .scores (f32: minus the rank of the merge that makes the token, 0 for tokens
//   no merge makes; llama.cpp's SentencePiece tokenizer merges the highest score first, which
//   is then the lowest merge rank), .add_space_prefix (a normalizer Prepend("▁") or a
//   Metaspace pre-tokenizer that prepends).
// Both: .bos_token_id / .eos_token_id / .unknown_token_id / .padding_token_id (tokens named in
//   tokenizer_config.json, else the ids in config.json), .add_bos_token / .add_eos_token
//   (tokenizer_config.json, else whether the post-processor template starts with BOS), and
//   tokenizer.chat_template (tokenizer_config.json, else chat_template.jinja).
// Unigram tokenizers give StatusCode::unsupported.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/gguf_value.h"
#include "io/json_file.h"
#include "io/model_file.h"

namespace bl {

struct HfTokenizerFiles {
  const Json* tokenizer = nullptr;         // tokenizer.json
  const Json* tokenizer_config = nullptr;  // tokenizer_config.json, may be null
  const Json* config = nullptr;            // config.json
  std::optional<std::string> chat_template_file;  // chat_template.jinja, when present
};

Expected<std::vector<GgufKeyValue>> translate_hf_tokenizer(const HfTokenizerFiles& files, uint64_t config_vocab_size,
                                                           const ParseLimits& limits = {});

}  // namespace bl
