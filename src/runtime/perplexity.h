// Perplexity of a model over a token sequence, and its divergence from a reference model
// (`bitlight perplexity`).
//
// The usual llama.cpp procedure, so numbers compare with its tables: the tokens are cut into
// consecutive chunks of n_ctx tokens; each chunk is evaluated from an empty context (its first
// token replaced by BOS when the model has one) and only the second half of its positions is
// scored, so every scored token sees at least n_ctx / 2 tokens of context. Perplexity is
// exp(mean negative log-likelihood of the next token) over the scored positions.
//
// With a reference model (--kl-base), the same chunks run through both and, per scored
// position, KL(p_ref || p_model) of the next-token distributions and whether both give the
// same top-1 token are averaged.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/status.h"
#include "tokenizer/tokenizer.h"

namespace bl {

class LlamaModel;

struct PerplexityOptions {
  int n_ctx = 512;
  int n_batch = 512;
  int max_chunks = 0;   // 0 = all
  TokenId bos = -1;     // replaces each chunk's first token when >= 0
};

struct PerplexityResult {
  int chunks = 0;
  int64_t scored = 0;       // positions scored
  double nll = 0;           // mean negative log-likelihood (nats)
  double nll_stderr = 0;    // standard error of that mean
  double ppl() const;
  // Against the reference model (zero when none was given).
  double kl = 0;            // mean KL(p_ref || p_model) (nats)
  double top1_agree = 0;    // fraction of positions with the same argmax
  double ref_nll = 0;       // the reference model's mean NLL on the same positions
};

// progress(chunk done, chunks total, running perplexity).
using PerplexityProgress = std::function<void(int, int, double)>;

// reference may be null. Both models must have the same vocabulary size.
Expected<PerplexityResult> compute_perplexity(const LlamaModel& model, const LlamaModel* reference,
                                              const std::vector<TokenId>& tokens, const PerplexityOptions& options,
                                              const PerplexityProgress& progress = {});

}  // namespace bl
