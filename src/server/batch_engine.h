// Continuous batching (`bitlight serve --parallel N`, N > 1): up to N requests generate at once,
// each on its own sequence of a SequenceBatch, so every decode step reads the weights once for
// all of them (batch 16 on an H100: 8B q4_0 ~5.7x the tokens per second of one sequence). A
// scheduler thread owns the batch: it gives a free sequence to the oldest waiting request (the
// one whose cached tokens share the longest prefix with its prompt), feeds up to n_batch prompt
// tokens a round, the oldest prompts first (several short prompts share a round; a long one
// delays the others' next tokens by one chunk at a time, not by its whole prefill), runs a
// decode step for every sequence that is generating, and ends each request on its own stop condition; a
// sequence that is free or still in its prompt rides along in the step with a placeholder token that is taken
// back at once. The HTTP threads wait for their request's text and write it to their clients themselves.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "model/llama_model.h"
#include "runtime/sequence_batch.h"
#include "server/engine.h"

namespace bl::server {

class BatchEngine final : public Engine {
 public:
  // prefill_chunk: prompt tokens fed per scheduler round (n_batch).
  BatchEngine(const LlamaModel& model, const Tokenizer& tokenizer, std::optional<ChatTemplate> chat_template,
              std::unique_ptr<SequenceBatch> batch, int prefill_chunk, int max_waiting);
  ~BatchEngine() override;  // ends the scheduler (requests still in it fail)

  Expected<std::vector<TokenId>> prompt_tokens(const CompletionRequest& request) const override;
  std::optional<Admission> admit() override;
  Expected<CompletionOutcome> complete(const Admission& admission, const CompletionRequest& request,
                                       const std::vector<TokenId>& prompt,
                                       const std::function<bool(const std::string&)>& on_text) override;
  int n_ctx() const override { return batch_->n_ctx(); }
  int requests_in_line() const override;

 private:
  struct Job;
  struct Slot;

  void schedule();  // the scheduler thread
  // One round: prompt tokens up to one chunk, then one decode step.
  void run_round();
  // Feeds up to max_tokens (>= 1) more of the prompt of the job on sequence seq; its first
  // token is picked when the prompt is in. Returns how many were fed.
  Expected<size_t> feed_prompt_chunk(int seq, size_t max_tokens);
  Status decode_step();
  // Takes a generated token for the job on sequence seq: text to its client, and the end of
  // the job when it is an end-of-generation token or a stop condition holds.
  void accept(int seq, TokenId id);
  void finish(int seq, const char* finish_reason);
  void fail_everything(const Status& status);  // a backend error: every job ends with it

  const LlamaModel& model_;
  const Tokenizer& tokenizer_;
  std::optional<ChatTemplate> chat_template_;
  std::unique_ptr<SequenceBatch> batch_;
  const int prefill_chunk_;
  const int max_waiting_;
  std::vector<Slot> slots_;  // one per sequence; only the scheduler thread touches them

  mutable std::mutex mutex_;  // guards the members below
  std::condition_variable work_;
  std::deque<std::shared_ptr<Job>> waiting_;
  int in_line_ = 0;  // admitted and not yet released
  uint64_t next_job_number_ = 0;
  bool stopping_ = false;
  std::thread scheduler_;
};

}  // namespace bl::server
