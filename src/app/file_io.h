// Whole-file input and output of the CLI commands. Output files are written to "<path>.tmp" and
// renamed into place, so a failed command never leaves a file that looks complete.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace bl::app {

Status write_file_atomically(const std::string& path, std::string_view content);

// The bytes of a file (a prompt, a calibration or evaluation text); not_found names the path.
Expected<std::string> read_text_file(const std::string& path);

}  // namespace bl::app
