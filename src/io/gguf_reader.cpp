#include "io/gguf_reader.h"

#include <algorithm>
#include <limits>
#include <unordered_set>
#include <utility>

#include "core/checked_math.h"
#include "core/dtype.h"
#include "io/byte_cursor.h"
#include "io/mapped_file.h"

namespace bl {
namespace {

constexpr uint64_t kInt64Max = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
// Smallest possible records, used to reject counts that cannot fit in what is left of the
// file before anything is allocated for them.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;                // empty key, type, u8 value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, n_dims, ne[0], dtype, offset
constexpr uint32_t kMaxDims = 4;                              // bl::Tensor holds 4 dims

bool is_known_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::f64); }

// Bytes on disk of one scalar of type t; 0 for string and array (variable size).
uint64_t disk_bytes(GgufType t) {
  switch (t) {
    case GgufType::u8: case GgufType::i8: case GgufType::boolean: return 1;
    case GgufType::u16: case GgufType::i16: return 2;
    case GgufType::u32: case GgufType::i32: case GgufType::f32: return 4;
    case GgufType::u64: case GgufType::i64: case GgufType::f64: return 8;
    case GgufType::string: case GgufType::array: return 0;
  }
  return 0;
}

std::string shape_text(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

class GgufParser {
 public:
  GgufParser(const uint8_t* bytes, uint64_t size, const ParseLimits& limits)
      : bytes_(bytes), cur_(bytes, size), limits_(limits) {}

  Expected<GgufContents> parse() {
    BL_RETURN_IF_ERROR(parse_header());
    BL_RETURN_IF_ERROR(parse_metadata());
    BL_RETURN_IF_ERROR(read_alignment());
    BL_RETURN_IF_ERROR(parse_tensor_infos());
    BL_RETURN_IF_ERROR(place_tensor_data());
    return std::move(out_);
  }

 private:
  Status truncated(const std::string& what, uint64_t need) const {
    return invalid_file("file truncated: " + what + " at byte offset " + std::to_string(cur_.pos()) + " needs " +
                        std::to_string(need) + " bytes but the file ends at " + std::to_string(cur_.size()));
  }

  template <typename T>
  Status read(T& v, const std::string& what) {
    if (!cur_.read(v)) return truncated(what, sizeof(T));
    return Status::Ok();
  }

  // `what` names the string in an error; WhatFn (a callable returning it) is called only on
  // failure, so the per-element context of a 150k-token vocabulary is never built.
  template <typename WhatFn>
  Status read_string_lazy(std::string& s, const WhatFn& what) {
    uint64_t len = 0;
    if (!cur_.read(len)) return truncated(what() + " length", sizeof len);
    if (len > limits_.max_string_bytes)
      return invalid_file(what() + ": string length " + std::to_string(len) + " exceeds the limit of " +
                          std::to_string(limits_.max_string_bytes) + " bytes");
    if (!cur_.read_string(len, s))
      return invalid_file(what() + ": string of " + std::to_string(len) + " bytes at byte offset " +
                          std::to_string(cur_.pos()) + " runs past the end of the file (" +
                          std::to_string(cur_.size()) + " bytes)");
    return Status::Ok();
  }
  Status read_string(std::string& s, const std::string& what) {
    return read_string_lazy(s, [&] { return what; });
  }

  // Counts the in-memory size of parsed metadata against max_metadata_bytes (`what` as above).
  template <typename WhatFn>
  Status account_lazy(uint64_t bytes, const WhatFn& what) {
    auto total = checked_add(metadata_bytes_, bytes);
    if (!total || *total > limits_.max_metadata_bytes)
      return invalid_file(what() + ": metadata would exceed the limit of " +
                          std::to_string(limits_.max_metadata_bytes) + " bytes in memory");
    metadata_bytes_ = *total;
    return Status::Ok();
  }
  Status account(uint64_t bytes, const std::string& what) {
    return account_lazy(bytes, [&] { return what; });
  }

  Status parse_header() {
    if (cur_.size() < 4) return invalid_file("file is " + std::to_string(cur_.size()) + " bytes, too small to be GGUF");
    uint32_t magic = 0;
    BL_RETURN_IF_ERROR(read(magic, "magic"));
    if (magic != kGgufMagic)
      return invalid_file("bad magic " + printable_name({reinterpret_cast<const char*>(bytes_), 4}) +
                          " (a GGUF file starts with 'GGUF')");
    uint32_t version = 0;
    BL_RETURN_IF_ERROR(read(version, "version"));
    if (version != 2 && version != 3) {
      uint32_t swapped = __builtin_bswap32(version);
      if (swapped == 2 || swapped == 3) return invalid_file("big-endian GGUF files are not supported");
      if (version == 1) return invalid_file("GGUF version 1 is not supported (only versions 2 and 3)");
      return invalid_file("unknown GGUF version " + std::to_string(version) + " (expected 2 or 3)");
    }
    out_.version = version;
    BL_RETURN_IF_ERROR(read(n_tensors_, "tensor count"));
    BL_RETURN_IF_ERROR(read(n_kv_, "kv count"));
    if (n_tensors_ > limits_.max_tensors)
      return invalid_file("tensor count " + std::to_string(n_tensors_) + " exceeds the limit of " +
                          std::to_string(limits_.max_tensors));
    if (n_kv_ > limits_.max_kv)
      return invalid_file("kv count " + std::to_string(n_kv_) + " exceeds the limit of " +
                          std::to_string(limits_.max_kv));
    // Checked even though the default limits keep these products small: limits are the caller's.
    auto kv_bytes = checked_mul(n_kv_, kMinKvBytes);
    auto tensor_bytes = checked_mul(n_tensors_, kMinTensorInfoBytes);
    auto sum = kv_bytes && tensor_bytes ? checked_add(*kv_bytes, *tensor_bytes) : std::nullopt;
    const uint64_t kv_min = kv_bytes.value_or(UINT64_MAX);
    const uint64_t all_min = sum.value_or(UINT64_MAX);
    if (kv_min > cur_.remaining())
      return invalid_file("kv count " + std::to_string(n_kv_) + " needs at least " + std::to_string(kv_min) +
                          " bytes but only " + std::to_string(cur_.remaining()) +
                          " follow the header (truncated file or corrupt count)");
    if (all_min > cur_.remaining())
      return invalid_file("tensor count " + std::to_string(n_tensors_) + " (with kv count " + std::to_string(n_kv_) +
                          ") needs at least " + std::to_string(all_min) + " bytes but only " +
                          std::to_string(cur_.remaining()) + " follow the header (truncated file or corrupt count)");
    return Status::Ok();
  }

  Status parse_metadata() {
    out_.metadata.reserve(n_kv_);  // bounded by the file size check in parse_header
    std::unordered_set<std::string> seen;
    for (uint64_t i = 0; i < n_kv_; ++i) {
      GgufKeyValue kv;
      std::string where = "metadata key #" + std::to_string(i);
      BL_RETURN_IF_ERROR(read_string(kv.key, where));
      if (kv.key.empty()) return invalid_file(where + " is empty");
      std::string name = "key " + printable_name(kv.key);
      if (!seen.insert(kv.key).second) return invalid_file("duplicate metadata " + name);
      BL_RETURN_IF_ERROR(account(kv.key.size(), name));
      uint32_t type = 0;
      BL_RETURN_IF_ERROR(read(type, name + " value type"));
      if (!is_known_type(type)) return invalid_file(name + ": unknown value type " + std::to_string(type));
      BL_RETURN_IF_ERROR(read_value(static_cast<GgufType>(type), name, kv.value));
      out_.metadata.push_back(std::move(kv));
    }
    return Status::Ok();
  }

  template <typename T>
  Status read_int(const std::string& what, GgufValue& v) {
    T x{};
    BL_RETURN_IF_ERROR(read(x, what));
    if constexpr (std::is_same_v<T, uint64_t>) {
      if (x > kInt64Max) {
        v.value = x;
        return Status::Ok();
      }
    }
    v.value = static_cast<int64_t>(x);
    return Status::Ok();
  }

  Status read_value(GgufType type, const std::string& what, GgufValue& v) {
    v.type = type;
    switch (type) {
      case GgufType::u8: return read_int<uint8_t>(what, v);
      case GgufType::i8: return read_int<int8_t>(what, v);
      case GgufType::u16: return read_int<uint16_t>(what, v);
      case GgufType::i16: return read_int<int16_t>(what, v);
      case GgufType::u32: return read_int<uint32_t>(what, v);
      case GgufType::i32: return read_int<int32_t>(what, v);
      case GgufType::u64: return read_int<uint64_t>(what, v);
      case GgufType::i64: return read_int<int64_t>(what, v);
      case GgufType::f32: {
        float x = 0;
        BL_RETURN_IF_ERROR(read(x, what));
        v.value = static_cast<double>(x);
        return Status::Ok();
      }
      case GgufType::f64: {
        double x = 0;
        BL_RETURN_IF_ERROR(read(x, what));
        v.value = x;
        return Status::Ok();
      }
      case GgufType::boolean: {
        uint8_t x = 0;
        BL_RETURN_IF_ERROR(read(x, what));
        v.value = x != 0;
        return Status::Ok();
      }
      case GgufType::string: {
        std::string s;
        BL_RETURN_IF_ERROR(read_string(s, what));
        BL_RETURN_IF_ERROR(account(s.size(), what));
        v.value = std::move(s);
        return Status::Ok();
      }
      case GgufType::array: return read_array(what, v);
    }
    return invalid_file(what + ": unknown value type " + std::to_string(static_cast<uint32_t>(type)));
  }

  // The caller checked that count * sizeof(Disk) bytes remain.
  template <typename Disk, typename Wide>
  void read_numbers(uint64_t count, std::vector<Wide>& out) {
    out.resize(count);
    for (uint64_t i = 0; i < count; ++i) {
      Disk x{};
      cur_.read(x);
      out[i] = static_cast<Wide>(x);
    }
  }

  Status read_array(const std::string& what, GgufValue& v) {
    uint32_t elem = 0;
    BL_RETURN_IF_ERROR(read(elem, what + " array element type"));
    if (!is_known_type(elem)) return invalid_file(what + ": unknown array element type " + std::to_string(elem));
    GgufType et = static_cast<GgufType>(elem);
    if (et == GgufType::array) return unsupported(what + ": arrays of arrays are not supported");
    v.elem_type = et;
    uint64_t count = 0;
    BL_RETURN_IF_ERROR(read(count, what + " array length"));
    if (count > limits_.max_array_elems)
      return invalid_file(what + ": array length " + std::to_string(count) + " exceeds the limit of " +
                          std::to_string(limits_.max_array_elems) + " elements");
    // A string element takes at least its 8-byte length on disk.
    const uint64_t min_elem_bytes = et == GgufType::string ? 8 : disk_bytes(et);
    auto min_bytes = checked_mul(count, min_elem_bytes);
    if (!min_bytes || *min_bytes > cur_.remaining())
      return invalid_file(what + ": array of " + std::to_string(count) + " " + gguf_type_name(et) +
                          " elements at byte offset " + std::to_string(cur_.pos()) +
                          " runs past the end of the file (" + std::to_string(cur_.size()) + " bytes)");
    // In memory: a std::string per string element, a bit per bool, 8 bytes per number.
    const uint64_t wide_bytes = et == GgufType::string ? sizeof(std::string) : (et == GgufType::boolean ? 1 : 8);
    auto in_memory = checked_mul(count, wide_bytes);
    BL_RETURN_IF_ERROR(account(in_memory.value_or(UINT64_MAX), what));
    switch (et) {
      case GgufType::u8: { std::vector<int64_t> a; read_numbers<uint8_t>(count, a); v.value = std::move(a); break; }
      case GgufType::i8: { std::vector<int64_t> a; read_numbers<int8_t>(count, a); v.value = std::move(a); break; }
      case GgufType::u16: { std::vector<int64_t> a; read_numbers<uint16_t>(count, a); v.value = std::move(a); break; }
      case GgufType::i16: { std::vector<int64_t> a; read_numbers<int16_t>(count, a); v.value = std::move(a); break; }
      case GgufType::u32: { std::vector<int64_t> a; read_numbers<uint32_t>(count, a); v.value = std::move(a); break; }
      case GgufType::i32: { std::vector<int64_t> a; read_numbers<int32_t>(count, a); v.value = std::move(a); break; }
      case GgufType::i64: { std::vector<int64_t> a; read_numbers<int64_t>(count, a); v.value = std::move(a); break; }
      case GgufType::u64: {
        // Same rule as scalars: int64 when every element fits, else kept unsigned.
        std::vector<uint64_t> a;
        read_numbers<uint64_t>(count, a);
        if (std::all_of(a.begin(), a.end(), [](uint64_t x) { return x <= kInt64Max; }))
          v.value = std::vector<int64_t>(a.begin(), a.end());
        else
          v.value = std::move(a);
        break;
      }
      case GgufType::f32: { std::vector<double> a; read_numbers<float>(count, a); v.value = std::move(a); break; }
      case GgufType::f64: { std::vector<double> a; read_numbers<double>(count, a); v.value = std::move(a); break; }
      case GgufType::boolean: {
        std::vector<bool> a(count);
        for (uint64_t i = 0; i < count; ++i) {
          uint8_t x = 0;
          cur_.read(x);
          a[i] = x != 0;
        }
        v.value = std::move(a);
        break;
      }
      case GgufType::string: {
        std::vector<std::string> a(count);
        for (uint64_t i = 0; i < count; ++i) {
          auto elem_what = [&] { return what + " element " + std::to_string(i); };
          BL_RETURN_IF_ERROR(read_string_lazy(a[i], elem_what));
          BL_RETURN_IF_ERROR(account_lazy(a[i].size(), elem_what));
        }
        v.value = std::move(a);
        break;
      }
      case GgufType::array: break;  // rejected above
    }
    return Status::Ok();
  }

  // A tiled type (bl<b>g<g>) is only read from a file that says its bytes are in the current
  // tile layout (dtype.h: kTileLayoutKey).
  Status check_tile_layout(const std::string& name, const DTypeInfo& info) const {
    for (const auto& kv : out_.metadata) {
      if (kv.key != kTileLayoutKey) continue;
      const int64_t* i = std::get_if<int64_t>(&kv.value.value);
      const uint64_t* u = std::get_if<uint64_t>(&kv.value.value);
      if ((i && *i == kTileLayoutVersion) || (u && *u == kTileLayoutVersion)) return Status::Ok();
      break;
    }
    return invalid_file(name + ": type " + std::string(info.name) + " needs " + kTileLayoutKey + " = " +
                        std::to_string(kTileLayoutVersion) +
                        " (16-row tiles); this file lacks it, so it was written by an older bitlight in another "
                        "layout: quantize the model again");
  }

  Status read_alignment() {
    for (const auto& kv : out_.metadata) {
      if (kv.key != "general.alignment") continue;
      const GgufValue& v = kv.value;
      const int64_t* i = std::get_if<int64_t>(&v.value);
      const uint64_t* u = std::get_if<uint64_t>(&v.value);
      if (v.type == GgufType::array || (!i && !u))
        return invalid_file(std::string("general.alignment must be an integer, found ") + gguf_type_name(v.type));
      uint64_t a = u ? *u : (*i > 0 ? static_cast<uint64_t>(*i) : 0);
      if (a == 0 || (a & (a - 1)) != 0 || a > (uint64_t{1} << 30))
        return invalid_file("general.alignment = " + (u ? std::to_string(*u) : std::to_string(*i)) +
                            " is not a power of two between 1 and 2^30");
      out_.alignment = static_cast<uint32_t>(a);
    }
    return Status::Ok();
  }

  Status parse_tensor_infos() {
    out_.tensors.reserve(n_tensors_);  // bounded by the file size check in parse_header
    std::unordered_set<std::string> seen;
    for (uint64_t i = 0; i < n_tensors_; ++i) {
      TensorInfo t;
      std::string where = "tensor #" + std::to_string(i);
      BL_RETURN_IF_ERROR(read_string(t.name, where + " name"));
      if (t.name.empty()) return invalid_file(where + " has an empty name");
      std::string name = "tensor " + printable_name(t.name);
      if (!seen.insert(t.name).second) return invalid_file("duplicate " + name);
      uint32_t n_dims = 0;
      BL_RETURN_IF_ERROR(read(n_dims, name + " n_dims"));
      uint32_t max_dims = std::min(limits_.max_dims, kMaxDims);
      if (n_dims == 0 || n_dims > max_dims)
        return invalid_file(name + ": n_dims = " + std::to_string(n_dims) + " (must be 1.." + std::to_string(max_dims) + ")");
      t.ne.resize(n_dims);
      for (uint32_t d = 0; d < n_dims; ++d) {
        uint64_t ne = 0;
        std::string dim = name + " ne[" + std::to_string(d) + "]";
        BL_RETURN_IF_ERROR(read(ne, dim));
        if (ne == 0 || ne > kInt64Max) return invalid_file(dim + " = " + std::to_string(ne) + " is out of range");
        t.ne[d] = static_cast<int64_t>(ne);
      }
      uint32_t dtype = 0;
      BL_RETURN_IF_ERROR(read(dtype, name + " dtype"));
      const DTypeInfo* info = dtype_info(dtype);
      if (!info) return invalid_file(name + ": unknown dtype id " + std::to_string(dtype));
      t.dtype = info->dtype;
      if (t.ne[0] % info->block_elems != 0)
        return invalid_file(name + ": ne[0] = " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                            std::string(info->name) + " block size (" + std::to_string(info->block_elems) + ")");
      uint64_t elements = 1;
      for (int64_t ne : t.ne) {
        auto p = checked_mul(elements, static_cast<uint64_t>(ne));
        if (!p || *p > kInt64Max) return invalid_file(name + ": shape " + shape_text(t.ne) + " overflows");
        elements = *p;
      }
      if (info->tile_rows > 1) BL_RETURN_IF_ERROR(check_tile_layout(name, *info));
      if ((elements / static_cast<uint64_t>(t.ne[0])) % static_cast<uint64_t>(info->tile_rows) != 0)
        return invalid_file(name + ": shape " + shape_text(t.ne) + " has " + std::to_string(elements / t.ne[0]) +
                            " rows, not a multiple of the " + std::string(info->name) + " tile of " +
                            std::to_string(info->tile_rows) + " rows");
      auto bytes = checked_mul(elements / static_cast<uint64_t>(info->block_elems), static_cast<uint64_t>(info->block_bytes));
      if (!bytes) return invalid_file(name + ": shape " + shape_text(t.ne) + " overflows in bytes");
      t.bytes = *bytes;
      BL_RETURN_IF_ERROR(read(t.offset, name + " data offset"));
      if (t.offset % out_.alignment != 0)
        return invalid_file(name + ": data offset " + std::to_string(t.offset) + " is not a multiple of the alignment (" +
                            std::to_string(out_.alignment) + ")");
      out_.tensors.push_back(std::move(t));
    }
    return Status::Ok();
  }

  Status place_tensor_data() {
    uint64_t size = cur_.size();
    auto data_offset = checked_add(cur_.pos(), out_.alignment - 1);
    if (!data_offset) return invalid_file("data section offset overflows");
    out_.data_offset = *data_offset / out_.alignment * out_.alignment;
    for (TensorInfo& t : out_.tensors) {
      auto start = checked_add(out_.data_offset, t.offset);
      auto end = start ? checked_add(*start, t.bytes) : std::nullopt;
      if (!end || *end > size)
        return invalid_file("tensor " + printable_name(t.name) + ": data [offset " + std::to_string(t.offset) + ", " +
                            std::to_string(t.bytes) + " bytes] runs past the end of the file (" + std::to_string(size) +
                            " bytes; data section starts at " + std::to_string(out_.data_offset) + ")");
      t.data = bytes_ + *start;
    }
    // Overlap: sorted by offset, each tensor must end before the next one starts.
    std::vector<const TensorInfo*> by_offset;
    by_offset.reserve(out_.tensors.size());
    for (const TensorInfo& t : out_.tensors) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      const TensorInfo& a = *by_offset[i - 1];
      const TensorInfo& b = *by_offset[i];
      if (a.offset + a.bytes > b.offset)  // both are within the file, so no overflow
        return invalid_file("tensors " + printable_name(a.name) + " [offset " + std::to_string(a.offset) + ", " +
                            std::to_string(a.bytes) + " bytes] and " + printable_name(b.name) + " [offset " +
                            std::to_string(b.offset) + "] overlap");
    }
    return Status::Ok();
  }

  const uint8_t* bytes_;
  ByteCursor cur_;
  const ParseLimits& limits_;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
  uint64_t metadata_bytes_ = 0;
  GgufContents out_;
};

}  // namespace

Expected<GgufContents> parse_gguf(const uint8_t* bytes, uint64_t size, const ParseLimits& limits) {
  return GgufParser(bytes, size, limits).parse();
}

GgufFile::GgufFile() = default;
GgufFile::~GgufFile() = default;

uint64_t GgufFile::file_bytes() const { return mapping_ ? mapping_->size() : 0; }

Expected<std::unique_ptr<GgufFile>> GgufFile::open(const std::string& path, const ParseLimits& limits) {
  BL_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapping, MappedFile::open(path));
  auto parsed = parse_gguf(mapping->data(), mapping->size(), limits);
  if (!parsed.ok()) return parsed.status().with_context(path);
  std::unique_ptr<GgufFile> file(new GgufFile());
  file->path_ = path;
  file->mapping_ = std::move(mapping);
  file->version_ = parsed->version;
  file->alignment_ = parsed->alignment;
  file->data_offset_ = parsed->data_offset;
  file->metadata_ = std::move(parsed->metadata);
  file->tensors_ = std::move(parsed->tensors);
  return file;
}

}  // namespace bl
