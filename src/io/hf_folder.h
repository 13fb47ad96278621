// A Hugging Face model folder (config.json, model.safetensors or sharded
// model.safetensors.index.json, tokenizer.json, tokenizer_config.json) presented as a
// ModelFile with GGUF keys and tensor names.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/status.h"
#include "io/model_file.h"

namespace bl {

class MappedFile;

class HfFolder : public ModelFile {
 public:
  static Expected<std::unique_ptr<HfFolder>> open(const std::string& folder, const ParseLimits& limits = {});
  ~HfFolder() override;

 private:
  HfFolder();
  static Expected<std::unique_ptr<HfFolder>> open_checked(const std::string& folder, const ParseLimits& limits);
  std::vector<std::unique_ptr<MappedFile>> shards_;
};

}  // namespace bl
