// Reading the small JSON files of a Hugging Face folder (config.json, tokenizer.json, ...)
// with a size limit and without exceptions, and typed field access whose errors name the file
// and the field.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "core/status.h"

namespace bl {

using Json = nlohmann::json;

// Parses the file; not_found when it does not exist, invalid_file when it is not JSON.
Expected<Json> read_json_file(const std::string& path, uint64_t max_bytes);

// A field of `object` when present and of the asked type, else `fallback` (for optional
// settings whose wrong type is not worth an error). Never throws.
std::string json_string_or(const Json& object, const char* key, const std::string& fallback);
bool json_bool_or(const Json& object, const char* key, bool fallback);

// Field access for a JSON object read from `file` (used in messages). A missing or null field
// is nullopt for the optional forms; a field of the wrong type is always an error.
struct JsonFields {
  const Json& object;
  std::string file;

  const Json* find(const std::string& key) const;  // nullptr when missing or null
  Expected<std::optional<uint64_t>> opt_uint(const std::string& key) const;
  Expected<std::optional<double>> opt_number(const std::string& key) const;
  Expected<std::optional<bool>> opt_bool(const std::string& key) const;
  Expected<std::optional<std::string>> opt_string(const std::string& key) const;
  Expected<uint64_t> uint(const std::string& key) const;  // required
  Expected<double> number(const std::string& key) const;  // required
};

}  // namespace bl
