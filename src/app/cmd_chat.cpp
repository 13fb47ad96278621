// bitlight chat: an interactive conversation using the model's chat template. Reads one user
// message per line from stdin (a terminal or a pipe) until EOF or "/exit".
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>

#include "app/commands.h"
#include "app/loaded_model.h"
#include "app/sampling_options.h"
#include "runtime/generator.h"
#include "runtime/token_prefix.h"
#include "tokenizer/chat_template.h"

namespace bl::app {
namespace {

struct ChatOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string system_prompt;
  int n_predict = 512;
};

Status chat(ChatOptions& o) {
  SamplerParams sampler = resolve_sampling(o.sampling);
  BL_RETURN_IF_ERROR(validate(sampler));
  DType kv_type;
  BL_ASSIGN_OR_RETURN(kv_type, parse_kv_type(o.model.kv_type));
  LoadedModel m;
  BL_ASSIGN_OR_RETURN(m, load_model(o.model, /*with_tokenizer=*/true));
  ChatTemplate chat_template;
  BL_ASSIGN_OR_RETURN(chat_template, ChatTemplate::from_model_file(*m.file));
  std::unique_ptr<Session> session;
  BL_ASSIGN_OR_RETURN(session, Session::create(*m.model, {.n_ctx = o.model.n_ctx, .n_batch = o.model.n_batch, .kv_type = kv_type}));

  const bool interactive = isatty(STDIN_FILENO);
  std::vector<ChatMessage> messages;
  if (!o.system_prompt.empty()) messages.push_back({"system", o.system_prompt});
  std::vector<TokenId> cached;  // the tokens whose keys and values are in the session's cache
  std::string line;
  for (;;) {
    if (interactive) std::fputs("\n> ", stdout), std::fflush(stdout);
    if (!std::getline(std::cin, line) || line == "/exit") break;
    if (line.empty()) continue;
    messages.push_back({"user", line});
    const std::string prompt_text = chat_template.apply(messages, /*add_generation_prompt=*/true);
    std::vector<TokenId> prompt = m.tokenizer->encode(prompt_text, {.add_bos = m.tokenizer->adds_bos(), .parse_special = true});

    // Re-use the cached prefix of the conversation; feed only what is new.
    const size_t reuse = common_prefix(cached, prompt);
    if (reuse == prompt.size()) return internal_error("chat: the new prompt adds no tokens");
    session->truncate(static_cast<int>(reuse));
    std::span<const TokenId> fresh(prompt.data() + reuse, prompt.size() - reuse);

    std::string reply;
    // The reused prefix is the penalty's context too, as if the whole prompt had been fed.
    const GenerateOptions options{
        .n_predict = o.n_predict, .sampler = sampler, .context = std::span(prompt.data(), reuse)};
    Expected<GenerateResult> r = generate(*session, *m.tokenizer, fresh, options,
                                          [&](TokenId, const std::string& piece) {
                                            reply += piece;
                                            std::fputs(piece.c_str(), stdout);
                                            std::fflush(stdout);
                                            return true;
                                          });
    if (!r.ok()) return r.status();
    std::fputc('\n', stdout);
    // The cache holds the prompt and the generated tokens that were fed back (the last one
    // sampled may not have been): n_past says how many.
    cached = prompt;
    cached.insert(cached.end(), r->tokens.begin(), r->tokens.end());
    cached.resize(static_cast<size_t>(session->n_past()));
    messages.push_back({"assistant", reply});
  }
  return Status::Ok();
}

}  // namespace

void add_chat_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ChatOptions>();
  CLI::App* cmd = app.add_subcommand("chat", "chat with the model (one message per line on stdin)");
  add_model_options(cmd, o->model);
  add_sampling_options(cmd, o->sampling);
  cmd->add_option("--system", o->system_prompt, "system prompt");
  cmd->add_option("-n,--n-predict", o->n_predict, "most tokens per reply")->capture_default_str();
  cmd->callback([o, &exit_code] {
    Status s = chat(*o);
    exit_code = s.ok() ? 0 : report_error(s);
  });
}

}  // namespace bl::app
