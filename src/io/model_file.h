// A model file opened for reading: metadata (GGUF key/value conventions) and a tensor table
// whose data is mapped from disk.
//
// Both sources end up here: a GGUF file as it is, and a Hugging Face folder (config.json,
// *.safetensors, tokenizer.json), whose config and tokenizer are translated into the GGUF
// keys that llama.cpp's converter writes (llama.embedding_length, tokenizer.ggml.tokens, ...)
// and whose tensor names are mapped to GGUF names (blk.N.attn_q.weight, ...). Model and
// tokenizer code therefore read one vocabulary of keys.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "core/tensor.h"
#include "io/gguf_value.h"

namespace bl {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> ne;   // GGUF order: ne[0] contiguous; 1..4 dims
  uint64_t offset = 0;       // bytes from the start of the data section (GGUF) or file
  uint64_t bytes = 0;
  const void* data = nullptr;  // mapped, valid while the ModelFile lives

  Tensor view() const;  // CPU Tensor view of data (dims above 4 are rejected at load)
};

// Limits applied while parsing untrusted files; a file past any of them is rejected with an
// error naming the field.
struct ParseLimits {
  uint64_t max_tensors = 1u << 16;
  uint64_t max_kv = 1u << 16;
  uint64_t max_string_bytes = 1u << 24;      // one string
  uint64_t max_array_elems = 1u << 24;       // one array
  uint64_t max_metadata_bytes = 1ull << 30;  // all metadata together, as parsed in memory
  uint32_t max_dims = 4;
};

class ModelFile {
 public:
  // path: a .gguf file, or a folder holding config.json + *.safetensors (+ tokenizer.json).
  static Expected<std::unique_ptr<ModelFile>> open(const std::string& path, const ParseLimits& limits = {});
  virtual ~ModelFile() = default;

  const std::string& path() const { return path_; }
  uint64_t total_tensor_bytes() const;

  // Metadata. get_* fail with a message naming the key when it is missing or of another
  // type; integer getters accept every integer type (and range-check), float getters accept
  // f32/f64 and integers.
  bool has(std::string_view key) const;
  const GgufValue* find(std::string_view key) const;
  Expected<int64_t> get_int(std::string_view key) const;
  Expected<double> get_float(std::string_view key) const;
  Expected<bool> get_bool(std::string_view key) const;
  Expected<std::string> get_string(std::string_view key) const;
  Expected<std::vector<std::string>> get_string_array(std::string_view key) const;
  Expected<std::vector<int64_t>> get_int_array(std::string_view key) const;
  Expected<std::vector<float>> get_float_array(std::string_view key) const;
  // Present-or-default forms: a missing key gives the default, a key of the wrong type an error.
  Expected<int64_t> get_int_or(std::string_view key, int64_t fallback) const;
  Expected<double> get_float_or(std::string_view key, double fallback) const;
  Expected<bool> get_bool_or(std::string_view key, bool fallback) const;
  Expected<std::string> get_string_or(std::string_view key, std::string fallback) const;

  const std::vector<GgufKeyValue>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;

 protected:
  std::string path_;
  std::vector<GgufKeyValue> metadata_;
  std::vector<TensorInfo> tensors_;
};

}  // namespace bl
