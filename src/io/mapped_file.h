// A whole file mapped read-only into memory (mmap). Model weights are used in place from the
// mapping, so a TensorInfo::data pointer stays valid while its MappedFile lives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/status.h"

namespace bl {

class MappedFile {
 public:
  // Maps the whole file read-only. An empty file maps to size() == 0, data() == nullptr.
  static Expected<std::unique_ptr<MappedFile>> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

}  // namespace bl
