// A Session is one conversation with a model: its KV cache, its buffers and its position.
// All memory is allocated by create(); feed() allocates nothing (except the host copy of
// every token's logits when logits_all is set, used by `bitlight eval`).
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "core/status.h"
#include "kernels/cpu/top_k_draw.h"
#include "model/llama_model.h"

namespace bl {

using TokenId = int32_t;

struct SessionOptions {
  int n_ctx = 4096;       // KV cache slots; capped at the model's training context
  int n_batch = 512;      // tokens per forward call (prompts are fed in chunks of this size)
  bool logits_all = false;
  DType kv_type = DType::F16;
};

// Whether model's backend can make `draw` (Backend::sample_top_k): temperature > 0, u in [0, 1),
// a top_k it takes (can_sample_top_k). `op` names the caller in the error. Session's and
// SequenceBatch's draws on the backend check it.
Status check_backend_draw(const LlamaModel& model, const cpu::TopKDraw& draw, const char* op);

class Session {
 public:
  static Expected<std::unique_ptr<Session>> create(const LlamaModel& model, const SessionOptions& options);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Appends tokens at the current position. Errors: an id outside the vocabulary, or no room
  // left in the context (nothing is fed then).
  Status feed(std::span<const TokenId> ids);

  // Appends one token and returns the greedy choice for the next one (the lowest id among the
  // largest logits), picked by the backend (Backend::argmax): on CUDA only the id comes back to
  // the host, not the logits. last_logits() is not updated. Errors as feed(), and with
  // logits_all (whose logits this would not keep).
  Expected<TokenId> feed_greedy(TokenId id);
  // Appends one token and returns a token drawn for the next one by the backend
  // (Backend::sample_top_k with `draw`: kernels/cpu/top_k_draw.h), where the logits are; the
  // same draw as Sampler's for the same logits and draw.u. Errors as feed_greedy, and
  // unsupported when the backend cannot draw from draw.top_k (can_sample_top_k).
  Expected<TokenId> feed_sampled(TokenId id, const cpu::TopKDraw& draw);
  // Greedy decoding from id: feeds id, gives the token picked for the next position to on_pick,
  // and while on_pick returns true, at most max_picks picks (< 0: no limit) and the context has
  // room, feeds that token in turn. The same picks and the same state after it as feed_greedy
  // in a loop, but the step feeding a pick is queued before the host reads it (the backend feeds
  // it from where it picked it, the position advanced by the host through alloc_host memory), so
  // on CUDA the GPU does not wait for the host between steps (H100: 1B q4_0 +2.3 %, 8B +0.7 %;
  // docs/cuda.md "Twenty-third session").
  // A step queued for a pick that on_pick then declines is computed and forgotten: its cache
  // slot lies past n_past(). During on_pick, n_past() counts the tokens fed up to that pick.
  // Errors as feed_greedy, and with logits_all.
  Status decode_greedy(TokenId id, int max_picks, const std::function<bool(TokenId)>& on_pick);
  // decode_greedy with each token drawn on the backend as feed_sampled draws it: next_draw() gives
  // each step's draw in step order (one more than the picks given where a queued step is
  // forgotten). The same picks as feed_sampled in a loop with the same draws. Errors as
  // feed_sampled.
  Status decode_sampled(TokenId id, int max_picks, const std::function<cpu::TopKDraw()>& next_draw,
                        const std::function<bool(TokenId)>& on_pick);

  // Logits [n_vocab] of the last fed token (by feed()).
  std::span<const float> last_logits() const { return last_logits_; }
  // With logits_all: [n_fed, n_vocab] of every token fed since the last reset.
  const std::vector<float>& all_logits() const { return all_logits_; }

  bool logits_all() const { return state_.logits_all; }
  int n_past() const { return n_past_; }
  int n_ctx() const { return state_.n_ctx; }
  void reset() { truncate(0); }  // forget the conversation
  // Keeps the first n tokens (n <= n_past); later cache slots are overwritten by the next feed.
  void truncate(int n);
  const LlamaModel& model() const { return model_; }

 private:
  Session(const LlamaModel& model, LlamaForwardState state) : model_(model), state_(std::move(state)) {}

  const LlamaModel& model_;
  LlamaForwardState state_;
  int n_past_ = 0;
  // Runs one forward step of n tokens: single-token steps on a backend with graphs replay a
  // graph captured on first use.
  Status step(int n, TokenPick pick = TokenPick::none, LlamaModel::TokenSource source = LlamaModel::TokenSource::ids);
  Expected<TokenId> feed_and_pick(TokenId id, TokenPick pick, const cpu::TopKDraw* draw);
  Status check_room(std::span<const TokenId> ids) const;

  std::vector<int32_t> positions_;  // host staging [n_batch]
  bool graph_failed_ = false;       // capture did not work: run eagerly from then on
  TokenPick graph_pick_ = TokenPick::none;  // what the captured graph ends with
  LlamaModel::TokenSource graph_source_ = LlamaModel::TokenSource::ids;  // where it takes its id
  // decode_greedy's and decode_sampled's host memory (Backend::alloc_host): the first id, then
  // rings of positions, picks and draws (at most two steps are queued at once).
  static constexpr int kAheadRing = 4;
  struct AheadStaging {
    cpu::TopKDraw draws[kAheadRing];
    int32_t first;
    int32_t positions[kAheadRing];
    int32_t picks[kAheadRing];
  };
  AheadStaging* ahead_staging_ = nullptr;
  Status decode_ahead(TokenId id, int max_picks, TokenPick pick, const std::function<cpu::TopKDraw()>* next_draw,
                      const std::function<bool(TokenId)>& on_pick);
  std::vector<float> last_logits_;  // [n_vocab]
  std::vector<float> all_logits_;
};

}  // namespace bl
