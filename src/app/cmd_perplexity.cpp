// bitlight perplexity -m FILE -f TEXT [-c CTX] [--kl-base FILE]: quality of a (quantized) model
// on a text, optionally against a reference model (runtime/perplexity.h has the procedure).
#include <cmath>
#include <cstdio>
#include <memory>

#include "app/commands.h"
#include "app/file_io.h"
#include "app/loaded_model.h"
#include "runtime/perplexity.h"

namespace bl::app {
namespace {

struct PerplexityCliOptions {
  ModelOptions model;
  std::string text_file, kl_base;
  int max_chunks = 0;
};

Status perplexity(const PerplexityCliOptions& o) {
  std::string text;
  BL_ASSIGN_OR_RETURN(text, read_text_file(o.text_file));
  LoadedModel m;
  BL_ASSIGN_OR_RETURN(m, load_model(o.model, /*with_tokenizer=*/true));
  LoadedModel base;
  if (!o.kl_base.empty()) {
    ModelOptions bo = o.model;
    bo.path = o.kl_base;
    BL_ASSIGN_OR_RETURN(base, load_model(bo, /*with_tokenizer=*/false));
  }
  const std::vector<TokenId> tokens = m.tokenizer->encode(text, {.add_bos = false, .parse_special = false, .add_eos = false});
  PerplexityOptions po{.n_ctx = o.model.n_ctx, .n_batch = o.model.n_batch, .max_chunks = o.max_chunks,
                       .bos = m.tokenizer->adds_bos() ? m.tokenizer->bos() : -1};
  std::fprintf(stderr, "%s: %zu bytes, %zu tokens; context %d, %zu chunks\n", o.text_file.c_str(), text.size(),
               tokens.size(), po.n_ctx, tokens.size() / static_cast<size_t>(std::max(po.n_ctx, 1)));
  PerplexityResult r;
  BL_ASSIGN_OR_RETURN(r, compute_perplexity(*m.model, base.model.get(), tokens, po, [](int c, int n, double ppl) {
                        std::fprintf(stderr, "[%d/%d] %.4f\n", c, n, ppl);
                      }));
  std::printf("model      %s (%s)\n", m.file->path().c_str(), m.model->weight_format().c_str());
  double elements = 0;
  for (const TensorInfo& t : m.file->tensors()) {
    double n = 1;
    for (int64_t d : t.ne) n *= static_cast<double>(d);
    elements += n;
  }
  std::printf("bits/w     %.3f (all tensors)\n", 8.0 * static_cast<double>(m.file->total_tensor_bytes()) / elements);
  std::printf("perplexity %.4f +/- %.4f (%lld positions, %d chunks of %d)\n", r.ppl(), r.ppl() * r.nll_stderr,
              static_cast<long long>(r.scored), r.chunks, po.n_ctx);
  if (base.model) {
    std::printf("reference  %s: perplexity %.4f\n", base.file->path().c_str(), std::exp(r.ref_nll));
    std::printf("KL         %.6f nats (mean KL(p_ref || p_model))\n", r.kl);
    std::printf("top-1      %.2f %% agreement\n", 100.0 * r.top1_agree);
  }
  return Status::Ok();
}

}  // namespace

void add_perplexity_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<PerplexityCliOptions>();
  o->model.n_ctx = 512;
  o->model.kv_type = "f32";
  CLI::App* cmd = app.add_subcommand("perplexity", "perplexity of a model on a text (and KL divergence to a reference)");
  add_model_options(cmd, o->model);
  cmd->add_option("-f,--file", o->text_file, "text file (UTF-8)")->required();
  cmd->add_option("--kl-base", o->kl_base, "reference model: report KL divergence and top-1 agreement against it");
  cmd->add_option("--chunks", o->max_chunks, "evaluate at most this many chunks (0 = all)")->capture_default_str();
  cmd->callback([o, &exit_code] {
    Status s = perplexity(*o);
    exit_code = s.ok() ? 0 : report_error(s);
  });
}

}  // namespace bl::app
