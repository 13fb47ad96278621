// Safetensors files (https://github.com/huggingface/safetensors): a u64 little-endian header
// length N, N bytes of JSON header, then the tensor data. The header maps each tensor name to
// {"dtype": "BF16", "shape": [rows, cols], "data_offsets": [begin, end]} (offsets relative to
// the data start) plus an optional "__metadata__" object of strings.
//
// Every length, offset and shape is checked against the file size with checked arithmetic;
// a malformed file gives StatusCode::invalid_file naming the tensor and the field.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "io/model_file.h"

namespace bl {

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // as stored: outermost first (PyTorch order); [] for a scalar
  uint64_t file_offset = 0;    // bytes from the start of the file
  uint64_t bytes = 0;
  const void* data = nullptr;  // into the parsed bytes
};

struct SafetensorsContents {
  uint64_t data_offset = 0;  // 8 + header length
  std::map<std::string, std::string> metadata;  // "__metadata__"
  std::vector<SafetensorsTensor> tensors;      // in the order of the header
};

// The largest JSON header accepted (the safetensors library's own limit is 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// dtypes: F32, F16, BF16, F64, I8, I16, I32, I64. Others (BOOL, U8, F8_*) give unsupported.
// `bytes` must outlive the result.
Expected<SafetensorsContents> parse_safetensors(const uint8_t* bytes, uint64_t size, const ParseLimits& limits = {});

}  // namespace bl
