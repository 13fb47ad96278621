#include "server/completion_engine.h"

#include <chrono>
#include <random>
#include <span>

#include "runtime/generator.h"
#include "server/stop_matcher.h"

namespace bl::server {
namespace {

size_t common_prefix(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

int64_t microseconds(double seconds) { return static_cast<int64_t>(seconds * 1e6); }

}  // namespace

CompletionEngine::CompletionEngine(const LlamaModel& model, const Tokenizer& tokenizer,
                                   std::optional<ChatTemplate> chat_template,
                                   std::unique_ptr<Session> session, int max_waiting)
    : model_(model),
      tokenizer_(tokenizer),
      chat_template_(std::move(chat_template)),
      session_(std::move(session)),
      turns_(max_waiting) {}

Expected<std::vector<TokenId>> CompletionEngine::prompt_tokens(const CompletionRequest& request) const {
  // As `bitlight run` and `chat` encode: the model's BOS when it asks for one, special tokens
  // written in the text (<|im_start|>) read as their ids, as llama.cpp's server reads them.
  const EncodeOptions encode{.add_bos = tokenizer_.adds_bos(), .parse_special = true};
  std::vector<TokenId> ids;
  if (request.endpoint == Endpoint::chat_completions) {
    if (!chat_template_) {
      return invalid_argument(
          "this model file has no chat template (tokenizer.chat_template): use /v1/completions");
    }
    ids = tokenizer_.encode(chat_template_->apply(request.messages, /*add_generation_prompt=*/true), encode);
  } else if (!request.prompt_ids.empty()) {
    const int n_vocab = model_.config().n_vocab;
    for (TokenId id : request.prompt_ids) {
      if (id >= n_vocab) {
        return invalid_argument("prompt: token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                std::to_string(n_vocab - 1) + ")");
      }
    }
    ids = request.prompt_ids;
  } else {
    ids = tokenizer_.encode(request.prompt, encode);
  }
  if (ids.empty()) return invalid_argument("the prompt is empty");
  const int64_t n_ctx = session_->n_ctx();
  const int64_t n_prompt = static_cast<int64_t>(ids.size());
  if (n_prompt >= n_ctx) {
    return invalid_argument("the prompt is " + std::to_string(n_prompt) + " tokens; the context holds " +
                            std::to_string(n_ctx) + " (bitlight serve -c)");
  }
  if (request.max_tokens && n_prompt + *request.max_tokens > n_ctx) {
    return invalid_argument("the prompt's " + std::to_string(n_prompt) + " tokens and max_tokens " +
                            std::to_string(*request.max_tokens) + " exceed the context of " +
                            std::to_string(n_ctx) + " tokens");
  }
  return ids;
}

std::optional<TurnQueue::Turn> CompletionEngine::wait_turn() {
  std::optional<TurnQueue::Turn> turn = turns_.wait_turn();
  if (!turn) ++counters_.requests_refused_busy;
  return turn;
}

Expected<CompletionOutcome> CompletionEngine::complete(
    const TurnQueue::Turn& /*turn*/, const CompletionRequest& request, const std::vector<TokenId>& prompt,
    const std::function<bool(const std::string&)>& on_text) {
  // At least the prompt's last token is fed, for the logits of the first pick.
  size_t reuse = request.cache_prompt ? common_prefix(cached_, prompt) : 0;
  if (reuse == prompt.size()) --reuse;
  session_->truncate(static_cast<int>(reuse));
  cached_.resize(reuse);

  SamplerParams sampler = request.sampler;
  if (!request.seeded) sampler.seed = std::random_device{}();
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
      {.n_predict = request.max_tokens.value_or(-1), .sampler = sampler, .context = all.first(reuse)},
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
