#include "server/batch_engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <span>

#include "runtime/sampler.h"
#include "runtime/token_prefix.h"
#include "server/stop_matcher.h"

namespace bl::server {
namespace {

using Clock = std::chrono::steady_clock;

int64_t microseconds_since(Clock::time_point t0) {
  return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
}

// Any id of the vocabulary: what a sequence that is not generating feeds in a decode step.
constexpr TokenId kPlaceholder = 0;

}  // namespace

// One request, shared by the HTTP thread that waits for it and the scheduler that runs it.
struct BatchEngine::Job {
  Job(const CompletionRequest& r, const std::vector<TokenId>& p, const Tokenizer& tokenizer, uint64_t n)
      : request(r), prompt(p), sampler(r.sampler), stops(r.stop), decoder(tokenizer), number(n) {
    history.reserve(prompt.size() + static_cast<size_t>(std::max(0, request.max_tokens.value_or(0))));
    history.assign(prompt.begin(), prompt.end());
  }

  // The caller's, alive until done (the caller waits for it).
  const CompletionRequest& request;
  const std::vector<TokenId>& prompt;
  // The scheduler's.
  Sampler sampler;
  StopMatcher stops;
  StreamDecoder decoder;
  std::vector<TokenId> history;  // prompt and generated tokens, for the repetition penalty
  const uint64_t number;         // arrival order
  size_t fed = 0;                // prompt tokens in the sequence's cache
  bool generating = false;       // the prompt is in; `next` is fed by the next decode step
  TokenId next = -1;
  int generated = 0;
  Clock::time_point started, first_token;
  // Set by the caller when its client has gone; the scheduler then ends the job.
  std::atomic<bool> cancelled{false};

  // Shared: guarded by m.
  std::mutex m;
  std::condition_variable changed;
  std::string outbox;  // text not yet taken by the caller
  bool done = false;
  Status error;
  CompletionOutcome outcome;

  void post(const std::string& text, bool last = false) {
    {
      std::lock_guard lock(m);
      outbox += text;
      done = done || last;
    }
    changed.notify_one();
  }
  void fail(const Status& status) {
    {
      std::lock_guard lock(m);
      error = status;
      done = true;
    }
    changed.notify_one();
  }
};

// One sequence of the batch.
struct BatchEngine::Slot {
  std::shared_ptr<Job> job;     // null: free
  std::vector<TokenId> cached;  // the tokens whose keys and values its cache holds (n_past of it)
};

BatchEngine::BatchEngine(const LlamaModel& model, const Tokenizer& tokenizer,
                         std::optional<ChatTemplate> chat_template, std::unique_ptr<SequenceBatch> batch,
                         int prefill_chunk, int max_waiting)
    : model_(model),
      tokenizer_(tokenizer),
      chat_template_(std::move(chat_template)),
      batch_(std::move(batch)),
      prefill_chunk_(std::max(1, prefill_chunk)),
      max_waiting_(max_waiting),
      slots_(static_cast<size_t>(batch_->n_seq())) {
  scheduler_ = std::thread([this] { schedule(); });
}

BatchEngine::~BatchEngine() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  scheduler_.join();
}

Expected<std::vector<TokenId>> BatchEngine::prompt_tokens(const CompletionRequest& request) const {
  return tokenize_prompt(request, tokenizer_, chat_template_, model_.config().n_vocab, batch_->n_ctx());
}

std::optional<Admission> BatchEngine::admit() {
  std::lock_guard lock(mutex_);
  if (in_line_ >= batch_->n_seq() + max_waiting_) {
    ++counters_.requests_refused_busy;
    return std::nullopt;
  }
  ++in_line_;
  return std::optional<Admission>(std::in_place, [this] {
    std::lock_guard l(mutex_);
    --in_line_;
  });
}

int BatchEngine::requests_in_line() const {
  std::lock_guard lock(mutex_);
  return in_line_;
}

Expected<CompletionOutcome> BatchEngine::complete(const Admission& /*admission*/,
                                                  const CompletionRequest& request,
                                                  const std::vector<TokenId>& prompt,
                                                  const std::function<bool(const std::string&)>& on_text) {
  std::shared_ptr<Job> job;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return unsupported("the server is stopping");
    job = std::make_shared<Job>(request, prompt, tokenizer_, next_job_number_++);
    waiting_.push_back(job);
  }
  work_.notify_one();
  // The text comes to this thread, which writes it to the client; a client gone cancels the job.
  for (;;) {
    std::string text;
    bool done = false;
    {
      std::unique_lock lock(job->m);
      job->changed.wait(lock, [&] { return !job->outbox.empty() || job->done; });
      text.swap(job->outbox);
      done = job->done;
    }
    if (!text.empty() && !job->cancelled && !on_text(text)) {
      job->cancelled = true;
      work_.notify_one();
    }
    if (done) break;
  }
  std::lock_guard lock(job->m);
  if (!job->error.ok()) return job->error;
  return job->outcome;
}

void BatchEngine::schedule() {
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      const auto busy = [&] {
        return std::any_of(slots_.begin(), slots_.end(), [](const Slot& s) { return s.job != nullptr; });
      };
      work_.wait(lock, [&] { return stopping_ || !waiting_.empty() || busy(); });
      if (stopping_) {
        for (const std::shared_ptr<Job>& job : waiting_) job->fail(unsupported("the server is stopping"));
        waiting_.clear();
        break;
      }
      // The oldest waiting jobs onto free sequences: of those, the one whose cache shares the
      // longest prefix with the prompt (a chat's next turn lands where its last turn is cached).
      while (!waiting_.empty()) {
        const std::shared_ptr<Job>& job = waiting_.front();
        int best = -1;
        size_t best_prefix = 0;
        for (int q = 0; q < batch_->n_seq(); ++q) {
          const Slot& s = slots_[static_cast<size_t>(q)];
          if (s.job) continue;
          const size_t prefix = job->request.cache_prompt ? common_prefix(s.cached, job->prompt) : 0;
          if (best < 0 || prefix > best_prefix) best = q, best_prefix = prefix;
        }
        if (best < 0) break;
        slots_[static_cast<size_t>(best)].job = job;
        waiting_.pop_front();
      }
    }
    run_round();
  }
  for (int q = 0; q < batch_->n_seq(); ++q) {
    if (slots_[static_cast<size_t>(q)].job) {
      slots_[static_cast<size_t>(q)].job->fail(unsupported("the server is stopping"));
      slots_[static_cast<size_t>(q)].job = nullptr;
    }
  }
}

void BatchEngine::run_round() {
  // Jobs whose clients have gone end first, freeing their sequences.
  for (int q = 0; q < batch_->n_seq(); ++q) {
    const Slot& s = slots_[static_cast<size_t>(q)];
    if (s.job && s.job->cancelled) finish(q, "stop");
  }
  // Up to one chunk (-b) of prompt tokens a round, oldest job first: the short prompts of several
  // new jobs share a round, a long one is spread over rounds, each followed by a decode step.
  size_t budget = static_cast<size_t>(prefill_chunk_);
  while (budget > 0) {
    int oldest = -1;
    for (int q = 0; q < batch_->n_seq(); ++q) {
      const Slot& s = slots_[static_cast<size_t>(q)];
      if (s.job && !s.job->generating &&
          (oldest < 0 || s.job->number < slots_[static_cast<size_t>(oldest)].job->number)) {
        oldest = q;
      }
    }
    if (oldest < 0) break;
    Expected<size_t> fed = feed_prompt_chunk(oldest, budget);
    if (!fed.ok()) return fail_everything(fed.status());
    budget -= *fed;
  }
  if (Status st = decode_step(); !st.ok()) return fail_everything(st);
}

Expected<size_t> BatchEngine::feed_prompt_chunk(int seq, size_t max_tokens) {
  Slot& slot = slots_[static_cast<size_t>(seq)];
  Job& job = *slot.job;
  if (job.fed == 0 && !job.generating) {
    // The job's first round: keep the cached prefix it shares.
    job.started = Clock::now();
    const size_t reuse = job.request.cache_prompt ? reusable_prefix(slot.cached, job.prompt) : 0;
    BL_RETURN_IF_ERROR(batch_->truncate(seq, static_cast<int>(reuse)));
    slot.cached.resize(reuse);
    job.fed = reuse;
    counters_.prompt_tokens += static_cast<int64_t>(job.prompt.size());
    counters_.prompt_tokens_reused += static_cast<int64_t>(reuse);
  }
  const size_t n = std::min(job.prompt.size() - job.fed, max_tokens);
  const std::span<const TokenId> chunk = std::span<const TokenId>(job.prompt).subspan(job.fed, n);
  BL_RETURN_IF_ERROR(batch_->feed(seq, chunk));
  slot.cached.insert(slot.cached.end(), chunk.begin(), chunk.end());
  job.fed += n;
  if (job.fed < job.prompt.size()) return n;

  job.generating = true;
  job.first_token = Clock::now();
  counters_.prompt_microseconds += microseconds_since(job.started);
  if (job.request.max_tokens && *job.request.max_tokens == 0) {
    finish(seq, "length");
    return n;
  }
  const std::vector<float> logits = batch_->fed_logits();
  accept(seq, job.sampler.sample(logits, job.history));
  return n;
}

Status BatchEngine::decode_step() {
  const int n_seq = batch_->n_seq();
  std::vector<TokenId> ids(static_cast<size_t>(n_seq), kPlaceholder);
  std::vector<bool> generating(static_cast<size_t>(n_seq), false);
  int n_generating = 0;
  // Where the tokens are picked: the backend takes the argmax of every row when every
  // generating job is greedy, else draws each row (a greedy job's draw is top_k 1) when none has
  // a repetition penalty and the backend takes every top_k; otherwise each job's sampler draws
  // from its row of logits on the host. The backend's draws take the sampler's uniform numbers in
  // the sampler's order, so a seed gives the text `bitlight run` gives.
  bool all_greedy = true, backend_draws = true;
  for (int q = 0; q < n_seq; ++q) {
    const Slot& s = slots_[static_cast<size_t>(q)];
    if (!s.job || !s.job->generating) continue;
    generating[static_cast<size_t>(q)] = true;
    ids[static_cast<size_t>(q)] = s.job->next;
    ++n_generating;
    const SamplerParams& p = s.job->request.sampler;
    const bool greedy = p.temperature == 0.0f;
    const bool penalty = applies_repeat_penalty(p);
    all_greedy = all_greedy && greedy && !penalty;
    backend_draws = backend_draws && !penalty &&
                    (greedy || model_.backend().can_sample_top_k(p.top_k, model_.config().n_vocab));
  }
  if (n_generating == 0) return Status::Ok();
  // The others take a placeholder at their next slot and give it back after the step; a free
  // sequence whose cache is full first drops its last token (step() needs room in each).
  std::vector<int> n_past_before(static_cast<size_t>(n_seq));
  for (int q = 0; q < n_seq; ++q) {
    Slot& s = slots_[static_cast<size_t>(q)];
    if (!generating[static_cast<size_t>(q)] && batch_->n_past(q) >= batch_->n_ctx()) {
      BL_RETURN_IF_ERROR(batch_->truncate(q, batch_->n_ctx() - 1));
      s.cached.resize(static_cast<size_t>(batch_->n_ctx() - 1));
    }
    n_past_before[static_cast<size_t>(q)] = batch_->n_past(q);
  }
  std::vector<TokenId> picks;
  if (all_greedy) {
    BL_ASSIGN_OR_RETURN(picks, batch_->step_greedy(ids));
  } else if (backend_draws) {
    constexpr cpu::TopKDraw kArgmax{.temperature = 1.0f, .top_k = 1, .top_p = 1.0f, .min_p = 0.0f, .u = 0.0};
    std::vector<cpu::TopKDraw> draws(static_cast<size_t>(n_seq), kArgmax);
    for (int q = 0; q < n_seq; ++q) {
      if (!generating[static_cast<size_t>(q)]) continue;
      Job& job = *slots_[static_cast<size_t>(q)].job;
      const SamplerParams& p = job.request.sampler;
      if (p.temperature > 0.0f) draws[static_cast<size_t>(q)] = top_k_draw(p, job.sampler.next_uniform());
    }
    BL_ASSIGN_OR_RETURN(picks, batch_->step_sampled(ids, draws));
  } else {
    BL_RETURN_IF_ERROR(batch_->step(ids));
  }
  ++counters_.batch_steps;
  counters_.batch_step_sequences += n_generating;
  for (int q = 0; q < n_seq; ++q) {
    Slot& s = slots_[static_cast<size_t>(q)];
    if (!generating[static_cast<size_t>(q)]) {
      BL_RETURN_IF_ERROR(batch_->truncate(q, n_past_before[static_cast<size_t>(q)]));
      continue;
    }
    s.cached.push_back(ids[static_cast<size_t>(q)]);
    const TokenId id = !picks.empty() ? picks[static_cast<size_t>(q)]
                                      : s.job->sampler.sample(batch_->logits(q), s.job->history);
    accept(q, id);
  }
  return Status::Ok();
}

void BatchEngine::accept(int seq, TokenId id) {
  Job& job = *slots_[static_cast<size_t>(seq)].job;
  if (tokenizer_.is_end_of_generation(id)) return finish(seq, "stop");
  ++job.generated;
  job.history.push_back(id);
  const std::string text = job.stops.push(job.decoder.push(id));
  if (!text.empty()) job.post(text);
  if (job.stops.stopped()) return finish(seq, "stop");
  if (job.request.max_tokens && job.generated >= *job.request.max_tokens) return finish(seq, "length");
  if (batch_->n_past(seq) >= batch_->n_ctx()) return finish(seq, "length");  // no room to feed it
  job.next = id;
}

void BatchEngine::finish(int seq, const char* finish_reason) {
  Slot& slot = slots_[static_cast<size_t>(seq)];
  std::shared_ptr<Job> job = std::move(slot.job);
  std::string tail;
  if (!job->stops.stopped()) {
    tail = job->stops.push(job->decoder.flush());
    if (!job->stops.stopped()) tail += job->stops.flush();
  }
  if (job->generating) counters_.decode_microseconds += microseconds_since(job->first_token);
  counters_.generated_tokens += job->generated;
  ++(job->cancelled ? counters_.requests_cancelled : counters_.requests_completed);
  {
    std::lock_guard lock(job->m);
    job->outcome.cancelled = job->cancelled;
    job->outcome.finish_reason = job->stops.stopped() ? "stop" : finish_reason;
    job->outcome.prompt_tokens = static_cast<int>(job->prompt.size());
    job->outcome.completion_tokens = job->generated;
  }
  job->post(tail, /*last=*/true);
}

void BatchEngine::fail_everything(const Status& status) {
  for (int q = 0; q < batch_->n_seq(); ++q) {
    Slot& slot = slots_[static_cast<size_t>(q)];
    slot.cached.clear();
    if (!slot.job) continue;
    slot.job->fail(status);
    slot.job = nullptr;
  }
  batch_->reset();
}

}  // namespace bl::server
