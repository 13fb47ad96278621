// bitlight eval: logits of every position of a token sequence, for comparing with other
// implementations (tests/reference/). Writes float32 [n_ids, n_vocab], row-major.
#include <cstdio>
#include <memory>

#include "app/file_io.h"
#include "app/commands.h"
#include "app/loaded_model.h"
#include "runtime/session.h"

namespace bl::app {
namespace {

struct EvalOptions {
  ModelOptions model;
  std::string ids;
  std::string logits_out;
};

Status eval(const EvalOptions& o) {
  std::vector<int32_t> ids;
  BL_ASSIGN_OR_RETURN(ids, parse_id_list(o.ids));
  DType kv_type;
  BL_ASSIGN_OR_RETURN(kv_type, parse_kv_type(o.model.kv_type));
  LoadedModel m;
  BL_ASSIGN_OR_RETURN(m, load_model(o.model, /*with_tokenizer=*/false));
  std::unique_ptr<Session> session;
  const int n = static_cast<int>(ids.size());
  BL_ASSIGN_OR_RETURN(session, Session::create(*m.model, {.n_ctx = std::max(n, 1), .n_batch = o.model.n_batch,
                                                          .logits_all = true, .kv_type = kv_type}));
  BL_RETURN_IF_ERROR(session->feed(ids));
  const std::vector<float>& logits = session->all_logits();
  return write_file_atomically(o.logits_out, {reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float)});
}

}  // namespace

void add_eval_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<EvalOptions>();
  o->model.kv_type = "f32";
  CLI::App* cmd = app.add_subcommand("eval", "write the logits of every position of a token sequence");
  add_model_options(cmd, o->model);
  cmd->add_option("--ids", o->ids, "comma-separated token ids")->required();
  cmd->add_option("--logits-out", o->logits_out, "output file: float32 [n_ids, n_vocab]")->required();
  cmd->callback([o, &exit_code] {
    Status s = eval(*o);
    exit_code = s.ok() ? 0 : report_error(s);
  });
}

}  // namespace bl::app
