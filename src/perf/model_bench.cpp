#include "perf/model_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "runtime/sequence_batch.h"
#include "runtime/session.h"

namespace bl {

double RateStats::mean() const {
  if (tokens_per_second.empty()) return 0;
  return std::accumulate(tokens_per_second.begin(), tokens_per_second.end(), 0.0) / tokens_per_second.size();
}

double RateStats::stddev() const {
  if (tokens_per_second.size() < 2) return 0;
  const double m = mean();
  double sum_sq = 0;
  for (double v : tokens_per_second) sum_sq += (v - m) * (v - m);
  return std::sqrt(sum_sq / (tokens_per_second.size() - 1));
}

Expected<ModelBenchResult> bench_model(const LlamaModel& model, const ModelBenchOptions& o) {
  if (o.n_prompt < 0 || o.n_gen < 0 || o.repetitions < 1)
    return invalid_argument("bench: -p and -n must be >= 0 and -r >= 1");
  const LlamaConfig& c = model.config();
  // Decode starts after a one-token prompt when prefill is skipped.
  const int needed = std::max(o.n_prompt, 1) + o.n_gen;
  if (o.n_ctx != 0 && o.n_ctx < needed)
    return invalid_argument("bench: a context of " + std::to_string(o.n_ctx) + " slots cannot hold the " +
                            std::to_string(needed) + " tokens of the tests (-p + -n)");
  const int n_ctx = std::max(needed, o.n_ctx);
  if (n_ctx > c.n_ctx_train)
    return invalid_argument("bench: " + std::to_string(n_ctx) + " tokens exceed the model's context " +
                            std::to_string(c.n_ctx_train));
  if (o.n_seq < 1) return invalid_argument("bench: -B (sequences decoded together) must be >= 1");
  const int n_batch = std::max(1, std::min(o.n_batch, n_ctx));
  // One sequence: a Session, as `bitlight run` decodes. Several: a SequenceBatch, each step
  // taking the next token of every sequence.
  std::unique_ptr<Session> session;
  std::unique_ptr<SequenceBatch> batch;
  if (o.n_seq == 1) {
    BL_ASSIGN_OR_RETURN(session, Session::create(model, {.n_ctx = n_ctx, .n_batch = n_batch, .kv_type = o.kv_type}));
  } else {
    BL_ASSIGN_OR_RETURN(batch, SequenceBatch::create(model, {.n_seq = o.n_seq, .n_ctx = n_ctx, .n_batch = n_batch,
                                                             .kv_type = o.kv_type}));
  }
  std::mt19937 rng(static_cast<uint32_t>(o.seed));
  std::uniform_int_distribution<int32_t> random_id(0, c.n_vocab - 1);
  std::vector<TokenId> prompt(static_cast<size_t>(std::max(o.n_prompt, 1)));
  std::vector<TokenId> step_ids(static_cast<size_t>(o.n_seq));

  ModelBenchResult result;
  result.n_ctx = n_ctx;
  const double kv_elem_bytes = o.kv_type == DType::F16 ? 2 : 4;
  const double mean_decode_ctx = std::max(o.n_prompt, 1) + o.n_gen / 2.0;
  const double kv_bytes = 2.0 * c.n_layer * c.kv_dim() * kv_elem_bytes * mean_decode_ctx;
  // A step reads the weights once for all sequences and each sequence's cache.
  result.decode_bytes_per_token = (static_cast<double>(model.decode_weight_bytes()) + o.n_seq * kv_bytes) / o.n_seq;
  using clock = std::chrono::steady_clock;
  // Energy of the timed parts: a phase's joules are the sum of its readings' differences; one
  // failed read drops the energy figures (energy_ok), not the benchmark.
  bool energy_ok = static_cast<bool>(o.read_joules);
  auto joules = [&]() -> double {
    if (!energy_ok) return 0;
    const std::optional<double> j = o.read_joules();
    if (!j) energy_ok = false;
    return j.value_or(0);
  };
  // One untimed warm-up repetition: first-touch of buffers, page faults, CUDA module loads.
  for (int rep = -1; rep < o.repetitions; ++rep) {
    if (rep >= 0 && o.probe_read_gbps) result.read_gbps.push_back(o.probe_read_gbps());
    // Prefill: every sequence's prompt of fresh random ids (drawn outside the timed part).
    double prefill_s = 0, prefill_j = 0;
    for (int q = 0; q < o.n_seq; ++q) {
      for (TokenId& id : prompt) id = random_id(rng);
      if (session) session->reset();
      if (batch && q == 0) batch->reset();
      const double j0 = joules();
      const auto t0 = clock::now();
      BL_RETURN_IF_ERROR(session ? session->feed(prompt) : batch->feed(q, prompt));
      prefill_s += std::chrono::duration<double>(clock::now() - t0).count();
      prefill_j += joules() - j0;
    }
    const double j1 = joules();
    auto t1 = clock::now();
    // Each step as greedy generation runs it: the tokens are picked where the logits are and
    // read back. One sequence: Session::decode_greedy from a random id, each pick fed back, the
    // next step queued before the host reads a pick, as `bitlight run` decodes. Several:
    // SequenceBatch::step_greedy, the fed ids random.
    if (session) {
      int picks = 0;
      if (o.n_gen > 0)
        BL_RETURN_IF_ERROR(session->decode_greedy(random_id(rng), o.n_gen, [&](TokenId) { return ++picks < o.n_gen; }));
      if (picks != o.n_gen)
        return internal_error("bench: decode gave " + std::to_string(picks) + " of " + std::to_string(o.n_gen) + " tokens");
    } else {
      for (int i = 0; i < o.n_gen; ++i) {
        for (TokenId& id : step_ids) id = random_id(rng);
        BL_RETURN_IF_ERROR(batch->step_greedy(step_ids).status());
      }
    }
    const double decode_s = std::chrono::duration<double>(clock::now() - t1).count();
    const double decode_j = joules() - j1;
    if (rep < 0) continue;
    const double prompt_tokens = static_cast<double>(o.n_seq) * o.n_prompt, gen_tokens = static_cast<double>(o.n_seq) * o.n_gen;
    if (o.n_prompt > 0) {
      result.prefill.tokens_per_second.push_back(prompt_tokens / prefill_s);
      result.prefill_joules_per_token.push_back(prefill_j / prompt_tokens);
    }
    if (o.n_gen > 0) {
      result.decode.tokens_per_second.push_back(gen_tokens / decode_s);
      result.decode_joules_per_token.push_back(decode_j / gen_tokens);
    }
  }
  if (!energy_ok) result.prefill_joules_per_token.clear(), result.decode_joules_per_token.clear();
  if (o.probe_read_gbps) {
    result.read_gbps.push_back(o.probe_read_gbps());
    for (size_t i = 0; i < result.decode.tokens_per_second.size(); ++i) {
      const double limit = std::max(result.read_gbps[i], result.read_gbps[i + 1]);
      const double gbps = result.decode.tokens_per_second[i] * result.decode_bytes_per_token / 1e9;
      result.decode_fraction.push_back(limit > 0 ? gbps / limit : 0);
    }
  }
  const double layer_params = static_cast<double>(c.n_layer) *
                              (2.0 * c.n_embd * c.q_dim() + 2.0 * c.n_embd * c.kv_dim() + 3.0 * c.n_embd * c.n_ff);
  // The output matrix runs once per forward pass (the logits of its last token), not per
  // prompt token: counting it per token would credit 2 n_embd n_vocab FLOPs never done (7 % of
  // the 8B shape's per-token count).
  const double passes = std::ceil(std::max(o.n_prompt, 1) / static_cast<double>(std::max(1, std::min(o.n_batch, n_ctx))));
  const double output_flops_per_token = 2.0 * c.n_embd * c.n_vocab * passes / std::max(o.n_prompt, 1);
  const double attention_flops = 4.0 * c.n_layer * c.q_dim() * (o.n_prompt / 2.0);  // q·k and p·v
  result.prefill_flops_per_token = 2 * layer_params + output_flops_per_token + attention_flops;
  return result;
}

}  // namespace bl
