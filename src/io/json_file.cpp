#include "io/json_file.h"


#include "io/mapped_file.h"

namespace bl {

Expected<Json> read_json_file(const std::string& path, uint64_t max_bytes) {
  BL_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::open(path));
  if (file->size() > max_bytes)
    return invalid_file("'" + path + "' is " + std::to_string(file->size()) + " bytes, over the limit of " +
                        std::to_string(max_bytes));
  const char* text = reinterpret_cast<const char*>(file->data());
  Json j = Json::parse(text, text + file->size(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return invalid_file("'" + path + "' is not valid JSON");
  return j;
}

std::string json_string_or(const Json& object, const char* key, const std::string& fallback) {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}

bool json_bool_or(const Json& object, const char* key, bool fallback) {
  if (!object.is_object()) return fallback;
  auto it = object.find(key);
  return it != object.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

const Json* JsonFields::find(const std::string& key) const {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

namespace {
Status wrong(const std::string& file, const std::string& key, const char* expected, const Json& v) {
  return invalid_file(file + ": '" + key + "' should be " + expected + ", found " + v.dump().substr(0, 80));
}
}  // namespace

Expected<std::optional<uint64_t>> JsonFields::opt_uint(const std::string& key) const {
  const Json* v = find(key);
  if (!v) return std::optional<uint64_t>();
  if (v->is_number_unsigned()) return std::optional<uint64_t>(v->get<uint64_t>());
  // Some configs write integers as 4096.0.
  if (v->is_number_float()) {
    double d = v->get<double>();
    if (d >= 0 && d < 9.0e15 && d == static_cast<double>(static_cast<uint64_t>(d)))
      return std::optional<uint64_t>(static_cast<uint64_t>(d));
  }
  return wrong(file, key, "a non-negative integer", *v);
}

Expected<std::optional<double>> JsonFields::opt_number(const std::string& key) const {
  const Json* v = find(key);
  if (!v) return std::optional<double>();
  if (!v->is_number()) return wrong(file, key, "a number", *v);
  return std::optional<double>(v->get<double>());
}

Expected<std::optional<bool>> JsonFields::opt_bool(const std::string& key) const {
  const Json* v = find(key);
  if (!v) return std::optional<bool>();
  if (!v->is_boolean()) return wrong(file, key, "true or false", *v);
  return std::optional<bool>(v->get<bool>());
}

Expected<std::optional<std::string>> JsonFields::opt_string(const std::string& key) const {
  const Json* v = find(key);
  if (!v) return std::optional<std::string>();
  if (!v->is_string()) return wrong(file, key, "a string", *v);
  return std::optional<std::string>(v->get<std::string>());
}

Expected<uint64_t> JsonFields::uint(const std::string& key) const {
  BL_ASSIGN_OR_RETURN(std::optional<uint64_t> v, opt_uint(key));
  if (!v) return invalid_file(file + ": missing '" + key + "'");
  return *v;
}

Expected<double> JsonFields::number(const std::string& key) const {
  BL_ASSIGN_OR_RETURN(std::optional<double> v, opt_number(key));
  if (!v) return invalid_file(file + ": missing '" + key + "'");
  return *v;
}

}  // namespace bl
