// bitlight serve: the OpenAI-compatible HTTP API (server/http_server.h) on one model.
#include <filesystem>
#include <memory>

#include "app/commands.h"
#include "app/loaded_model.h"
#include "app/sampling_options.h"
#include "tokenizer/chat_template.h"
#if BITLIGHT_HAVE_SERVER
#include "runtime/sequence_batch.h"
#include "server/batch_engine.h"
#include "server/http_server.h"
#include "server/session_engine.h"
#endif

namespace bl::app {
namespace {

#if BITLIGHT_HAVE_SERVER
using server::ServerOptions;
#else
// What the options need when the server is not built (see serve() below).
struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;
  size_t max_body_bytes = size_t{1} << 20;
  int max_waiting = 16;
  int parallel = 1;
};
#endif

struct ServeOptions {
  ModelOptions model;
  SamplingOptions sampling;
  ServerOptions server;
  std::string alias;
};

#if !BITLIGHT_HAVE_SERVER
Status serve(ServeOptions&) {
  return unsupported(
      "this bitlight was built without the HTTP server: cpp-httplib (Debian: libcpp-httplib-dev) was not "
      "found when it was configured");
}
#else
Status serve(ServeOptions& o) {
  if (o.server.port < 0 || o.server.port > 65535) return invalid_argument("--port must be in [0, 65535]");
  if (o.server.max_waiting < 0) return invalid_argument("--max-waiting must be >= 0");
  if (o.server.max_body_bytes < 1024) return invalid_argument("--max-body must be at least 1024 bytes");
  if (o.server.parallel < 1) return invalid_argument("--parallel must be >= 1");
  o.server.sampling_defaults = o.sampling.params;
  if (o.sampling.seed >= 0) o.server.default_seed = static_cast<uint64_t>(o.sampling.seed);
  BL_RETURN_IF_ERROR(validate(o.server.sampling_defaults));
  DType kv_type;
  BL_ASSIGN_OR_RETURN(kv_type, parse_kv_type(o.model.kv_type));
  server::block_stop_signals();  // before the backend starts its threads
  LoadedModel m;
  BL_ASSIGN_OR_RETURN(m, load_model(o.model, /*with_tokenizer=*/true));
  // Without a template in the file the chat endpoint refuses (the completions one still works).
  std::optional<ChatTemplate> chat_template;
  if (Expected<ChatTemplate> t = ChatTemplate::from_model_file(*m.file); t.ok()) chat_template = *t;
  // One sequence: a Session, its decode steps queued ahead of the host. Several: a SequenceBatch
  // whose decode steps carry every request that is generating (continuous batching).
  std::unique_ptr<server::Engine> engine;
  if (o.server.parallel == 1) {
    std::unique_ptr<Session> session;
    BL_ASSIGN_OR_RETURN(
        session,
        Session::create(*m.model, {.n_ctx = o.model.n_ctx, .n_batch = o.model.n_batch, .kv_type = kv_type}));
    engine = std::make_unique<server::SessionEngine>(*m.model, *m.tokenizer, std::move(chat_template),
                                                     std::move(session), o.server.max_waiting);
  } else {
    std::unique_ptr<SequenceBatch> batch;
    BL_ASSIGN_OR_RETURN(batch, SequenceBatch::create(*m.model, {.n_seq = o.server.parallel,
                                                                .n_ctx = o.model.n_ctx,
                                                                .n_batch = o.model.n_batch,
                                                                .kv_type = kv_type}));
    engine = std::make_unique<server::BatchEngine>(*m.model, *m.tokenizer, std::move(chat_template),
                                                   std::move(batch), o.model.n_batch, o.server.max_waiting);
  }
  const std::string path = o.model.path.empty() ? kDefaultModelPath : o.model.path;
  o.server.model_name = o.alias.empty() ? std::filesystem::path(path).stem().string() : o.alias;
  return server::serve_http(*engine, o.server);
}
#endif

}  // namespace

void add_serve_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<ServeOptions>();
  CLI::App* cmd = app.add_subcommand("serve", "serve the model over an OpenAI-compatible HTTP API");
  add_model_options(cmd, o->model);
  add_sampling_options(cmd, o->sampling);
  cmd->add_option("--host", o->server.host, "address to listen on")->capture_default_str();
  cmd->add_option("--port", o->server.port, "port to listen on (0 = any free port)")->capture_default_str();
  cmd->add_option("--alias", o->alias, "model name in responses (default: the file name without .gguf)");
  cmd->add_option("--max-body", o->server.max_body_bytes, "largest request body in bytes")
      ->capture_default_str();
  cmd->add_option("--parallel", o->server.parallel,
                  "requests generated at once (continuous batching; -c is per request)")
      ->capture_default_str();
  cmd->add_option("--max-waiting", o->server.max_waiting, "requests that may wait for their turn (then 503)")
      ->capture_default_str();
  cmd->callback([o, &exit_code] {
    Status s = serve(*o);
    exit_code = s.ok() ? 0 : report_error(s);
  });
}

}  // namespace bl::app
