#include "io/hf_folder.h"

#include "io/mapped_file.h"

namespace bl {

HfFolder::HfFolder() = default;
HfFolder::~HfFolder() = default;

Expected<std::unique_ptr<HfFolder>> HfFolder::open(const std::string& folder, const ParseLimits& limits) {
  return unsupported("'" + folder + "': Hugging Face folders are not supported yet");
}

}  // namespace bl
