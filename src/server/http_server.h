// bitlight's OpenAI-compatible HTTP API (cpp-httplib):
//   POST /v1/completions, POST /v1/chat/completions   ("stream": true: server-sent events)
//   GET  /v1/models, /health, /metrics
// Every error is a JSON error object with a 4xx / 5xx status; a request that is refused or
// fails leaves the others as they were.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "core/status.h"
#include "runtime/sampler.h"
#include "server/engine.h"

namespace bl::server {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                          // 0: any free port (the one taken is printed)
  std::string model_name;                   // reported by /v1/models and in every response
  size_t max_body_bytes = size_t{1} << 20;  // larger request bodies are refused (413)
  int max_waiting = 16;                     // requests waiting at most (then 503); the engine's own limit too
  int parallel = 1;                         // requests the engine generates at once
  SamplerParams sampling_defaults;          // for fields a request does not give
  // The seed of requests that give none (`serve -s`); without it each such request draws one.
  std::optional<uint64_t> default_seed;
};

// Blocks SIGINT and SIGTERM in the calling thread and so in every thread it starts afterwards:
// call it before any thread exists (the CPU backend's pool starts when the model loads), so
// that serve_http's signal thread is the one that takes them.
void block_stop_signals();

// Binds, prints "bitlight serve: listening on http://HOST:PORT" to stderr, and serves until
// SIGINT or SIGTERM (see block_stop_signals). Errors: the address cannot be bound.
Status serve_http(Engine& engine, const ServerOptions& options);

}  // namespace bl::server
