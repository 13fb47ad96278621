// bitlight synth: write a random-weight GGUF of a named shape (runtime/synthetic_model.h).
#include <chrono>
#include <cstdio>
#include <memory>

#include "app/commands.h"
#include "app/loaded_model.h"
#include "runtime/synthetic_model.h"

namespace bl::app {
namespace {

struct SynthOptions {
  std::string shape;
  std::string type = "q4_0";
  std::string output;
  uint64_t seed = 1;
  int threads = 0;
};

Status synth(const SynthOptions& o) {
  SynthShape shape;
  BL_ASSIGN_OR_RETURN(shape, find_synth_shape(o.shape));
  std::optional<DType> type = dtype_from_name(o.type);
  if (!type) return invalid_argument("unknown --type '" + o.type + "'");
  if (o.threads < 0) return invalid_argument("--threads must be >= 0");
  ThreadPool pool(o.threads);
  auto t0 = std::chrono::steady_clock::now();
  BL_RETURN_IF_ERROR(write_synthetic_model(shape, *type, o.seed, o.output, pool));
  std::fprintf(stderr, "wrote %s (%s, %s) in %.1f s\n", o.output.c_str(), shape.name.c_str(), o.type.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return Status::Ok();
}

}  // namespace

void add_synth_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<SynthOptions>();
  CLI::App* cmd = app.add_subcommand("synth", "write a random-weight GGUF model of a named shape");
  cmd->add_option("--shape", o->shape, "tiny | smollm2-135m | llama3-1b | llama3-8b | gemma3-270m")->required();
  cmd->add_option("--type", o->type, "weight format: f32 f16 bf16 q8_0 q4_0 q4_1 q5_0 q5_1 q4_k q5_k q6_k ...")
      ->capture_default_str();
  cmd->add_option("-o,--output", o->output, "output .gguf path")->required();
  cmd->add_option("--seed", o->seed, "random seed")->capture_default_str();
  cmd->add_option("-t,--threads", o->threads, "threads (0 = all)")->capture_default_str();
  cmd->callback([o, &exit_code] {
    Status s = synth(*o);
    exit_code = s.ok() ? 0 : report_error(s);
  });
}

}  // namespace bl::app
