#include "app/loaded_model.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "app/commands.h"

namespace bl::app {
namespace {

// A one-line progress bar on stderr, redrawn at most every 1 % (only on a terminal).
class ProgressBar {
 public:
  explicit ProgressBar(std::string label) : label_(std::move(label)), enabled_(isatty(STDERR_FILENO)) {}
  void update(size_t done, size_t total) {
    if (!enabled_ || total == 0) return;
    const int percent = static_cast<int>(done * 100 / total);
    if (percent == last_percent_) return;
    last_percent_ = percent;
    constexpr int kWidth = 40;
    const int filled = percent * kWidth / 100;
    std::fprintf(stderr, "\r%s [%.*s%*s] %3d%% %.0f/%.0f MB", label_.c_str(), filled,
                 "########################################", kWidth - filled, "", percent, done / 1e6, total / 1e6);
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  std::string label_;
  bool enabled_;
  int last_percent_ = -1;
};

}  // namespace

void add_model_options(CLI::App* command, ModelOptions& options) {
  command->add_option("-m,--model", options.path, "model file (.gguf) or Hugging Face folder")
      ->default_str(kDefaultModelPath);
  command->add_option("--device", options.device, "auto | cpu | cuda | ref (scalar fp32 reference)")
      ->capture_default_str();
  command->add_option("-t,--threads", options.threads, "CPU threads (0 = all)")->capture_default_str();
  command->add_option("-c,--ctx-size", options.n_ctx, "context size in tokens")->capture_default_str();
  command->add_option("-b,--batch-size", options.n_batch, "prompt tokens per forward pass")->capture_default_str();
  command->add_option("--kv-type", options.kv_type, "KV cache type: f16 | f32")->capture_default_str();
}

Expected<DType> parse_kv_type(const std::string& name) {
  if (name == "f16") return DType::F16;
  if (name == "f32") return DType::F32;
  return invalid_argument("--kv-type must be f16 or f32, got '" + name + "'");
}

Expected<std::vector<int32_t>> parse_id_list(const std::string& text) {
  std::vector<int32_t> ids;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    char* tail = nullptr;
    const long long v = std::strtoll(item.c_str(), &tail, 10);
    if (item.empty() || *tail != '\0' || v < 0 || v > INT32_MAX)
      return invalid_argument("--ids: '" + item + "' is not a token id");
    ids.push_back(static_cast<int32_t>(v));
    start = end + 1;
  }
  return ids;
}

Expected<LoadedModel> load_model(const ModelOptions& options, bool with_tokenizer) {
  if (options.threads < 0) return invalid_argument("--threads must be >= 0");
  LoadedModel loaded;
  const std::string path = options.path.empty() ? kDefaultModelPath : options.path;
  BL_ASSIGN_OR_RETURN(loaded.file, ModelFile::open(path));
  BL_ASSIGN_OR_RETURN(loaded.backend, make_backend(options.device, options.threads));
  ProgressBar bar("loading " + path);
  BL_ASSIGN_OR_RETURN(loaded.model,
                      LlamaModel::load(*loaded.file, *loaded.backend, [&](size_t done, size_t total) { bar.update(done, total); }));
  if (with_tokenizer) {
    auto tokenizer = Tokenizer::from_model_file(*loaded.file);
    if (!tokenizer.ok()) return tokenizer.status().with_context("tokenizer");
    loaded.tokenizer = std::move(tokenizer).value();
  }
  return loaded;
}

int report_error(const Status& status) {
  std::fprintf(stderr, "error: %s\n", status.message().c_str());
  return 1;
}

}  // namespace bl::app
