// The two tokenizer families behind make_tokenizer (tokenizer_config.h).
#pragma once

#include <memory>

#include "core/status.h"
#include "tokenizer/tokenizer_config.h"

namespace bl {

// tokenizer.ggml.model = "gpt2": byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM2).
Expected<std::unique_ptr<Tokenizer>> make_byte_level_bpe(const TokenizerConfig& config);
// tokenizer.ggml.model = "llama": SentencePiece BPE with scores and byte fallback (Llama 2,
// Mistral, Gemma).
Expected<std::unique_ptr<Tokenizer>> make_sentencepiece_bpe(const TokenizerConfig& config);

}  // namespace bl
