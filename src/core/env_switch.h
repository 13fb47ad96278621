// Environment switches (BITLIGHT_*): settings read once at start-up, mostly to compare one
// code path with another (README, the "Environment:" paragraph). A value that is set but is not one of the
// switch's choices is ignored with a warning on stderr that names the switch and its choices,
// so that a typo does not pass silently for the default.
#pragma once

#include <initializer_list>
#include <optional>
#include <string_view>

namespace bl {

// The value of switch `name` when it is set to one of `choices`; nullopt when it is unset or set
// to anything else (then warned: "bitlight: ignoring NAME=VALUE (want a|b|c)").
std::optional<std::string_view> env_choice(const char* name, std::initializer_list<std::string_view> choices);

// The warning env_choice gives, for switches whose values are checked elsewhere (lists).
void warn_ignored_env(const char* name, std::string_view value, std::string_view wanted);

}  // namespace bl
