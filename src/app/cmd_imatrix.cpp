// bitlight imatrix -m FILE -f TEXT -o OUT: collect an importance matrix (runtime/imatrix.h) by
// running the model over calibration text, for `bitlight quantize --imatrix OUT`.
#include <cstdio>
#include <memory>

#include "app/commands.h"
#include "app/file_io.h"
#include "app/loaded_model.h"
#include "runtime/imatrix.h"
#include "runtime/session.h"

namespace bl::app {
namespace {

struct ImatrixCliOptions {
  ModelOptions model;
  std::string text_file, output;
  int max_chunks = 0;
};

Status imatrix(const ImatrixCliOptions& o) {
  std::string text;
  BL_ASSIGN_OR_RETURN(text, read_text_file(o.text_file));

  std::unique_ptr<ModelFile> file;
  BL_ASSIGN_OR_RETURN(file, ModelFile::open(o.model.path.empty() ? kDefaultModelPath : o.model.path));
  const std::string device = o.model.device == "auto" ? "cpu" : o.model.device;
  if (device != "cpu" && device != "ref")
    return unsupported("imatrix records activations on the host: use --device cpu or ref, not " + device);
  std::unique_ptr<Backend> backend;
  BL_ASSIGN_OR_RETURN(backend, make_backend(device, o.model.threads));
  ImportanceMatrix m;
  m.datasets = {o.text_file};
  std::unique_ptr<Backend> recorder = make_imatrix_recorder(*backend, *file, m);
  std::unique_ptr<LlamaModel> model;
  BL_ASSIGN_OR_RETURN(model, LlamaModel::load(*file, *recorder));
  std::unique_ptr<Tokenizer> tokenizer;
  BL_ASSIGN_OR_RETURN(tokenizer, Tokenizer::from_model_file(*file));

  const std::vector<TokenId> tokens = tokenizer->encode(text, {.add_bos = false, .parse_special = false, .add_eos = false});
  const int n_ctx = o.model.n_ctx;
  int chunks = static_cast<int>(tokens.size() / static_cast<size_t>(std::max(n_ctx, 1)));
  if (o.max_chunks > 0) chunks = std::min(chunks, o.max_chunks);
  if (chunks == 0)
    return invalid_argument(o.text_file + " has " + std::to_string(tokens.size()) + " tokens, fewer than one context of " +
                            std::to_string(n_ctx));
  std::unique_ptr<Session> session;
  BL_ASSIGN_OR_RETURN(session, Session::create(*model, {.n_ctx = n_ctx, .n_batch = o.model.n_batch, .logits_all = false,
                                                        .kv_type = DType::F32}));
  const TokenId bos = tokenizer->adds_bos() ? tokenizer->bos() : -1;
  for (int c = 0; c < chunks; ++c) {
    std::vector<TokenId> ids(tokens.begin() + static_cast<ptrdiff_t>(c) * n_ctx,
                             tokens.begin() + static_cast<ptrdiff_t>(c + 1) * n_ctx);
    if (bos >= 0) ids[0] = bos;
    session->reset();
    BL_RETURN_IF_ERROR(session->feed(ids));
    std::fprintf(stderr, "[%d/%d] chunks\n", c + 1, chunks);
  }
  if (m.entries.empty())
    return internal_error("no matmul weight was recognised; the backend may copy weights (use --device cpu or ref)");
  BL_RETURN_IF_ERROR(save_imatrix(m, o.output));
  std::fprintf(stderr, "wrote %s: %zu matrices, %d chunks of %d tokens\n", o.output.c_str(), m.entries.size(), chunks,
               n_ctx);
  return Status::Ok();
}

}  // namespace

void add_imatrix_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ImatrixCliOptions>();
  o->model.n_ctx = 512;
  CLI::App* cmd = app.add_subcommand("imatrix", "collect an importance matrix over calibration text (for quantize --imatrix)");
  add_model_options(cmd, o->model);
  cmd->add_option("-f,--file", o->text_file, "calibration text file")->required();
  cmd->add_option("-o,--output", o->output, "output imatrix .gguf")->required();
  cmd->add_option("--chunks", o->max_chunks, "use at most this many chunks of -c tokens (0 = all)")->capture_default_str();
  cmd->callback([o, &exit_code] {
    Status s = imatrix(*o);
    exit_code = s.ok() ? 0 : report_error(s);
  });
}

}  // namespace bl::app
