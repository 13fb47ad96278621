// GGUF v2/v3 parsing (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
//
// File layout, all little-endian:
//   "GGUF" | u32 version | u64 n_tensors | u64 n_kv
//   n_kv x      { string key | u32 type | value }
//   n_tensors x { string name | u32 n_dims | u64 ne[n_dims] | u32 dtype | u64 offset }
//   padding to general.alignment (default 32) | tensor data (each offset aligned, from here)
// where string = u64 length + bytes, and an array value = u32 elem type | u64 count | elems.
//
// Everything read is checked against the file size and ParseLimits with checked arithmetic;
// a malformed file gives StatusCode::invalid_file with a message naming the field.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/gguf_value.h"
#include "io/model_file.h"

namespace bl {

inline constexpr uint32_t kGgufMagic = 0x46554747;  // "GGUF" read as a little-endian u32
inline constexpr uint32_t kGgufDefaultAlignment = 32;

struct GgufContents {
  uint32_t version = 0;
  uint32_t alignment = kGgufDefaultAlignment;
  uint64_t data_offset = 0;  // start of the tensor data section, bytes from the file start
  std::vector<GgufKeyValue> metadata;
  std::vector<TensorInfo> tensors;  // in file order; data points into `bytes`
};

// Parses a whole GGUF file held in memory (usually a mapping). TensorInfo::data points into
// `bytes`, which must outlive the result.
Expected<GgufContents> parse_gguf(const uint8_t* bytes, uint64_t size, const ParseLimits& limits = {});

// A .gguf file mapped and parsed; tensor data is used in place from the mapping.
class GgufFile : public ModelFile {
 public:
  static Expected<std::unique_ptr<GgufFile>> open(const std::string& path, const ParseLimits& limits = {});
  ~GgufFile() override;

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  uint64_t file_bytes() const;

 private:
  GgufFile();
  std::unique_ptr<class MappedFile> mapping_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kGgufDefaultAlignment;
  uint64_t data_offset_ = 0;
};

}  // namespace bl
