#include "app/file_io.h"

#include <cstdio>
#include <fstream>
#include <sstream>

namespace bl::app {

Status write_file_atomically(const std::string& path, std::string_view content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return io_error("cannot write '" + tmp + "'");
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    if (!out.flush()) {
      std::remove(tmp.c_str());
      return io_error("writing '" + tmp + "' failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return io_error("cannot rename '" + tmp + "' to '" + path + "'");
  }
  return Status::Ok();
}

Expected<std::string> read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return not_found("cannot open '" + path + "'");
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) return io_error("reading '" + path + "' failed");
  return content.str();
}

}  // namespace bl::app
