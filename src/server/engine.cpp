#include "server/engine.h"

namespace bl::server {

Expected<std::vector<TokenId>> tokenize_prompt(const CompletionRequest& request, const Tokenizer& tokenizer,
                                               const std::optional<ChatTemplate>& chat_template, int n_vocab,
                                               int n_ctx) {
  const EncodeOptions encode{.add_bos = tokenizer.adds_bos(), .parse_special = true};
  std::vector<TokenId> ids;
  if (request.endpoint == Endpoint::chat_completions) {
    if (!chat_template) {
      return invalid_argument(
          "this model file has no chat template (tokenizer.chat_template): use /v1/completions");
    }
    ids = tokenizer.encode(chat_template->apply(request.messages, /*add_generation_prompt=*/true), encode);
  } else if (!request.prompt_ids.empty()) {
    for (TokenId id : request.prompt_ids) {
      if (id >= n_vocab) {
        return invalid_argument("prompt: token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                std::to_string(n_vocab - 1) + ")");
      }
    }
    ids = request.prompt_ids;
  } else {
    ids = tokenizer.encode(request.prompt, encode);
  }
  if (ids.empty()) return invalid_argument("the prompt is empty");
  const int64_t n_prompt = static_cast<int64_t>(ids.size());
  if (n_prompt >= n_ctx) {
    return invalid_argument("the prompt is " + std::to_string(n_prompt) + " tokens; the context holds " +
                            std::to_string(n_ctx) + " (bitlight serve -c)");
  }
  if (request.max_tokens && n_prompt + *request.max_tokens > n_ctx) {
    return invalid_argument("the prompt's " + std::to_string(n_prompt) + " tokens and max_tokens " +
                            std::to_string(*request.max_tokens) + " exceed the context of " +
                            std::to_string(n_ctx) + " tokens");
  }
  return ids;
}

}  // namespace bl::server
