// Runs completion requests on one model and one Session, one request at a time in arrival
// order (TurnQueue). A request's prompt is tokenized and checked against the context before it
// waits, so a bad one is refused at once. Between requests the Session keeps its cache: the
// next prompt's common prefix with the tokens already there is not computed again (a chat that
// grows by a turn feeds only the new turn), unless the request says "cache_prompt": false.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "model/llama_model.h"
#include "runtime/session.h"
#include "server/completion_request.h"
#include "server/turn_queue.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace bl::server {

// Totals since the server started, for /metrics.
struct EngineCounters {
  std::atomic<int64_t> requests_completed{0};
  std::atomic<int64_t> requests_cancelled{0};  // the client went away during the generation
  std::atomic<int64_t> requests_refused_busy{0};
  std::atomic<int64_t> prompt_tokens{0};         // tokens of the prompts, reused ones included
  std::atomic<int64_t> prompt_tokens_reused{0};  // of those, found in the cache
  std::atomic<int64_t> generated_tokens{0};
  std::atomic<int64_t> prompt_microseconds{0};
  std::atomic<int64_t> decode_microseconds{0};
};

struct CompletionOutcome {
  const char* finish_reason = "length";  // "stop" (end of generation or a stop string), "length"
  bool cancelled = false;                // on_text returned false
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

class CompletionEngine {
 public:
  // chat_template: nullopt when the model file has none (the chat endpoint then refuses).
  CompletionEngine(const LlamaModel& model, const Tokenizer& tokenizer,
                   std::optional<ChatTemplate> chat_template, std::unique_ptr<Session> session,
                   int max_waiting);

  // The prompt's token ids: the text tokenized, or the conversation through the chat template.
  // Errors: no chat template, an id outside the vocabulary, an empty prompt, a prompt (plus
  // max_tokens, when given) longer than the context.
  Expected<std::vector<TokenId>> prompt_tokens(const CompletionRequest& request) const;

  // Waits for the session (requests take turns in arrival order); nullopt at once when
  // max_waiting requests wait already (counted as refused).
  std::optional<TurnQueue::Turn> wait_turn();

  // Generates for `prompt` (from prompt_tokens) in the caller's turn. on_text gets the text in
  // pieces as it is generated (stop strings cut out) and returns false to stop (the client left).
  // An error during the generation (a backend failure) leaves the session empty, not half-fed.
  Expected<CompletionOutcome> complete(const TurnQueue::Turn& turn, const CompletionRequest& request,
                                       const std::vector<TokenId>& prompt,
                                       const std::function<bool(const std::string&)>& on_text);

  int n_ctx() const { return session_->n_ctx(); }
  int requests_in_line() const { return turns_.in_line(); }
  const EngineCounters& counters() const { return counters_; }

 private:
  const LlamaModel& model_;
  const Tokenizer& tokenizer_;
  std::optional<ChatTemplate> chat_template_;
  std::unique_ptr<Session> session_;  // used only while holding a turn
  std::vector<TokenId> cached_;       // the tokens whose keys and values the session holds
  TurnQueue turns_;
  EngineCounters counters_;
};

}  // namespace bl::server
