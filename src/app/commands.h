// Each CLI command lives in its own cmd_<name>.cpp and registers a CLI11 subcommand here.
// The subcommand's callback stores its exit code in `exit_code` (0 ok, 1 error, 2 usage).
#pragma once

#include <CLI/CLI.hpp>

namespace bl::app {

void add_run_command(CLI::App& app, int& exit_code);
void add_chat_command(CLI::App& app, int& exit_code);
void add_eval_command(CLI::App& app, int& exit_code);
void add_tokenize_command(CLI::App& app, int& exit_code);
void add_info_command(CLI::App& app, int& exit_code);
void add_synth_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);
void add_quantize_command(CLI::App& app, int& exit_code);
void add_perplexity_command(CLI::App& app, int& exit_code);
void add_imatrix_command(CLI::App& app, int& exit_code);
void add_serve_command(CLI::App& app, int& exit_code);

// The model used when -m is not given (fetched by `make setup` into models/).
inline constexpr const char* kDefaultModelPath = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

}  // namespace bl::app
