// What the HTTP layer asks of an engine that generates completions: SessionEngine (one Session,
// requests take turns) or BatchEngine (continuous batching over a SequenceBatch).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/status.h"
#include "server/completion_request.h"
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
  std::atomic<int64_t> batch_steps{0};           // BatchEngine: decode steps run
  std::atomic<int64_t> batch_step_sequences{0};  // and the sequences they carried
};

struct CompletionOutcome {
  const char* finish_reason = "length";  // "stop" (end of generation or a stop string), "length"
  bool cancelled = false;                // on_text returned false
  int prompt_tokens = 0;
  int completion_tokens = 0;
};

// A request's place in the engine, held from admission to the end of its response; released
// (the next request may come in) when destroyed.
class Admission {
 public:
  explicit Admission(std::function<void()> release) : release_(std::move(release)) {}
  Admission(Admission&& other) noexcept : release_(std::exchange(other.release_, nullptr)) {}
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;
  Admission& operator=(Admission&&) = delete;
  ~Admission() {
    if (release_) release_();
  }

 private:
  std::function<void()> release_;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // The prompt's token ids: the text tokenized, or the conversation through the chat template.
  // Errors: no chat template, an id outside the vocabulary, an empty prompt, a prompt (plus
  // max_tokens, when given) longer than the context.
  virtual Expected<std::vector<TokenId>> prompt_tokens(const CompletionRequest& request) const = 0;

  // A place for one more request, perhaps after waiting for it; nullopt at once when
  // max_waiting requests wait already (counted as refused).
  virtual std::optional<Admission> admit() = 0;

  // Generates for `prompt` (from prompt_tokens) within `admission`, drawing with
  // request.sampler.seed (the HTTP layer gives a request without one a seed). on_text gets the text in
  // pieces, on the calling thread, as it is generated (stop strings cut out) and returns false
  // to stop (the client left). An error during the generation (a backend failure) leaves the
  // engine's caches empty, not half-fed.
  virtual Expected<CompletionOutcome> complete(const Admission& admission, const CompletionRequest& request,
                                               const std::vector<TokenId>& prompt,
                                               const std::function<bool(const std::string&)>& on_text) = 0;

  virtual int n_ctx() const = 0;
  // Requests generating or waiting.
  virtual int requests_in_line() const = 0;
  const EngineCounters& counters() const { return counters_; }

 protected:
  EngineCounters counters_;
};

// Engine::prompt_tokens for a model: as `bitlight run` and `chat` encode (the model's BOS when
// it asks for one, special tokens written in the text read as their ids, as llama.cpp's server
// reads them), checked against n_vocab and n_ctx.
Expected<std::vector<TokenId>> tokenize_prompt(const CompletionRequest& request, const Tokenizer& tokenizer,
                                               const std::optional<ChatTemplate>& chat_template, int n_vocab,
                                               int n_ctx);

}  // namespace bl::server
