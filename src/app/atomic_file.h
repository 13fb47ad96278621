// Output files are written to "<path>.tmp" and renamed into place, so a failed command never
// leaves a file that looks complete.
#pragma once

#include <string>
#include <string_view>

#include "core/status.h"

namespace bl::app {

Status write_file_atomically(const std::string& path, std::string_view content);

}  // namespace bl::app
