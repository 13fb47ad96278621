#include "runtime/session.h"

#include <algorithm>
#include <cstdio>
#include <string>

namespace bl {

Expected<std::unique_ptr<Session>> Session::create(const LlamaModel& model, const SessionOptions& options) {
  const LlamaConfig& c = model.config();
  if (options.n_ctx <= 0) return invalid_argument("context size must be positive, got " + std::to_string(options.n_ctx));
  if (options.n_batch <= 0) return invalid_argument("batch size must be positive, got " + std::to_string(options.n_batch));
  const int n_ctx = std::min(options.n_ctx, c.n_ctx_train);
  const int n_batch = std::min(options.n_batch, n_ctx);
  LlamaForwardState state;
  BL_ASSIGN_OR_RETURN(state, model.plan(n_ctx, n_batch, options.logits_all, options.kv_type));
  std::unique_ptr<Session> s(new Session(model, std::move(state)));
  s->positions_.resize(static_cast<size_t>(n_batch));
  s->last_logits_.resize(static_cast<size_t>(c.n_vocab));
  return s;
}

Session::~Session() {
  // A later session at the same address must not replay this one's graph.
  if (model_.backend().graph_owner() == this) model_.backend().set_graph_owner(nullptr);
}

void Session::truncate(int n) {
  n_past_ = std::clamp(n, 0, n_past_);
  all_logits_.resize(static_cast<size_t>(n_past_) * model_.config().n_vocab);
}

Status Session::step(int n, TokenPick pick, LlamaModel::TokenSource source) {
  Backend& backend = model_.backend();
  if (n != 1 || !backend.supports_graphs() || graph_failed_) {
    model_.forward(state_, n, pick, 0, source);
    // decode_ahead's steps are waited for by their reads (Backend::wait_read).
    return source == LlamaModel::TokenSource::picked ? Status::Ok() : backend.status();
  }
  if (backend.graph_owner() != this || graph_pick_ != pick || graph_source_ != source) {
    // The first single-token step runs eagerly (it sizes the backend's workspaces), then the
    // same step is captured; later ones replay it.
    model_.forward(state_, 1, pick, 0, source);
    BL_RETURN_IF_ERROR(backend.status());
    Status captured = backend.capture_graph([&] { model_.forward(state_, 1, pick, 0, source); });
    if (!captured.ok()) {
      graph_failed_ = true;
      std::fprintf(stderr, "bitlight: decode graph capture failed, running ops one by one: %s\n", captured.message().c_str());
      return Status::Ok();
    }
    backend.set_graph_owner(this);
    graph_pick_ = pick;
    graph_source_ = source;
    return Status::Ok();
  }
  return backend.replay_graph();
}

Status Session::check_room(std::span<const TokenId> ids) const {
  const int n_vocab = model_.config().n_vocab;
  for (TokenId id : ids)
    if (id < 0 || id >= n_vocab)
      return invalid_argument("token id " + std::to_string(id) + " is outside the vocabulary (0.." + std::to_string(n_vocab - 1) + ")");
  if (static_cast<int64_t>(n_past_) + static_cast<int64_t>(ids.size()) > state_.n_ctx)
    return invalid_argument("the context is full: " + std::to_string(n_past_) + " + " + std::to_string(ids.size()) +
                            " tokens exceed the context size " + std::to_string(state_.n_ctx));
  return Status::Ok();
}

Expected<TokenId> Session::feed_greedy(TokenId id) { return feed_and_pick(id, TokenPick::argmax, nullptr); }

Expected<TokenId> Session::feed_sampled(TokenId id, const cpu::TopKDraw& draw) {
  BL_RETURN_IF_ERROR(check_backend_draw(model_, draw, "feed_sampled"));
  return feed_and_pick(id, TokenPick::sample_top_k, &draw);
}

Status check_backend_draw(const LlamaModel& model, const cpu::TopKDraw& draw, const char* op) {
  if (!(draw.temperature > 0) || !(draw.u >= 0 && draw.u < 1))
    return invalid_argument(std::string(op) + ": needs temperature > 0 and u in [0, 1)");
  if (!model.backend().can_sample_top_k(draw.top_k, model.config().n_vocab))
    return unsupported(std::string(op) + ": " + model.backend().name() + " cannot draw from top_k = " +
                       std::to_string(draw.top_k));
  return Status::Ok();
}

Expected<TokenId> Session::feed_and_pick(TokenId id, TokenPick pick, const cpu::TopKDraw* draw) {
  if (state_.logits_all)
    return invalid_argument("feed_greedy / feed_sampled: this session keeps every token's logits (logits_all): use feed()");
  const TokenId ids[1] = {id};
  BL_RETURN_IF_ERROR(check_room(ids));
  Backend& backend = model_.backend();
  const int32_t position = n_past_;
  backend.write(state_.ids, ids, sizeof(int32_t));
  backend.write(state_.positions, &position, sizeof(int32_t));
  if (draw) backend.write(state_.draws, draw, sizeof *draw);
  BL_RETURN_IF_ERROR(step(1, pick));
  TokenId next = 0;
  backend.read(state_.sampled, &next, sizeof next);
  BL_RETURN_IF_ERROR(backend.status());
  n_past_ += 1;
  return next;
}

Status Session::decode_greedy(TokenId id, int max_picks, const std::function<bool(TokenId)>& on_pick) {
  return decode_ahead(id, max_picks, TokenPick::argmax, nullptr, on_pick);
}

Status Session::decode_sampled(TokenId id, int max_picks, const std::function<cpu::TopKDraw()>& next_draw,
                               const std::function<bool(TokenId)>& on_pick) {
  return decode_ahead(id, max_picks, TokenPick::sample_top_k, &next_draw, on_pick);
}

Status Session::decode_ahead(TokenId id, int max_picks, TokenPick pick,
                             const std::function<cpu::TopKDraw()>* next_draw,
                             const std::function<bool(TokenId)>& on_pick) {
  if (state_.logits_all)
    return invalid_argument("decode_greedy / decode_sampled: this session keeps every token's logits (logits_all): use feed()");
  const TokenId first[1] = {id};
  BL_RETURN_IF_ERROR(check_room(first));
  Backend& backend = model_.backend();
  if (!ahead_staging_) {
    ahead_staging_ = static_cast<AheadStaging*>(backend.alloc_host(sizeof(AheadStaging)));
    if (!ahead_staging_) {
      BL_RETURN_IF_ERROR(backend.status());
      return internal_error("decode: no host memory for the decode's ids");
    }
  }
  AheadStaging& st = *ahead_staging_;
  // Step i feeds what state_.sampled holds (id, then step i - 1's pick) at position `at`, picks
  // into state_.sampled, and copies the pick to picks[i % ring]. Stream order keeps each write
  // after the steps before it, and no more than two steps are queued at once, so the rings'
  // slots are free when they are written.
  auto queue = [&](int i, int at) -> Expected<uint64_t> {
    const int slot = i % kAheadRing;
    if (next_draw) {
      st.draws[slot] = (*next_draw)();
      BL_RETURN_IF_ERROR(check_backend_draw(model_, st.draws[slot], "decode_sampled"));
      backend.write(state_.draws, &st.draws[slot], sizeof(cpu::TopKDraw));
    }
    st.positions[slot] = at;
    backend.write(state_.positions, &st.positions[slot], sizeof(int32_t));
    BL_RETURN_IF_ERROR(step(1, pick, LlamaModel::TokenSource::picked));
    return backend.read_async(state_.sampled, &st.picks[slot], sizeof(int32_t));
  };
  st.first = id;
  backend.write(state_.sampled, &st.first, sizeof(int32_t));
  BL_ASSIGN_OR_RETURN(uint64_t pending, queue(0, n_past_));
  for (int i = 0;; ++i) {
    const int fed = n_past_ + 1;  // tokens in the cache once step i is done
    // Step i + 1 is queued before step i's pick is read, where it may follow.
    const bool ahead = (max_picks < 0 || i + 1 < max_picks) && fed < state_.n_ctx;
    uint64_t next = 0;
    if (ahead) {
      BL_ASSIGN_OR_RETURN(next, queue(i + 1, fed));
    }
    BL_RETURN_IF_ERROR(backend.wait_read(pending));
    n_past_ = fed;
    const TokenId picked = st.picks[i % kAheadRing];
    if (!on_pick(picked) || !ahead) {
      if (ahead) BL_RETURN_IF_ERROR(backend.wait_read(next));  // forgotten, but its copy lands in the ring
      return Status::Ok();
    }
    pending = next;
  }
}

Status Session::feed(std::span<const TokenId> ids) {
  const int n_vocab = model_.config().n_vocab;
  BL_RETURN_IF_ERROR(check_room(ids));
  Backend& backend = model_.backend();
  size_t done = 0;
  while (done < ids.size()) {
    const int n = static_cast<int>(std::min<size_t>(ids.size() - done, static_cast<size_t>(state_.max_tokens)));
    for (int i = 0; i < n; ++i) positions_[static_cast<size_t>(i)] = n_past_ + i;
    backend.write(state_.ids, ids.data() + done, static_cast<size_t>(n) * sizeof(int32_t));
    backend.write(state_.positions, positions_.data(), static_cast<size_t>(n) * sizeof(int32_t));
    BL_RETURN_IF_ERROR(step(n));
    const size_t row_bytes = static_cast<size_t>(n_vocab) * sizeof(float);
    if (state_.logits_all) {
      const size_t old = all_logits_.size();
      all_logits_.resize(old + static_cast<size_t>(n) * static_cast<size_t>(n_vocab));
      backend.read(state_.logits, all_logits_.data() + old, static_cast<size_t>(n) * row_bytes);
      std::copy_n(all_logits_.end() - n_vocab, n_vocab, last_logits_.begin());
    } else {
      backend.read(state_.logits, last_logits_.data(), row_bytes);
    }
    n_past_ += n;
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

}  // namespace bl
