#include "io/model_file.h"

#include <filesystem>
#include <limits>

#include "io/gguf_reader.h"
#include "io/hf_folder.h"

namespace bl {

Tensor TensorInfo::view() const {
  Tensor t;
  // The mapping is read-only: kernels read weights through this view and never write them.
  t.data = const_cast<void*>(data);
  t.dtype = dtype;
  for (size_t i = 0; i < ne.size() && i < t.ne.size(); ++i) t.ne[i] = ne[i];
  return t;
}

Expected<std::unique_ptr<ModelFile>> ModelFile::open(const std::string& path, const ParseLimits& limits) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    BL_ASSIGN_OR_RETURN(std::unique_ptr<HfFolder> folder, HfFolder::open(path, limits));
    return std::unique_ptr<ModelFile>(std::move(folder));
  }
  if (path.size() > 12 && path.compare(path.size() - 12, 12, ".safetensors") == 0)
    return invalid_argument("'" + path + "' is a safetensors file: open the Hugging Face folder that holds it and its config.json");
  BL_ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file, GgufFile::open(path, limits));
  return std::unique_ptr<ModelFile>(std::move(file));
}

uint64_t ModelFile::total_tensor_bytes() const {
  uint64_t total = 0;
  for (const TensorInfo& t : tensors_) total += t.bytes;
  return total;
}

bool ModelFile::has(std::string_view key) const { return find(key) != nullptr; }

const GgufValue* ModelFile::find(std::string_view key) const {
  for (const GgufKeyValue& kv : metadata_)
    if (kv.key == key) return &kv.value;
  return nullptr;
}

const TensorInfo* ModelFile::find_tensor(std::string_view name) const {
  for (const TensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

namespace {

Status missing_key(std::string_view key) {
  return not_found("metadata key '" + std::string(key) + "' not found");
}

Status wrong_type(std::string_view key, const GgufValue& v, const char* expected) {
  return invalid_file("metadata key '" + std::string(key) + "' is " + gguf_type_text(v) + ", expected " + expected);
}

bool is_scalar_integer(const GgufValue& v) { return v.type != GgufType::array && gguf_is_integer(v.type); }
bool is_scalar_float(const GgufValue& v) { return v.type != GgufType::array && gguf_is_float(v.type); }
bool is_array_of(const GgufValue& v, bool (*pred)(GgufType)) { return v.type == GgufType::array && pred(v.elem_type); }

}  // namespace

Expected<int64_t> ModelFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(key);
  if (!is_scalar_integer(*v)) return wrong_type(key, *v, "an integer");
  if (const uint64_t* u = std::get_if<uint64_t>(&v->value))
    return invalid_file("metadata key '" + std::string(key) + "' = " + std::to_string(*u) + " does not fit in int64");
  return std::get<int64_t>(v->value);
}

Expected<double> ModelFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(key);
  if (is_scalar_float(*v)) return std::get<double>(v->value);
  if (is_scalar_integer(*v)) {
    if (const uint64_t* u = std::get_if<uint64_t>(&v->value)) return static_cast<double>(*u);
    return static_cast<double>(std::get<int64_t>(v->value));
  }
  return wrong_type(key, *v, "a number");
}

Expected<bool> ModelFile::get_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(key);
  if (v->type != GgufType::boolean) return wrong_type(key, *v, "bool");
  return std::get<bool>(v->value);
}

Expected<std::string> ModelFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(key);
  if (v->type != GgufType::string) return wrong_type(key, *v, "string");
  return std::get<std::string>(v->value);
}

Expected<std::vector<std::string>> ModelFile::get_string_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(key);
  if (!(v->type == GgufType::array && v->elem_type == GgufType::string)) return wrong_type(key, *v, "array of string");
  return std::get<std::vector<std::string>>(v->value);
}

Expected<std::vector<int64_t>> ModelFile::get_int_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(key);
  if (!is_array_of(*v, gguf_is_integer)) return wrong_type(key, *v, "array of integers");
  if (const auto* u = std::get_if<std::vector<uint64_t>>(&v->value)) {
    std::vector<int64_t> out;
    out.reserve(u->size());
    for (uint64_t x : *u) {
      if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return invalid_file("metadata key '" + std::string(key) + "' holds " + std::to_string(x) +
                            ", which does not fit in int64");
      out.push_back(static_cast<int64_t>(x));
    }
    return out;
  }
  return std::get<std::vector<int64_t>>(v->value);
}

Expected<std::vector<float>> ModelFile::get_float_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return missing_key(key);
  if (!is_array_of(*v, gguf_is_float) && !is_array_of(*v, gguf_is_integer))
    return wrong_type(key, *v, "array of numbers");
  return std::visit(
      [](const auto& x) -> std::vector<float> {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::vector<double>> || std::is_same_v<T, std::vector<int64_t>> ||
                      std::is_same_v<T, std::vector<uint64_t>>) {
          return std::vector<float>(x.begin(), x.end());
        } else {
          return {};
        }
      },
      v->value);
}

Expected<int64_t> ModelFile::get_int_or(std::string_view key, int64_t fallback) const {
  return has(key) ? get_int(key) : Expected<int64_t>(fallback);
}

Expected<double> ModelFile::get_float_or(std::string_view key, double fallback) const {
  return has(key) ? get_float(key) : Expected<double>(fallback);
}

Expected<bool> ModelFile::get_bool_or(std::string_view key, bool fallback) const {
  return has(key) ? get_bool(key) : Expected<bool>(fallback);
}

Expected<std::string> ModelFile::get_string_or(std::string_view key, std::string fallback) const {
  return has(key) ? get_string(key) : Expected<std::string>(std::move(fallback));
}

}  // namespace bl
