#include "runtime/sequence_batch.h"

#include <algorithm>
#include <cstdio>
#include <string>

namespace bl {

Expected<std::unique_ptr<SequenceBatch>> SequenceBatch::create(const LlamaModel& model,
                                                               const SequenceBatchOptions& o) {
  if (o.n_seq <= 0)
    return invalid_argument("the number of sequences must be positive, got " + std::to_string(o.n_seq));
  if (o.n_ctx <= 0) return invalid_argument("context size must be positive, got " + std::to_string(o.n_ctx));
  if (o.n_batch <= 0)
    return invalid_argument("batch size must be positive, got " + std::to_string(o.n_batch));
  const int n_ctx = std::min(o.n_ctx, model.config().n_ctx_train);
  const int max_tokens = std::max(std::min(o.n_batch, n_ctx), o.n_seq);
  LlamaForwardState state;
  BL_ASSIGN_OR_RETURN(state, model.plan(n_ctx, max_tokens, /*logits_all=*/false, o.kv_type, o.n_seq));
  std::unique_ptr<SequenceBatch> b(new SequenceBatch(model, std::move(state)));
  b->positions_.resize(static_cast<size_t>(max_tokens));
  return b;
}

Status SequenceBatch::check_ids(std::span<const TokenId> ids) const {
  const int n_vocab = model_.config().n_vocab;
  for (TokenId id : ids)
    if (id < 0 || id >= n_vocab)
      return invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                              std::to_string(n_vocab - 1) + ")");
  return Status::Ok();
}

Status SequenceBatch::feed(int seq, std::span<const TokenId> ids) {
  if (seq < 0 || seq >= n_seq())
    return invalid_argument("sequence " + std::to_string(seq) + " is outside 0.." +
                            std::to_string(n_seq() - 1));
  BL_RETURN_IF_ERROR(check_ids(ids));
  int& n_past = n_past_[static_cast<size_t>(seq)];
  if (static_cast<int64_t>(n_past) + static_cast<int64_t>(ids.size()) > state_.n_ctx)
    return invalid_argument("sequence " + std::to_string(seq) +
                            "'s context is full: " + std::to_string(n_past) + " + " +
                            std::to_string(ids.size()) + " tokens exceed " + std::to_string(state_.n_ctx));
  Backend& backend = model_.backend();
  for (size_t done = 0; done < ids.size();) {
    const int n =
        static_cast<int>(std::min<size_t>(ids.size() - done, static_cast<size_t>(state_.max_tokens)));
    for (int i = 0; i < n; ++i) positions_[static_cast<size_t>(i)] = n_past + i;
    backend.write(state_.ids, ids.data() + done, static_cast<size_t>(n) * sizeof(int32_t));
    backend.write(state_.positions, positions_.data(), static_cast<size_t>(n) * sizeof(int32_t));
    model_.forward(state_, n, TokenPick::none, seq);
    BL_RETURN_IF_ERROR(backend.status());
    n_past += n;
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

Status SequenceBatch::truncate(int seq, int n) {
  if (seq < 0 || seq >= n_seq())
    return invalid_argument("sequence " + std::to_string(seq) + " is outside 0.." + std::to_string(n_seq() - 1));
  int& n_past = n_past_[static_cast<size_t>(seq)];
  if (n < 0 || n > n_past)
    return invalid_argument("sequence " + std::to_string(seq) + " holds " + std::to_string(n_past) +
                            " tokens, cannot keep " + std::to_string(n));
  n_past = n;
  return Status::Ok();
}

Status SequenceBatch::run_step(std::span<const TokenId> ids, TokenPick pick) {
  if (static_cast<int>(ids.size()) != n_seq())
    return invalid_argument("a step takes one token per sequence: " + std::to_string(n_seq()) + ", got " +
                            std::to_string(ids.size()));
  BL_RETURN_IF_ERROR(check_ids(ids));
  for (int q = 0; q < n_seq(); ++q) {
    if (n_past_[static_cast<size_t>(q)] >= state_.n_ctx)
      return invalid_argument("sequence " + std::to_string(q) + "'s context is full (" +
                              std::to_string(state_.n_ctx) + " tokens)");
    positions_[static_cast<size_t>(q)] = n_past_[static_cast<size_t>(q)];
  }
  Backend& backend = model_.backend();
  backend.write(state_.ids, ids.data(), ids.size() * sizeof(int32_t));
  backend.write(state_.positions, positions_.data(), ids.size() * sizeof(int32_t));
  BL_RETURN_IF_ERROR(forward_step(pick));
  for (int& n : n_past_) n += 1;
  return Status::Ok();
}

SequenceBatch::~SequenceBatch() {
  // A later owner at the same address must not replay this batch's graph.
  if (model_.backend().graph_owner() == this) model_.backend().set_graph_owner(nullptr);
}

Status SequenceBatch::forward_step(TokenPick pick) {
  Backend& backend = model_.backend();
  auto forward = [&] { model_.forward(state_, n_seq(), pick, LlamaModel::kEachOwnSequence); };
  if (!backend.supports_graphs() || graph_failed_) {
    forward();
    return backend.status();
  }
  if (backend.graph_owner() != this || graph_pick_ != pick) {
    // As Session::step: the first step runs eagerly (it sizes the backend's workspaces), then
    // the same step is captured; later ones replay it with the ids and positions written above.
    forward();
    BL_RETURN_IF_ERROR(backend.status());
    Status captured = backend.capture_graph(forward);
    if (!captured.ok()) {
      graph_failed_ = true;
      std::fprintf(stderr, "bitlight: batch step graph capture failed, running ops one by one: %s\n",
                   captured.message().c_str());
      return Status::Ok();
    }
    backend.set_graph_owner(this);
    graph_pick_ = pick;
    return Status::Ok();
  }
  return backend.replay_graph();
}

Status SequenceBatch::step(std::span<const TokenId> ids) { return run_step(ids, TokenPick::none); }

Expected<std::vector<TokenId>> SequenceBatch::step_greedy(std::span<const TokenId> ids) {
  BL_RETURN_IF_ERROR(run_step(ids, TokenPick::argmax));
  std::vector<TokenId> next(static_cast<size_t>(n_seq()));
  model_.backend().read(state_.sampled, next.data(), next.size() * sizeof(TokenId));
  BL_RETURN_IF_ERROR(model_.backend().status());
  return next;
}

Expected<std::vector<TokenId>> SequenceBatch::step_sampled(std::span<const TokenId> ids,
                                                           std::span<const cpu::TopKDraw> draws) {
  if (static_cast<int>(draws.size()) != n_seq())
    return invalid_argument("a sampled step takes one draw per sequence: " + std::to_string(n_seq()) + ", got " +
                            std::to_string(draws.size()));
  for (const cpu::TopKDraw& d : draws) BL_RETURN_IF_ERROR(check_backend_draw(model_, d, "step_sampled"));
  Backend& backend = model_.backend();
  backend.write(state_.draws, draws.data(), draws.size() * sizeof(cpu::TopKDraw));
  BL_RETURN_IF_ERROR(run_step(ids, TokenPick::sample_top_k));
  std::vector<TokenId> next(static_cast<size_t>(n_seq()));
  backend.read(state_.sampled, next.data(), next.size() * sizeof(TokenId));
  BL_RETURN_IF_ERROR(backend.status());
  return next;
}

std::vector<float> SequenceBatch::logits(int seq) const {
  const int n_vocab = model_.config().n_vocab;
  std::vector<float> out(static_cast<size_t>(n_vocab));
  const size_t row_bytes = static_cast<size_t>(n_vocab) * sizeof(float);
  model_.backend().read(state_.logits, out.data(), row_bytes, row_bytes * static_cast<size_t>(seq));
  return out;
}

}  // namespace bl
