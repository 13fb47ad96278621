// A SequenceBatch is n_seq conversations decoded together: one KV cache region per sequence,
// each sequence's prompt fed on its own, then decode steps that take the next token of every
// sequence at once, so each weight is read once per step for all of them (the matmuls see
// n_seq tokens; rope, the cache write and attention take each token to its own sequence's cache
// region; on CUDA the step is a graph, replayed). What `bitlight bench -B N` measures, and the
// step a batching server runs.
#pragma once

#include <algorithm>
#include <memory>
#include <span>
#include <vector>

#include "core/status.h"
#include "kernels/cpu/top_k_draw.h"
#include "model/llama_model.h"
#include "runtime/session.h"  // TokenId

namespace bl {

struct SequenceBatchOptions {
  int n_seq = 16;
  int n_ctx = 4096;  // cache slots per sequence; capped at the model's training context
  int n_batch = 512;  // prompt tokens per forward call (raised to n_seq if smaller)
  DType kv_type = DType::F16;
};

class SequenceBatch {
 public:
  static Expected<std::unique_ptr<SequenceBatch>> create(const LlamaModel& model,
                                                         const SequenceBatchOptions& options);
  ~SequenceBatch();
  SequenceBatch(const SequenceBatch&) = delete;
  SequenceBatch& operator=(const SequenceBatch&) = delete;

  int n_seq() const { return state_.n_seq; }
  int n_ctx() const { return state_.n_ctx; }
  int n_past(int seq) const { return n_past_[static_cast<size_t>(seq)]; }

  // Appends ids to sequence seq (in chunks of n_batch). Errors: seq out of range, an id outside
  // the vocabulary, or no room left in that sequence's context (nothing is fed then).
  Status feed(int seq, std::span<const TokenId> ids);
  // Appends ids[i] to sequence i for every sequence (ids.size() == n_seq) in one forward pass.
  // Errors as feed(), for any sequence (nothing is fed then).
  Status step(std::span<const TokenId> ids);
  // step(), then the greedy next token of every sequence, picked by the backend (on CUDA only
  // n_seq ids come back to the host).
  Expected<std::vector<TokenId>> step_greedy(std::span<const TokenId> ids);
  // step(), then a token drawn for every sequence by the backend (Backend::sample_top_k) with
  // draws[i] for sequence i (draws.size() == n_seq): on CUDA only n_seq ids come back, not the
  // logits. A draw with top_k 1 is the argmax. Errors as step(), a draw the backend cannot make
  // (temperature <= 0, u outside [0, 1), a top_k it does not take: Backend::can_sample_top_k).
  Expected<std::vector<TokenId>> step_sampled(std::span<const TokenId> ids, std::span<const cpu::TopKDraw> draws);
  // Logits [n_vocab] of sequence seq's last token after a step(), read from the backend.
  std::vector<float> logits(int seq) const;
  // Logits [n_vocab] of the last token of the last feed(), read from the backend.
  std::vector<float> fed_logits() const { return logits(0); }
  void reset() { std::fill(n_past_.begin(), n_past_.end(), 0); }
  // Keeps the first n tokens of sequence seq (0 <= n <= n_past(seq)); its later cache slots are
  // overwritten by the next feed or step. Errors: seq or n out of range.
  Status truncate(int seq, int n);

 private:
  SequenceBatch(const LlamaModel& model, LlamaForwardState state)
      : model_(model), state_(std::move(state)), n_past_(static_cast<size_t>(state_.n_seq), 0) {}
  Status check_ids(std::span<const TokenId> ids) const;
  Status run_step(std::span<const TokenId> ids, TokenPick pick);
  // The forward pass of a step: on a backend with graphs, captured on first use (and when the
  // pick changes) and replayed after that, as Session's single-token steps.
  Status forward_step(TokenPick pick);

  const LlamaModel& model_;
  LlamaForwardState state_;
  std::vector<int> n_past_;
  std::vector<int32_t> positions_;  // host staging [max_tokens]
  bool graph_failed_ = false;       // capture did not work: run eagerly from then on
  TokenPick graph_pick_ = TokenPick::none;  // what the captured graph ends with
};

}  // namespace bl
