#include "server/session_engine.h"

#include <chrono>
#include <span>

#include "runtime/generator.h"
#include "runtime/token_prefix.h"
#include "server/stop_matcher.h"

namespace bl::server {
namespace {

int64_t microseconds(double seconds) { return static_cast<int64_t>(seconds * 1e6); }

}  // namespace

SessionEngine::SessionEngine(const LlamaModel& model, const Tokenizer& tokenizer,
                             std::optional<ChatTemplate> chat_template, std::unique_ptr<Session> session,
                             int max_waiting)
    : model_(model),
      tokenizer_(tokenizer),
      chat_template_(std::move(chat_template)),
      session_(std::move(session)),
      turns_(max_waiting) {}

Expected<std::vector<TokenId>> SessionEngine::prompt_tokens(const CompletionRequest& request) const {
  return tokenize_prompt(request, tokenizer_, chat_template_, model_.config().n_vocab, session_->n_ctx());
}

std::optional<Admission> SessionEngine::admit() {
  std::optional<Admission> turn = turns_.wait_turn();
  if (!turn) ++counters_.requests_refused_busy;
  return turn;
}

Expected<CompletionOutcome> SessionEngine::complete(const Admission& /*turn*/,
                                                    const CompletionRequest& request,
                                                    const std::vector<TokenId>& prompt,
                                                    const std::function<bool(const std::string&)>& on_text) {
  const size_t reuse = request.cache_prompt ? reusable_prefix(cached_, prompt) : 0;
  session_->truncate(static_cast<int>(reuse));
  cached_.resize(reuse);

  StopMatcher stops(request.stop);
  bool client_gone = false;
  auto on_token = [&](TokenId, const std::string& piece) {
    const std::string text = stops.push(piece);
    if (!text.empty() && !on_text(text)) {
      client_gone = true;
      return false;
    }
    return !stops.stopped();
  };
  const std::span<const TokenId> all(prompt);
  Expected<GenerateResult> result = generate(
      *session_, tokenizer_, all.subspan(reuse),
      {.n_predict = request.max_tokens.value_or(-1), .sampler = request.sampler, .context = all.first(reuse)},
      on_token);
  if (!result.ok()) {
    // The cache may hold part of this prompt: start the next request from nothing.
    session_->reset();
    cached_.clear();
    return result.status();
  }
  if (!stops.stopped() && !client_gone) {
    const std::string tail = stops.flush();
    if (!tail.empty() && !on_text(tail)) client_gone = true;
  }
  // The cache holds the prompt and the generated tokens that were fed back (the last one picked
  // may not have been): n_past says how many.
  cached_ = prompt;
  cached_.insert(cached_.end(), result->tokens.begin(), result->tokens.end());
  cached_.resize(static_cast<size_t>(session_->n_past()));

  CompletionOutcome outcome;
  outcome.cancelled = client_gone;
  outcome.finish_reason = result->stop_reason == "eog" || stops.stopped() ? "stop" : "length";
  outcome.prompt_tokens = static_cast<int>(prompt.size());
  outcome.completion_tokens = static_cast<int>(result->tokens.size());
  ++(client_gone ? counters_.requests_cancelled : counters_.requests_completed);
  counters_.prompt_tokens += outcome.prompt_tokens;
  counters_.prompt_tokens_reused += static_cast<int64_t>(reuse);
  counters_.generated_tokens += outcome.completion_tokens;
  counters_.prompt_microseconds += microseconds(result->prompt_seconds);
  counters_.decode_microseconds += microseconds(result->decode_seconds);
  return outcome;
}

}  // namespace bl::server
