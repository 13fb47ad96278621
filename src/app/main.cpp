// bitlight CLI entry point: each command lives in its own cmd_<name>.cpp.
#include <CLI/CLI.hpp>

#include "app/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"bitlight: LLM inference with low-bit weights, measured against the speed of light"};
  app.require_subcommand(1);
  int exit_code = 0;
  bl::app::add_run_command(app, exit_code);
  bl::app::add_chat_command(app, exit_code);
  bl::app::add_eval_command(app, exit_code);
  bl::app::add_tokenize_command(app, exit_code);
  bl::app::add_info_command(app, exit_code);
  bl::app::add_synth_command(app, exit_code);
  bl::app::add_bench_command(app, exit_code);
  bl::app::add_quantize_command(app, exit_code);
  bl::app::add_perplexity_command(app, exit_code);
  bl::app::add_imatrix_command(app, exit_code);
  bl::app::add_serve_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return exit_code;
}
