#include "server/http_server.h"

#include <httplib.h>
#include <pthread.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <memory>
#include <random>
#include <thread>

#include "server/completion_response.h"
#include "server/metrics.h"

namespace bl::server {
namespace {

using nlohmann::json;

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
}

void send_error(httplib::Response& res, const Status& status) {
  send_json(res, http_status_of(status), error_body(status));
}

// The routes and what they share; one instance lives as long as the server.
class Api {
 public:
  Api(Engine& engine, const ServerOptions& options)
      : engine_(engine), options_(options), started_(std::time(nullptr)) {}

  void completions(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  void models(httplib::Response& res) const;
  void metrics(httplib::Response& res) const {
    res.set_content(prometheus_text(engine_.counters(), engine_.requests_in_line(), http_),
                    "text/plain; version=0.0.4");
  }
  HttpCounters& http_counters() { return http_; }

 private:
  ResponseHeader header_for(Endpoint endpoint) {
    const char* prefix = endpoint == Endpoint::chat_completions ? "chatcmpl-" : "cmpl-";
    char id[64];
    std::snprintf(id, sizeof id, "%s%lx-%lx", prefix, static_cast<unsigned long>(started_),
                  static_cast<unsigned long>(++n_responses_));
    return {endpoint, id, static_cast<int64_t>(std::time(nullptr)), options_.model_name};
  }
  void stream(httplib::Response& res, CompletionRequest request, std::vector<TokenId> prompt, Admission turn);

  Engine& engine_;
  const ServerOptions& options_;
  const std::time_t started_;
  std::atomic<uint64_t> n_responses_{0};
  HttpCounters http_;
};

void Api::completions(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  Expected<CompletionRequest> request =
      parse_completion_request(req.body, endpoint, options_.sampling_defaults);
  if (!request.ok()) return send_error(res, request.status());
  // A request without a seed takes `serve -s`'s, else one of its own: the engines draw with
  // request.sampler.seed as it is.
  if (!request->seeded) {
    request->sampler.seed = options_.default_seed ? *options_.default_seed : std::random_device{}();
  }
  Expected<std::vector<TokenId>> prompt = engine_.prompt_tokens(*request);
  if (!prompt.ok()) return send_error(res, prompt.status());
  // Waited for before any byte of the response is sent, so a busy server can still say 503.
  std::optional<Admission> turn = engine_.admit();
  if (!turn) {
    return send_json(res, 503,
                     error_body(503, "the server is busy: " + std::to_string(options_.max_waiting) +
                                         " waiting requests are its limit (bitlight serve --max-waiting)"));
  }
  if (request->stream) return stream(res, std::move(*request), std::move(*prompt), std::move(*turn));

  const ResponseHeader header = header_for(endpoint);
  std::string text;
  Expected<CompletionOutcome> outcome =
      engine_.complete(*turn, *request, *prompt, [&](const std::string& piece) {
        text += piece;
        return true;
      });
  if (!outcome.ok()) return send_error(res, outcome.status());
  send_json(res, 200,
            completion_body(
                header, text, outcome->finish_reason,
                {.prompt_tokens = outcome->prompt_tokens, .completion_tokens = outcome->completion_tokens}));
}

// Server-sent events: the chat API's role chunk, a chunk per piece of text, the chunk with the
// finish reason, the usage when asked for, then [DONE]. A generation that fails after the
// headers went out sends an error object as its last event, with no [DONE].
void Api::stream(httplib::Response& res, CompletionRequest request, std::vector<TokenId> prompt,
                 Admission turn) {
  struct Stream {
    CompletionRequest request;
    std::vector<TokenId> prompt;
    std::optional<Admission> turn;  // released as soon as the generation ends
    ResponseHeader header;
  };
  // The provider runs after this handler returns, on the same connection thread; it is copied
  // into a std::function, so what it owns is shared.
  ResponseHeader header = header_for(request.endpoint);
  auto s = std::make_shared<Stream>(
      Stream{std::move(request), std::move(prompt), std::move(turn), std::move(header)});
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider("text/event-stream", [this, s](size_t, httplib::DataSink& sink) {
    bool open = true;
    auto send = [&](const std::string& event) {
      open = open && sink.is_writable() && sink.write(event.data(), event.size());
      return open;
    };
    if (s->header.endpoint == Endpoint::chat_completions) send(server_sent_event(role_chunk(s->header)));
    Expected<CompletionOutcome> outcome =
        engine_.complete(*s->turn, s->request, s->prompt, [&](const std::string& text) {
          return send(server_sent_event(stream_chunk(s->header, text, nullptr)));
        });
    s->turn.reset();
    if (!outcome.ok()) {
      send(server_sent_event(error_body(outcome.status())));
    } else {
      send(server_sent_event(stream_chunk(s->header, "", outcome->finish_reason)));
      if (s->request.stream_include_usage) {
        send(server_sent_event(usage_chunk(s->header, {.prompt_tokens = outcome->prompt_tokens,
                                                       .completion_tokens = outcome->completion_tokens})));
      }
      send(kStreamDone);
    }
    if (open) sink.done();
    return open;
  });
}

void Api::models(httplib::Response& res) const {
  json model = {{"id", options_.model_name},
                {"object", "model"},
                {"created", static_cast<int64_t>(started_)},
                {"owned_by", "bitlight"},
                {"meta", {{"n_ctx", engine_.n_ctx()}}}};
  send_json(res, 200, {{"object", "list"}, {"data", json::array({model})}});
}

// A status without a body (no route, a body over the limit) gets a JSON error object too.
void fill_error_body(const httplib::Request& req, httplib::Response& res, size_t max_body_bytes) {
  if (!res.body.empty()) return;
  std::string message;
  switch (res.status) {
    case 404:
      message = "no such endpoint: " + req.method + " " + req.path;
      break;
    case 413:
      message = "the request body is larger than " + std::to_string(max_body_bytes) +
                " bytes (bitlight serve --max-body)";
      break;
    case 400:
      message = "the request could not be read as HTTP";
      break;
    default:
      message = "HTTP status " + std::to_string(res.status);
  }
  send_json(res, res.status, error_body(res.status, message));
}

sigset_t stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  return signals;
}

// SIGINT / SIGTERM stop the server: blocked in every thread (block_stop_signals) and taken by
// one that waits for them.
class StopOnSignal {
 public:
  explicit StopOnSignal(httplib::Server& server) : signals_(stop_signals()) {
    waiter_ = std::thread([this, &server] {
      int sig = 0;
      sigwait(&signals_, &sig);
      if (!leaving_) std::fprintf(stderr, "bitlight serve: signal %d, stopping\n", sig);
      server.stop();
    });
  }
  ~StopOnSignal() {
    leaving_ = true;
    pthread_kill(waiter_.native_handle(), SIGTERM);  // wakes the waiter when no signal came
    waiter_.join();
  }

 private:
  sigset_t signals_;
  std::atomic<bool> leaving_{false};
  std::thread waiter_;
};

}  // namespace

void block_stop_signals() {
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

Status serve_http(Engine& engine, const ServerOptions& options) {
  // A client that disconnects mid-response must not end the process (send() on a closed socket).
  std::signal(SIGPIPE, SIG_IGN);
  Api api(engine, options);
  httplib::Server server;
  // One thread per request in line (generating or waiting: each blocks its own) plus a few for
  // /health, /metrics and refusals.
  const size_t n_threads = static_cast<size_t>(options.parallel + options.max_waiting) + 4;
  server.new_task_queue = [n_threads] { return new httplib::ThreadPool(n_threads); };
  server.set_payload_max_length(options.max_body_bytes);
  server.Post("/v1/completions", [&](const httplib::Request& req, httplib::Response& res) {
    api.completions(req, res, Endpoint::completions);
  });
  server.Post("/v1/chat/completions", [&](const httplib::Request& req, httplib::Response& res) {
    api.completions(req, res, Endpoint::chat_completions);
  });
  server.Get("/v1/models", [&](const httplib::Request&, httplib::Response& res) { api.models(res); });
  server.Get("/health", [](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, {{"status", "ok"}});
  });
  server.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) { api.metrics(res); });
  server.set_error_handler([&](const httplib::Request& req, httplib::Response& res) {
    fill_error_body(req, res, options.max_body_bytes);
  });
  server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr e) {
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      what = ex.what();
    } catch (...) {
    }
    send_json(res, 500, error_body(500, "internal error: " + what));
  });
  server.set_logger([&](const httplib::Request& req, const httplib::Response& res) {
    api.http_counters().count(res.status);
    std::fprintf(stderr, "bitlight serve: %s %s %d\n", req.method.c_str(), req.path.c_str(), res.status);
  });

  StopOnSignal stop_on_signal(server);
  int port = options.port;
  if (port == 0) {
    port = server.bind_to_any_port(options.host);
    if (port < 0) return io_error("cannot bind " + options.host + " to any port");
  } else if (!server.bind_to_port(options.host, port)) {
    return io_error("cannot bind " + options.host + ":" + std::to_string(port) +
                    " (in use, or not an address of this machine?)");
  }
  std::fprintf(stderr, "bitlight serve: listening on http://%s:%d (model %s, context %d tokens)\n",
               options.host.c_str(), port, options.model_name.c_str(), engine.n_ctx());
  std::fflush(stderr);
  if (!server.listen_after_bind()) return io_error("the server stopped listening on an error");
  return Status::Ok();
}

}  // namespace bl::server
