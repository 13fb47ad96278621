#include "server/metrics.h"

#include <cstdio>

namespace bl::server {
namespace {

void add(std::string& out, const char* name, const char* type, const char* help, double value,
         const char* labels = "") {
  char line[256];
  std::snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
  out += line;
  std::snprintf(line, sizeof line, "%s%s %.9g\n", name, labels, value);
  out += line;
}

}  // namespace

std::string prometheus_text(const EngineCounters& e, int requests_in_line, const HttpCounters& http) {
  std::string out;
  add(out, "bitlight_requests_completed_total", "counter", "Completions generated to their end.",
      static_cast<double>(e.requests_completed.load()));
  add(out, "bitlight_requests_cancelled_total", "counter",
      "Completions stopped because the client went away.", static_cast<double>(e.requests_cancelled.load()));
  add(out, "bitlight_requests_refused_busy_total", "counter",
      "Requests answered 503 because too many waited.", static_cast<double>(e.requests_refused_busy.load()));
  add(out, "bitlight_requests_in_line", "gauge", "Requests generating or waiting for their turn.",
      static_cast<double>(requests_in_line));
  add(out, "bitlight_prompt_tokens_total", "counter", "Prompt tokens of completions, reused ones included.",
      static_cast<double>(e.prompt_tokens.load()));
  add(out, "bitlight_prompt_tokens_reused_total", "counter",
      "Prompt tokens found in the cache, not computed again.",
      static_cast<double>(e.prompt_tokens_reused.load()));
  add(out, "bitlight_generated_tokens_total", "counter", "Tokens generated.",
      static_cast<double>(e.generated_tokens.load()));
  add(out, "bitlight_prompt_seconds_total", "counter", "Time spent computing prompts.",
      static_cast<double>(e.prompt_microseconds.load()) * 1e-6);
  add(out, "bitlight_decode_seconds_total", "counter", "Time spent generating after the first token.",
      static_cast<double>(e.decode_microseconds.load()) * 1e-6);
  add(out, "bitlight_batch_steps_total", "counter", "Batched decode steps run (serve --parallel N > 1).",
      static_cast<double>(e.batch_steps.load()));
  add(out, "bitlight_batch_step_sequences_total", "counter",
      "Generating sequences those steps carried (divided by the steps: the mean batch).",
      static_cast<double>(e.batch_step_sequences.load()));
  out += "# HELP bitlight_http_responses_total HTTP responses sent, by status class.\n";
  out += "# TYPE bitlight_http_responses_total counter\n";
  for (int cls = 2; cls < 6; ++cls) {
    out += "bitlight_http_responses_total{code=\"" + std::to_string(cls) + "xx\"} " +
           std::to_string(http.responses_by_class[cls].load()) + "\n";
  }
  return out;
}

}  // namespace bl::server
