#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/checked_math.h"
#include "io/byte_cursor.h"

namespace bl {
namespace {

using nlohmann::json;

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16}, {"F64", DType::F64},
    {"I8", DType::I8},   {"I16", DType::I16}, {"I32", DType::I32},   {"I64", DType::I64},
};

Status tensor_error(const std::string& name, const std::string& what) {
  return invalid_file("safetensors tensor " + printable_name(name) + ": " + what);
}

Status parse_entry(const std::string& name, const json& entry, uint64_t data_bytes, const ParseLimits& limits,
                   SafetensorsTensor& t) {
  t.name = name;
  if (!entry.is_object()) return tensor_error(name, "header entry is not an object");
  auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) return tensor_error(name, "missing string field 'dtype'");
  const std::string& dname = dtype->get_ref<const std::string&>();
  auto known = std::find_if(std::begin(kDTypes), std::end(kDTypes), [&](const DTypeName& d) { return dname == d.name; });
  if (known == std::end(kDTypes)) return unsupported("safetensors tensor " + printable_name(name) + ": dtype " + printable_name(dname) + " is not supported");
  t.dtype = known->dtype;

  auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) return tensor_error(name, "missing array field 'shape'");
  if (shape->size() > limits.max_dims)
    return tensor_error(name, std::to_string(shape->size()) + " dims (at most " + std::to_string(limits.max_dims) + ")");
  uint64_t elements = 1;
  for (const json& d : *shape) {
    if (!d.is_number_unsigned()) return tensor_error(name, "shape " + shape->dump() + " holds a non-integer or negative size");
    uint64_t n = d.get<uint64_t>();
    auto p = checked_mul(elements, n);
    if (!p || *p > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      return tensor_error(name, "shape " + shape->dump() + " overflows");
    elements = *p;
    t.shape.push_back(static_cast<int64_t>(n));
  }
  auto offsets = entry.find("data_offsets");
  if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned())
    return tensor_error(name, "'data_offsets' must be [begin, end] of non-negative integers");
  uint64_t begin = (*offsets)[0].get<uint64_t>();
  uint64_t end = (*offsets)[1].get<uint64_t>();
  if (begin > end) return tensor_error(name, "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "] are reversed");
  if (end > data_bytes)
    return tensor_error(name, "data [" + std::to_string(begin) + ", " + std::to_string(end) +
                                  ") runs past the end of the data section (" + std::to_string(data_bytes) + " bytes)");
  auto bytes = checked_mul(elements, static_cast<uint64_t>(dtype_info(t.dtype)->block_bytes));
  if (!bytes || *bytes != end - begin)
    return tensor_error(name, "shape " + shape->dump() + " of " + dname + " needs " +
                                  (bytes ? std::to_string(*bytes) : std::string("too many")) + " bytes but data_offsets span " +
                                  std::to_string(end - begin));
  t.file_offset = begin;  // made absolute by the caller
  t.bytes = end - begin;
  return Status::Ok();
}

}  // namespace

Expected<SafetensorsContents> parse_safetensors(const uint8_t* bytes, uint64_t size, const ParseLimits& limits) {
  ByteCursor cur(bytes, size);
  uint64_t header_bytes = 0;
  if (!cur.read(header_bytes))
    return invalid_file("file is " + std::to_string(size) + " bytes, too small for a safetensors header");
  if (header_bytes > kMaxSafetensorsHeaderBytes)
    return invalid_file("safetensors header length " + std::to_string(header_bytes) + " exceeds the limit of " +
                        std::to_string(kMaxSafetensorsHeaderBytes) + " bytes");
  if (header_bytes > cur.remaining())
    return invalid_file("safetensors header of " + std::to_string(header_bytes) +
                        " bytes runs past the end of the file (" + std::to_string(size) + " bytes)");
  const char* text = reinterpret_cast<const char*>(bytes + 8);
  json header = json::parse(text, text + header_bytes, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded()) return invalid_file("safetensors header is not valid JSON");
  if (!header.is_object()) return invalid_file("safetensors header is not a JSON object");
  if (header.size() > limits.max_tensors + 1)
    return invalid_file("safetensors header lists " + std::to_string(header.size()) + " tensors, over the limit of " +
                        std::to_string(limits.max_tensors));

  SafetensorsContents out;
  out.data_offset = 8 + header_bytes;
  const uint64_t data_bytes = size - out.data_offset;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return invalid_file("safetensors __metadata__ is not an object");
      for (const auto& [k, v] : entry.items())
        if (v.is_string()) out.metadata[k] = v.get<std::string>();
      continue;
    }
    if (name.empty()) return invalid_file("safetensors header has a tensor with an empty name");
    SafetensorsTensor t;
    BL_RETURN_IF_ERROR(parse_entry(name, entry, data_bytes, limits, t));
    t.data = bytes + out.data_offset + t.file_offset;
    t.file_offset += out.data_offset;
    out.tensors.push_back(std::move(t));
  }
  // nlohmann::json objects keep their keys sorted, so names are unique; check overlap.
  std::vector<const SafetensorsTensor*> by_offset;
  for (const SafetensorsTensor& t : out.tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const SafetensorsTensor* a, const SafetensorsTensor* b) { return a->file_offset < b->file_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const SafetensorsTensor& a = *by_offset[i - 1];
    const SafetensorsTensor& b = *by_offset[i];
    if (a.file_offset + a.bytes > b.file_offset && a.bytes > 0 && b.bytes > 0)
      return invalid_file("safetensors tensors " + printable_name(a.name) + " and " + printable_name(b.name) +
                          " overlap");
  }
  return out;
}

}  // namespace bl
