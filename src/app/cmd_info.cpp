// bitlight info: print a model file's metadata and tensor table (GGUF file or Hugging Face
// folder). On a bad file prints "error: <message>" to stderr and exits with 1.
#include <cinttypes>
#include <cstdio>
#include <memory>
#include <string>

#include "app/commands.h"
#include "io/gguf_reader.h"
#include "io/hf_folder.h"
#include "io/model_file.h"

namespace bl::app {
namespace {

struct InfoOptions {
  std::string path;
  size_t max_elems = 8;     // array elements shown per key
  bool show_tensors = true;
};

std::string human_bytes(uint64_t bytes) {
  char buf[32];
  if (bytes >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(bytes) / (1ull << 30));
  else if (bytes >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1ull << 20));
  else
    std::snprintf(buf, sizeof buf, "%" PRIu64 " B", bytes);
  return buf;
}

std::string shape_of(const TensorInfo& t) {
  std::string s = "[";
  for (size_t i = 0; i < t.ne.size(); ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
  return s + "]";
}

std::string type_column(const GgufValue& v) {
  if (v.type != GgufType::array) return gguf_type_name(v.type);
  size_t n = std::visit([](const auto& x) -> size_t {
    if constexpr (requires { x.size(); } && !std::is_same_v<std::decay_t<decltype(x)>, std::string>)
      return x.size();
    else
      return 0;
  }, v.value);
  return std::string("[") + gguf_type_name(v.elem_type) + "; " + std::to_string(n) + "]";
}

Status info(const InfoOptions& o) {
  std::string path = o.path.empty() ? kDefaultModelPath : o.path;
  BL_ASSIGN_OR_RETURN(std::unique_ptr<ModelFile> file, ModelFile::open(path));

  std::printf("file: %s\n", file->path().c_str());
  if (const auto* gguf = dynamic_cast<const GgufFile*>(file.get())) {
    std::printf("format: GGUF v%u, %s, alignment %u, tensor data at byte %" PRIu64 "\n", gguf->version(),
                human_bytes(gguf->file_bytes()).c_str(), gguf->alignment(), gguf->data_offset());
  } else if (dynamic_cast<const HfFolder*>(file.get())) {
    std::printf("format: Hugging Face folder (config.json + safetensors), shown with GGUF keys and tensor names\n");
  }

  size_t key_width = 0;
  for (const GgufKeyValue& kv : file->metadata()) key_width = std::max(key_width, kv.key.size());
  std::printf("\nmetadata: %zu keys\n", file->metadata().size());
  for (const GgufKeyValue& kv : file->metadata())
    std::printf("  %-*s  %-16s %s\n", static_cast<int>(key_width), kv.key.c_str(), type_column(kv.value).c_str(),
                gguf_value_text(kv.value, o.max_elems).c_str());

  std::printf("\ntensors: %zu, %s\n", file->tensors().size(), human_bytes(file->total_tensor_bytes()).c_str());
  if (!o.show_tensors) return Status::Ok();
  size_t name_width = 4;
  for (const TensorInfo& t : file->tensors()) name_width = std::max(name_width, t.name.size());
  std::printf("  %5s  %-*s  %-6s  %-22s  %12s  %12s\n", "#", static_cast<int>(name_width), "name", "dtype", "shape",
              "offset", "bytes");
  size_t i = 0;
  for (const TensorInfo& t : file->tensors()) {
    std::printf("  %5zu  %-*s  %-6s  %-22s  %12" PRIu64 "  %12" PRIu64 "\n", i++, static_cast<int>(name_width),
                t.name.c_str(), std::string(dtype_name(t.dtype)).c_str(), shape_of(t).c_str(), t.offset, t.bytes);
  }
  return Status::Ok();
}

}  // namespace

void add_info_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<InfoOptions>();
  CLI::App* cmd = app.add_subcommand("info", "print a model file's metadata and tensor table");
  cmd->add_option("-m,--model", o->path, "a .gguf file or a Hugging Face folder (default: the demo model)");
  cmd->add_option("--max-elems", o->max_elems, "array elements shown per key")->capture_default_str();
  cmd->add_flag("!--no-tensors", o->show_tensors, "omit the tensor table");
  cmd->callback([o, &exit_code] {
    Status s = info(*o);
    if (s.ok()) {
      exit_code = 0;
    } else {
      std::fflush(stdout);
      std::fprintf(stderr, "error: %s\n", s.message().c_str());
      exit_code = 1;
    }
  });
}

}  // namespace bl::app
