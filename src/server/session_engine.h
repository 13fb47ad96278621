// Runs completion requests on one model and one Session, one request at a time in arrival
// order (TurnQueue): `bitlight serve --parallel 1`, where each token costs one decode step of
// one sequence queued ahead of the host (Session::decode_greedy / decode_sampled). Between
// requests the Session keeps its cache: the next prompt's common prefix with the tokens already
// there is not computed again (a chat that grows by a turn feeds only the new turn), unless the
// request says "cache_prompt": false.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "model/llama_model.h"
#include "runtime/session.h"
#include "server/engine.h"
#include "server/turn_queue.h"

namespace bl::server {

class SessionEngine final : public Engine {
 public:
  // chat_template: nullopt when the model file has none (the chat endpoint then refuses).
  SessionEngine(const LlamaModel& model, const Tokenizer& tokenizer,
                std::optional<ChatTemplate> chat_template, std::unique_ptr<Session> session, int max_waiting);

  Expected<std::vector<TokenId>> prompt_tokens(const CompletionRequest& request) const override;
  std::optional<Admission> admit() override;
  Expected<CompletionOutcome> complete(const Admission& admission, const CompletionRequest& request,
                                       const std::vector<TokenId>& prompt,
                                       const std::function<bool(const std::string&)>& on_text) override;
  int n_ctx() const override { return session_->n_ctx(); }
  int requests_in_line() const override { return turns_.in_line(); }

 private:
  const LlamaModel& model_;
  const Tokenizer& tokenizer_;
  std::optional<ChatTemplate> chat_template_;
  std::unique_ptr<Session> session_;  // used only while holding a turn
  std::vector<TokenId> cached_;       // the tokens whose keys and values the session holds
  TurnQueue turns_;
};

}  // namespace bl::server
