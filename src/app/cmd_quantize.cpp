// bitlight quantize IN OUT --type TYPE: re-quantize a GGUF or Hugging Face folder into a GGUF
// (runtime/quantize_model.h has the rule for which tensor gets which type).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "app/commands.h"
#include "app/loaded_model.h"
#include "io/model_file.h"
#include "quant/bl_group.h"
#include "runtime/imatrix.h"
#include "runtime/quantize_model.h"

namespace bl::app {
namespace {

struct QuantizeCliOptions {
  std::string input, output, type, imatrix, embd_type, output_type, fallback_type;
  int threads = 0;
  bool dry_run = false;
};

Expected<std::optional<DType>> parse_type(const std::string& flag, const std::string& name) {
  if (name.empty()) return std::optional<DType>();
  std::optional<DType> t = dtype_from_name(name);
  if (!t) return invalid_argument("unknown " + flag + " '" + name + "' (e.g. q8_0, q4_k, bl4g128, bl2g64)");
  return t;
}

// One line redrawn in place on a terminal; otherwise a line per 10 % so logs stay short.
class ProgressBar {
 public:
  ProgressBar() : tty_(isatty(STDERR_FILENO) != 0) {}
  void update(size_t done, size_t total, uint64_t bytes_done, uint64_t bytes_total, const std::string& name) {
    const double frac = bytes_total ? static_cast<double>(bytes_done) / static_cast<double>(bytes_total) : 1.0;
    const int percent = static_cast<int>(frac * 100.0);
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(frac * kWidth);
      std::fprintf(stderr, "\r[%-*s] %3d%% %zu/%zu %-40.40s", kWidth, std::string(static_cast<size_t>(filled), '#').c_str(),
                   percent, done, total, name.c_str());
      if (done == total) std::fputc('\n', stderr);
    } else if (percent / 10 > last_decile_ || done == total) {
      last_decile_ = percent / 10;
      std::fprintf(stderr, "%3d%% %zu/%zu tensors (%s)\n", percent, done, total, name.c_str());
    }
    std::fflush(stderr);
  }

 private:
  bool tty_;
  int last_decile_ = 0;
};

Status quantize(const QuantizeCliOptions& o) {
  QuantizeOptions q;
  std::optional<DType> t;
  BL_ASSIGN_OR_RETURN(t, parse_type("--type", o.type));
  q.type = *t;
  BL_ASSIGN_OR_RETURN(q.embd_type, parse_type("--embd-type", o.embd_type));
  BL_ASSIGN_OR_RETURN(q.output_type, parse_type("--output-type", o.output_type));
  BL_ASSIGN_OR_RETURN(q.fallback_type, parse_type("--fallback-type", o.fallback_type));
  if (o.threads < 0) return invalid_argument("--threads must be >= 0");

  std::unique_ptr<ModelFile> in;
  BL_ASSIGN_OR_RETURN(in, ModelFile::open(o.input));
  ImportanceMatrix imatrix;
  if (!o.imatrix.empty()) {
    BL_ASSIGN_OR_RETURN(imatrix, load_imatrix(o.imatrix));
    q.imatrix = &imatrix;
    if (!quant::is_bl_group(q.type))
      std::fprintf(stderr, "note: --imatrix is used by the bl<b>g<g> types only; %s ignores it\n", o.type.c_str());
  }

  std::vector<TensorPlan> plan;
  BL_ASSIGN_OR_RETURN(plan, plan_quantization(*in, q));
  uint64_t out_bytes = 0, elements = 0;
  for (size_t i = 0; i < plan.size(); ++i) {
    const TensorInfo& ti = in->tensors()[i];
    uint64_t n = 1;
    for (int64_t d : ti.ne) n *= static_cast<uint64_t>(d);
    elements += n;
    out_bytes += n / static_cast<uint64_t>(dtype_info(plan[i].to)->block_elems) *
                 static_cast<uint64_t>(dtype_info(plan[i].to)->block_bytes);
    // Without --dry-run, only the matrices the type rule sends elsewhere (embeddings, output,
    // fallbacks); norms are always f32.
    if (o.dry_run || (plan[i].to != q.type && ti.ne.size() >= 2))
      std::fprintf(stderr, "%-36s %-8s -> %s\n", ti.name.c_str(), std::string(dtype_name(plan[i].from)).c_str(),
                   std::string(dtype_name(plan[i].to)).c_str());
  }
  std::fprintf(stderr, "%s: %zu tensors, %.1f MB -> %.1f MB (%.3f bits per weight overall)\n", o.input.c_str(),
               plan.size(), static_cast<double>(in->total_tensor_bytes()) / 1e6, static_cast<double>(out_bytes) / 1e6,
               elements ? 8.0 * static_cast<double>(out_bytes) / static_cast<double>(elements) : 0.0);
  if (o.dry_run) return Status::Ok();

  ThreadPool pool(o.threads);
  ProgressBar bar;
  const auto t0 = std::chrono::steady_clock::now();
  BL_RETURN_IF_ERROR(quantize_model(*in, o.output, q, pool,
                                    [&bar](size_t d, size_t n, uint64_t bd, uint64_t bt, const std::string& name) {
                                      bar.update(d, n, bd, bt, name);
                                    }));
  std::fprintf(stderr, "wrote %s (%s) in %.1f s\n", o.output.c_str(), o.type.c_str(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  return Status::Ok();
}

}  // namespace

void add_quantize_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<QuantizeCliOptions>();
  CLI::App* cmd = app.add_subcommand("quantize", "re-quantize a GGUF or Hugging Face folder into a GGUF");
  cmd->add_option("input", o->input, "input .gguf or Hugging Face folder")->required();
  cmd->add_option("output", o->output, "output .gguf")->required();
  cmd->add_option("--type", o->type, "type of the weight matrices: q8_0 q4_0 q4_k ... or bl<bits>g<group>, e.g. bl3g128")
      ->required();
  cmd->add_option("--imatrix", o->imatrix, "importance matrix from `bitlight imatrix` (activation-aware bl types)");
  cmd->add_option("--embd-type", o->embd_type, "type of token_embd.weight (default: q8_0, or --type if more precise)");
  cmd->add_option("--output-type", o->output_type, "type of output.weight (default: as --embd-type)");
  cmd->add_option("--fallback-type", o->fallback_type,
                  "type for matrices whose rows do not fit --type's group size (default: refuse)");
  cmd->add_option("-t,--threads", o->threads, "threads (0 = all)")->capture_default_str();
  cmd->add_flag("--dry-run", o->dry_run, "print each tensor's type and the sizes, write nothing");
  cmd->callback([o, &exit_code] {
    Status s = quantize(*o);
    exit_code = s.ok() ? 0 : report_error(s);
  });
}

}  // namespace bl::app
