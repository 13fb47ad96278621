// bitlight run: generate text from a prompt.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "app/commands.h"
#include "app/file_io.h"
#include "app/loaded_model.h"
#include "app/sampling_options.h"
#include "runtime/generator.h"

namespace bl::app {
namespace {

struct RunOptions {
  ModelOptions model;
  SamplingOptions sampling;
  std::string prompt;
  std::string prompt_file;
  std::string ids;
  int n_predict = 128;
  std::string json_out;
  bool no_display_prompt = false;
};

Status run(RunOptions& o) {
  int sources = !o.prompt.empty() + !o.prompt_file.empty() + !o.ids.empty();
  if (sources != 1) return invalid_argument("give exactly one of -p PROMPT, -f FILE or --ids LIST");
  if (o.n_predict < -1) return invalid_argument("-n must be >= -1 (-1 = until end of generation)");
  SamplerParams sampler = resolve_sampling(o.sampling);
  BL_RETURN_IF_ERROR(validate(sampler));
  DType kv_type;
  BL_ASSIGN_OR_RETURN(kv_type, parse_kv_type(o.model.kv_type));
  if (!o.prompt_file.empty()) {
    BL_ASSIGN_OR_RETURN(o.prompt, read_text_file(o.prompt_file));
  }

  LoadedModel m;
  BL_ASSIGN_OR_RETURN(m, load_model(o.model, /*with_tokenizer=*/true));
  std::vector<TokenId> prompt_ids;
  if (!o.ids.empty()) {
    BL_ASSIGN_OR_RETURN(prompt_ids, parse_id_list(o.ids));
    // Checked before the prompt is echoed, so a bad list prints nothing but the error.
    const int n_vocab = m.model->config().n_vocab;
    for (TokenId id : prompt_ids)
      if (id >= n_vocab)
        return invalid_argument("--ids: token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                std::to_string(n_vocab - 1) + ")");
  } else {
    prompt_ids = m.tokenizer->encode(o.prompt, {.add_bos = m.tokenizer->adds_bos(), .parse_special = true});
  }
  std::unique_ptr<Session> session;
  BL_ASSIGN_OR_RETURN(session, Session::create(*m.model, {.n_ctx = o.model.n_ctx, .n_batch = o.model.n_batch, .kv_type = kv_type}));

  if (!o.no_display_prompt) {
    std::fputs(o.ids.empty() ? o.prompt.c_str() : m.tokenizer->decode(prompt_ids).c_str(), stdout);
    std::fflush(stdout);
  }
  std::string text;
  GenerateResult result;
  BL_ASSIGN_OR_RETURN(result, generate(*session, *m.tokenizer, prompt_ids, {.n_predict = o.n_predict, .sampler = sampler},
                                       [&](TokenId, const std::string& piece) {
                                         text += piece;
                                         std::fputs(piece.c_str(), stdout);
                                         std::fflush(stdout);
                                         return true;
                                       }));
  std::fputc('\n', stdout);
  const double decoded = result.tokens.empty() ? 0 : static_cast<double>(result.tokens.size());
  std::fprintf(stderr, "\n%s | seed %lld | prompt %d tokens, %.1f tok/s | generated %zu tokens, %.1f tok/s | stop: %s\n",
               m.backend->name().c_str(), static_cast<long long>(o.sampling.seed), result.prompt_tokens,
               result.prompt_tokens / std::max(result.prompt_seconds, 1e-9), result.tokens.size(),
               decoded / std::max(result.decode_seconds, 1e-9), result.stop_reason.c_str());

  if (!o.json_out.empty()) {
    nlohmann::json j = {{"prompt_ids", prompt_ids}, {"generated_ids", result.tokens}, {"text", text},
                        {"stop_reason", result.stop_reason}, {"seed", o.sampling.seed}};
    BL_RETURN_IF_ERROR(write_file_atomically(o.json_out, j.dump(2) + "\n"));
  }
  return Status::Ok();
}

}  // namespace

void add_run_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "generate text from a prompt");
  add_model_options(cmd, o->model);
  add_sampling_options(cmd, o->sampling);
  cmd->add_option("-p,--prompt", o->prompt, "prompt text (special tokens like <|im_start|> are parsed)");
  cmd->add_option("-f,--file", o->prompt_file, "read the prompt from a file");
  cmd->add_option("--ids", o->ids, "prompt as comma-separated token ids instead of text");
  cmd->add_option("-n,--n-predict", o->n_predict, "tokens to generate (-1 = until end of generation)")->capture_default_str();
  cmd->add_option("--json-out", o->json_out, "write prompt ids, generated ids and text as JSON");
  cmd->add_flag("--no-display-prompt", o->no_display_prompt, "do not echo the prompt");
  cmd->callback([o, &exit_code] {
    Status s = run(*o);
    exit_code = s.ok() ? 0 : report_error(s);
  });
}

}  // namespace bl::app
