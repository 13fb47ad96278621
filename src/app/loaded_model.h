// What the run / chat / eval / bench commands share: the model options (-m, --device, -t,
// -c, -b) and loading a model file onto a backend with a progress bar.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "backend/backend.h"
#include "io/model_file.h"
#include "model/llama_model.h"
#include "tokenizer/tokenizer.h"

namespace bl::app {

struct ModelOptions {
  std::string path;            // empty: kDefaultModelPath
  std::string device = "auto";  // auto | cpu | cuda | ref
  int threads = 0;             // 0: all hardware threads
  int n_ctx = 4096;
  // Prompt tokens per forward pass (llama.cpp's default micro-batch, and bench's): on a GPU a
  // prefill GEMM of 64 tokens leaves its tensor cores half idle and a dequantize-first format
  // dequantizes every weight once per chunk; on the CPU 64 and 512 ran at the same speed.
  int n_batch = 512;
  std::string kv_type = "f16";
};

struct LoadedModel {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when not asked for
};

void add_model_options(CLI::App* command, ModelOptions& options);

// Opens the file, makes the backend, uploads the weights (progress bar on a terminal) and,
// when with_tokenizer, builds the tokenizer.
Expected<LoadedModel> load_model(const ModelOptions& options, bool with_tokenizer);

Expected<DType> parse_kv_type(const std::string& name);

// Parses "1,2,3" into ids; an error names the bad item.
Expected<std::vector<int32_t>> parse_id_list(const std::string& text);

// Prints "error: <message>" to stderr and returns exit code 1.
int report_error(const Status& status);

}  // namespace bl::app
