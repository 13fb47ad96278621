#include "runtime/generator.h"

#include <chrono>

#include "tokenizer/tokenizer.h"

namespace bl {
namespace {
double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

Expected<GenerateResult> generate(Session& session, const Tokenizer& tokenizer, std::span<const TokenId> prompt,
                                  const GenerateOptions& options,
                                  const std::function<bool(TokenId, const std::string& text)>& on_token) {
  BL_RETURN_IF_ERROR(validate(options.sampler));
  if (prompt.empty()) return invalid_argument("the prompt is empty");
  GenerateResult result;
  result.prompt_tokens = static_cast<int>(prompt.size());
  // Reserved up front, so the loop does not allocate per token.
  const size_t most_new = options.n_predict >= 0 ? static_cast<size_t>(options.n_predict)
                                                 : static_cast<size_t>(session.n_ctx());
  std::vector<TokenId> history;
  history.reserve(options.context.size() + prompt.size() + most_new);
  history.assign(options.context.begin(), options.context.end());
  history.insert(history.end(), prompt.begin(), prompt.end());
  result.tokens.reserve(most_new);

  auto t0 = std::chrono::steady_clock::now();
  BL_RETURN_IF_ERROR(session.feed(prompt));
  result.prompt_seconds = seconds_since(t0);

  Sampler sampler(options.sampler);
  StreamDecoder decoder(tokenizer);
  auto t1 = std::chrono::steady_clock::now();
  result.stop_reason = "length";
  // Without a repetition penalty the backend picks the next token where the logits are: greedy
  // is an argmax (Session::decode_greedy), and a draw at temperature > 0 takes the sampler's
  // next uniform number (Session::decode_sampled), so a seed gives the text that drawing here
  // gives; both queue each step before the host reads the token before it. On CUDA a token then
  // costs a 4-byte copy, not the logits.
  const SamplerParams& sp = options.sampler;
  const bool no_penalty = !applies_repeat_penalty(sp) && !session.logits_all();
  const bool backend_greedy = no_penalty && sp.temperature == 0.0f;
  const bool backend_draws = no_penalty && sp.temperature > 0.0f &&
                             session.model().backend().can_sample_top_k(sp.top_k, session.model().config().n_vocab);
  int emitted = 0;
  // Takes the next token: false when the generation ends with it (stop_reason set; "length"
  // stays where n_predict tokens were given).
  auto accept = [&](TokenId id) {
    if (tokenizer.is_end_of_generation(id)) {
      result.stop_reason = "eog";
      return false;
    }
    result.tokens.push_back(id);
    history.push_back(id);
    if (on_token && !on_token(id, decoder.push(id))) {
      result.stop_reason = "callback";
      return false;
    }
    ++emitted;
    if (options.n_predict >= 0 && emitted == options.n_predict) return false;
    if (session.n_past() >= session.n_ctx()) {
      result.stop_reason = "context";
      return false;
    }
    return true;
  };
  TokenId id = options.n_predict == 0 ? -1 : sampler.sample(session.last_logits(), history);
  if (id >= 0 && accept(id)) {
    // The next step queued while the host takes a token (Session::decode_greedy / decode_sampled).
    const int most = options.n_predict < 0 ? -1 : options.n_predict - emitted;
    if (backend_greedy) {
      BL_RETURN_IF_ERROR(session.decode_greedy(id, most, accept));
    } else if (backend_draws) {
      BL_RETURN_IF_ERROR(session.decode_sampled(id, most, [&] { return top_k_draw(sp, sampler.next_uniform()); }, accept));
    } else {
      for (;;) {
        const TokenId one[1] = {id};
        BL_RETURN_IF_ERROR(session.feed(one));
        const TokenId next = sampler.sample(session.last_logits(), history);
        if (!accept(next)) break;
        id = next;
      }
    }
  }
  if (on_token) {
    std::string tail = decoder.flush();
    if (!tail.empty()) on_token(-1, tail);
  }
  result.decode_seconds = seconds_since(t1);
  return result;
}

}  // namespace bl
