#include "runtime/perplexity.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <span>

#include "model/llama_model.h"
#include "runtime/session.h"

namespace bl {
namespace {

// log-softmax of one row of logits into out (n values), in double for the sums.
void log_softmax(const float* logits, int n, std::vector<double>& out) {
  const float mx = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  const double lse = mx + std::log(sum);
  out.resize(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) out[static_cast<size_t>(i)] = logits[i] - lse;
}

Expected<std::vector<float>> chunk_logits(Session& session, std::span<const TokenId> ids) {
  session.reset();
  BL_RETURN_IF_ERROR(session.feed(ids));
  return session.all_logits();
}

}  // namespace

double PerplexityResult::ppl() const { return std::exp(nll); }

Expected<PerplexityResult> compute_perplexity(const LlamaModel& model, const LlamaModel* reference,
                                              const std::vector<TokenId>& tokens, const PerplexityOptions& o,
                                              const PerplexityProgress& progress) {
  if (o.n_ctx < 4) return invalid_argument("perplexity: context must be at least 4 tokens, got " + std::to_string(o.n_ctx));
  const int n_vocab = model.config().n_vocab;
  if (reference && reference->config().n_vocab != n_vocab)
    return invalid_argument("perplexity: the reference model has " + std::to_string(reference->config().n_vocab) +
                            " tokens in its vocabulary, the model " + std::to_string(n_vocab));
  int chunks = static_cast<int>(tokens.size() / static_cast<size_t>(o.n_ctx));
  if (o.max_chunks > 0) chunks = std::min(chunks, o.max_chunks);
  if (chunks == 0)
    return invalid_argument("perplexity: the text has " + std::to_string(tokens.size()) +
                            " tokens, fewer than one context of " + std::to_string(o.n_ctx) + " (use a smaller -c)");

  const SessionOptions so{.n_ctx = o.n_ctx, .n_batch = o.n_batch, .logits_all = true, .kv_type = DType::F32};
  std::unique_ptr<Session> session, ref_session;
  BL_ASSIGN_OR_RETURN(session, Session::create(model, so));
  if (session->n_ctx() < o.n_ctx)
    return invalid_argument("perplexity: -c " + std::to_string(o.n_ctx) + " exceeds the model's context of " +
                            std::to_string(session->n_ctx()));
  if (reference) {
    BL_ASSIGN_OR_RETURN(ref_session, Session::create(*reference, so));
  }

  PerplexityResult r;
  double nll_sum = 0, nll_sq = 0, kl_sum = 0, ref_nll_sum = 0;
  int64_t agree = 0;
  std::vector<double> lp, lq;
  const int first = o.n_ctx / 2;  // positions [first, n_ctx - 1) predict tokens [first + 1, n_ctx)
  for (int c = 0; c < chunks; ++c) {
    std::vector<TokenId> ids(tokens.begin() + static_cast<ptrdiff_t>(c) * o.n_ctx,
                             tokens.begin() + static_cast<ptrdiff_t>(c + 1) * o.n_ctx);
    if (o.bos >= 0) ids[0] = o.bos;
    std::vector<float> logits, ref_logits;
    BL_ASSIGN_OR_RETURN(logits, chunk_logits(*session, ids));
    if (reference) {
      BL_ASSIGN_OR_RETURN(ref_logits, chunk_logits(*ref_session, ids));
    }
    for (int i = first; i < o.n_ctx - 1; ++i) {
      log_softmax(logits.data() + static_cast<size_t>(i) * n_vocab, n_vocab, lq);
      const double nll = -lq[static_cast<size_t>(ids[static_cast<size_t>(i + 1)])];
      nll_sum += nll;
      nll_sq += nll * nll;
      ++r.scored;
      if (!reference) continue;
      log_softmax(ref_logits.data() + static_cast<size_t>(i) * n_vocab, n_vocab, lp);
      double kl = 0;
      for (int v = 0; v < n_vocab; ++v) kl += std::exp(lp[static_cast<size_t>(v)]) * (lp[static_cast<size_t>(v)] - lq[static_cast<size_t>(v)]);
      kl_sum += kl;
      ref_nll_sum += -lp[static_cast<size_t>(ids[static_cast<size_t>(i + 1)])];
      agree += std::max_element(lp.begin(), lp.end()) - lp.begin() == std::max_element(lq.begin(), lq.end()) - lq.begin();
    }
    r.chunks = c + 1;
    if (progress) progress(c + 1, chunks, std::exp(nll_sum / static_cast<double>(r.scored)));
  }
  const auto n = static_cast<double>(r.scored);
  r.nll = nll_sum / n;
  r.nll_stderr = r.scored > 1 ? std::sqrt(std::max(0.0, nll_sq / n - r.nll * r.nll) / (n - 1)) : 0.0;
  if (reference) {
    r.kl = kl_sum / n;
    r.top1_agree = static_cast<double>(agree) / n;
    r.ref_nll = ref_nll_sum / n;
  }
  return r;
}

}  // namespace bl
