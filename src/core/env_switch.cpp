#include "core/env_switch.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace bl {

std::optional<std::string_view> env_choice(const char* name, std::initializer_list<std::string_view> choices) {
  const char* value = std::getenv(name);
  if (!value) return std::nullopt;
  const std::string_view v(value);
  if (std::find(choices.begin(), choices.end(), v) != choices.end()) return v;
  std::string wanted;
  for (std::string_view c : choices) {
    if (!wanted.empty()) wanted += '|';
    wanted.append(c);
  }
  warn_ignored_env(name, v, wanted);
  return std::nullopt;
}

void warn_ignored_env(const char* name, std::string_view value, std::string_view wanted) {
  std::fprintf(stderr, "bitlight: ignoring %s=%.*s (want %.*s)\n", name, static_cast<int>(value.size()), value.data(),
               static_cast<int>(wanted.size()), wanted.data());
}

}  // namespace bl
