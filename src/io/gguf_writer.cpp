#include "io/gguf_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "core/aligned_buffer.h"
#include "core/checked_math.h"
#include "io/gguf_reader.h"

namespace bl {
namespace {

constexpr uint32_t kWriteVersion = 3;

// The header (everything before the tensor data) is built in memory: it is small next to the
// data (a 150k-token vocabulary is a few MB).
class HeaderBytes {
 public:
  template <typename T>
  void put(T v) {
    const char* p = reinterpret_cast<const char*>(&v);
    bytes_.append(p, sizeof(T));
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    bytes_ += s;
  }
  void pad_to(uint64_t alignment) { bytes_.resize(align_up(bytes_.size(), alignment), '\0'); }
  const std::string& bytes() const { return bytes_; }

 private:
  std::string bytes_;
};

bool fits(GgufType t, int64_t v) {
  switch (t) {
    case GgufType::u8: return v >= 0 && v <= UINT8_MAX;
    case GgufType::i8: return v >= INT8_MIN && v <= INT8_MAX;
    case GgufType::u16: return v >= 0 && v <= UINT16_MAX;
    case GgufType::i16: return v >= INT16_MIN && v <= INT16_MAX;
    case GgufType::u32: return v >= 0 && v <= UINT32_MAX;
    case GgufType::i32: return v >= INT32_MIN && v <= INT32_MAX;
    case GgufType::u64: return v >= 0;
    case GgufType::i64: return true;
    default: return false;
  }
}

void put_int(HeaderBytes& out, GgufType t, int64_t v) {
  switch (t) {
    case GgufType::u8: out.put(static_cast<uint8_t>(v)); break;
    case GgufType::i8: out.put(static_cast<int8_t>(v)); break;
    case GgufType::u16: out.put(static_cast<uint16_t>(v)); break;
    case GgufType::i16: out.put(static_cast<int16_t>(v)); break;
    case GgufType::u32: out.put(static_cast<uint32_t>(v)); break;
    case GgufType::i32: out.put(static_cast<int32_t>(v)); break;
    case GgufType::u64: out.put(static_cast<uint64_t>(v)); break;
    case GgufType::i64: out.put(v); break;
    default: break;
  }
}

void put_float(HeaderBytes& out, GgufType t, double v) {
  if (t == GgufType::f32)
    out.put(static_cast<float>(v));
  else
    out.put(v);
}

Status mismatch(const std::string& key, const GgufValue& v) {
  return invalid_argument("metadata key '" + key + "': declared " + gguf_type_text(v) +
                          " but holds a value of another kind");
}

// Serializes one value as its declared type (checking that it holds that kind of value and
// that integers fit the declared width).
Status put_value(HeaderBytes& out, const std::string& key, const GgufValue& v) {
  const GgufType t = v.type == GgufType::array ? v.elem_type : v.type;
  if (v.type == GgufType::array) {
    if (t == GgufType::array) return invalid_argument("metadata key '" + key + "': arrays of arrays cannot be written");
    out.put(static_cast<uint32_t>(t));
  }
  auto out_of_range = [&](const std::string& x) {
    return invalid_argument("metadata key '" + key + "': " + x + " does not fit in " + gguf_type_name(t));
  };
  return std::visit(
      [&](const auto& x) -> Status {
        using X = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<X, int64_t>) {
          if (v.type == GgufType::array || !gguf_is_integer(t)) return mismatch(key, v);
          if (!fits(t, x)) return out_of_range(std::to_string(x));
          put_int(out, t, x);
        } else if constexpr (std::is_same_v<X, uint64_t>) {
          if (v.type != GgufType::u64) return mismatch(key, v);
          out.put(x);
        } else if constexpr (std::is_same_v<X, double>) {
          if (v.type == GgufType::array || !gguf_is_float(t)) return mismatch(key, v);
          put_float(out, t, x);
        } else if constexpr (std::is_same_v<X, bool>) {
          if (v.type != GgufType::boolean) return mismatch(key, v);
          out.put(static_cast<uint8_t>(x));
        } else if constexpr (std::is_same_v<X, std::string>) {
          if (v.type != GgufType::string) return mismatch(key, v);
          out.put_string(x);
        } else if constexpr (std::is_same_v<X, std::vector<int64_t>>) {
          if (v.type != GgufType::array || !gguf_is_integer(t)) return mismatch(key, v);
          out.put<uint64_t>(x.size());
          for (int64_t e : x) {
            if (!fits(t, e)) return out_of_range("element " + std::to_string(e));
            put_int(out, t, e);
          }
        } else if constexpr (std::is_same_v<X, std::vector<uint64_t>>) {
          if (v.type != GgufType::array || t != GgufType::u64) return mismatch(key, v);
          out.put<uint64_t>(x.size());
          for (uint64_t e : x) out.put(e);
        } else if constexpr (std::is_same_v<X, std::vector<double>>) {
          if (v.type != GgufType::array || !gguf_is_float(t)) return mismatch(key, v);
          out.put<uint64_t>(x.size());
          for (double e : x) put_float(out, t, e);
        } else if constexpr (std::is_same_v<X, std::vector<bool>>) {
          if (v.type != GgufType::array || t != GgufType::boolean) return mismatch(key, v);
          out.put<uint64_t>(x.size());
          for (bool e : x) out.put(static_cast<uint8_t>(e));
        } else {
          static_assert(std::is_same_v<X, std::vector<std::string>>);
          if (v.type != GgufType::array || t != GgufType::string) return mismatch(key, v);
          out.put<uint64_t>(x.size());
          for (const std::string& e : x) out.put_string(e);
        }
        return Status::Ok();
      },
      v.value);
}

Status write_all(int fd, const void* data, uint64_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd, p, std::min<uint64_t>(bytes, 1u << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return io_error("writing '" + path + "': " + std::strerror(errno));
    }
    p += n;
    bytes -= static_cast<uint64_t>(n);
  }
  return Status::Ok();
}

Status write_zeros(int fd, uint64_t bytes, const std::string& path) {
  static const char zeros[256] = {};
  while (bytes > 0) {
    uint64_t n = std::min<uint64_t>(bytes, sizeof zeros);
    BL_RETURN_IF_ERROR(write_all(fd, zeros, n, path));
    bytes -= n;
  }
  return Status::Ok();
}

// Closes and removes the temporary file unless released (after a successful rename).
class TempFile {
 public:
  TempFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  int fd() const { return fd_; }
  Status close() {
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) return io_error("closing '" + path_ + "': " + std::strerror(errno));
    return Status::Ok();
  }
  void release() { path_.clear(); }

 private:
  int fd_;
  std::string path_;
};

}  // namespace

void GgufWriter::set(std::string key, GgufValue value) {
  for (GgufKeyValue& kv : metadata_) {
    if (kv.key == key) {
      kv.value = std::move(value);
      return;
    }
  }
  metadata_.push_back({std::move(key), std::move(value)});
}

bool GgufWriter::remove(const std::string& key) {
  for (auto it = metadata_.begin(); it != metadata_.end(); ++it) {
    if (it->key == key) {
      metadata_.erase(it);
      return true;
    }
  }
  return false;
}

Status GgufWriter::check_new_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& ne,
                                    uint64_t& bytes_out) const {
  if (name.empty()) return invalid_argument("tensor name is empty");
  for (const PendingTensor& t : tensors_)
    if (t.name == name) return invalid_argument("tensor '" + name + "' added twice");
  const DTypeInfo* info = dtype_info(dtype);
  if (!info) return invalid_argument("tensor '" + name + "': unknown dtype id " + std::to_string(static_cast<uint32_t>(dtype)));
  if (ne.empty() || ne.size() > 4)
    return invalid_argument("tensor '" + name + "': " + std::to_string(ne.size()) + " dims (must be 1..4)");
  uint64_t elements = 1;
  for (int64_t n : ne) {
    if (n <= 0) return invalid_argument("tensor '" + name + "': dimension " + std::to_string(n) + " is not positive");
    auto p = checked_mul(elements, static_cast<uint64_t>(n));
    if (!p) return invalid_argument("tensor '" + name + "': shape overflows");
    elements = *p;
  }
  if (ne[0] % info->block_elems != 0)
    return invalid_argument("tensor '" + name + "': ne[0] = " + std::to_string(ne[0]) + " is not a multiple of the " +
                            std::string(info->name) + " block size (" + std::to_string(info->block_elems) + ")");
  if ((elements / static_cast<uint64_t>(ne[0])) % static_cast<uint64_t>(info->tile_rows) != 0)
    return invalid_argument("tensor '" + name + "': " + std::to_string(elements / ne[0]) + " rows, not a multiple of the " +
                            std::string(info->name) + " tile of " + std::to_string(info->tile_rows) + " rows");
  auto bytes = checked_mul(elements / static_cast<uint64_t>(info->block_elems), static_cast<uint64_t>(info->block_bytes));
  if (!bytes) return invalid_argument("tensor '" + name + "': size in bytes overflows");
  bytes_out = *bytes;
  return Status::Ok();
}

Status GgufWriter::add_tensor(std::string name, DType dtype, std::vector<int64_t> ne, const void* data,
                              uint64_t bytes) {
  uint64_t expected = 0;
  BL_RETURN_IF_ERROR(check_new_tensor(name, dtype, ne, expected));
  if (bytes != expected)
    return invalid_argument("tensor '" + name + "': " + std::to_string(bytes) + " bytes given, its shape needs " +
                            std::to_string(expected));
  if (!data && bytes) return invalid_argument("tensor '" + name + "': data is null");
  if (dtype_info(dtype)->tile_rows > 1) set_u32(kTileLayoutKey, kTileLayoutVersion);
  tensors_.push_back({std::move(name), dtype, std::move(ne), bytes, data, nullptr});
  return Status::Ok();
}

Status GgufWriter::add_tensor(std::string name, DType dtype, std::vector<int64_t> ne, TensorFill fill) {
  uint64_t bytes = 0;
  BL_RETURN_IF_ERROR(check_new_tensor(name, dtype, ne, bytes));
  if (!fill) return invalid_argument("tensor '" + name + "': fill callback is empty");
  if (dtype_info(dtype)->tile_rows > 1) set_u32(kTileLayoutKey, kTileLayoutVersion);
  tensors_.push_back({std::move(name), dtype, std::move(ne), bytes, nullptr, std::move(fill)});
  return Status::Ok();
}

Status GgufWriter::write(const std::string& path) const {
  // Alignment: general.alignment when set, else the GGUF default.
  uint64_t alignment = kGgufDefaultAlignment;
  for (const GgufKeyValue& kv : metadata_) {
    if (kv.key != "general.alignment") continue;
    const int64_t* a = std::get_if<int64_t>(&kv.value.value);
    if (kv.value.type == GgufType::array || !a || *a <= 0 || (*a & (*a - 1)) != 0 || *a > (int64_t{1} << 30))
      return invalid_argument("general.alignment must be a power of two between 1 and 2^30");
    alignment = static_cast<uint64_t>(*a);
  }

  HeaderBytes header;
  header.put(kGgufMagic);
  header.put(kWriteVersion);
  header.put<uint64_t>(tensors_.size());
  header.put<uint64_t>(metadata_.size());
  for (const GgufKeyValue& kv : metadata_) {
    if (kv.key.empty()) return invalid_argument("metadata key is empty");
    header.put_string(kv.key);
    header.put(static_cast<uint32_t>(kv.value.type));
    BL_RETURN_IF_ERROR(put_value(header, kv.key, kv.value));
  }
  std::vector<uint64_t> offsets;  // from the start of the data section
  uint64_t data_bytes = 0;
  uint64_t max_fill_bytes = 0;
  for (const PendingTensor& t : tensors_) {
    header.put_string(t.name);
    header.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t n : t.ne) header.put<uint64_t>(static_cast<uint64_t>(n));
    header.put(static_cast<uint32_t>(t.dtype));
    header.put<uint64_t>(data_bytes);
    offsets.push_back(data_bytes);
    data_bytes = align_up(data_bytes + t.bytes, alignment);
    if (t.fill) max_fill_bytes = std::max(max_fill_bytes, t.bytes);
  }
  header.pad_to(alignment);

  AlignedBuffer fill_buffer;
  if (max_fill_bytes > 0 && !fill_buffer.resize(max_fill_bytes))
    return out_of_memory("cannot allocate " + std::to_string(max_fill_bytes) + " bytes to generate tensor data");

  const std::string tmp_path = path + ".tmp";
  int fd = ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return io_error("cannot create '" + tmp_path + "': " + std::strerror(errno));
  TempFile tmp(fd, tmp_path);

  BL_RETURN_IF_ERROR(write_all(fd, header.bytes().data(), header.bytes().size(), tmp_path));
  uint64_t written = 0;  // bytes of the data section so far
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const PendingTensor& t = tensors_[i];
    BL_RETURN_IF_ERROR(write_zeros(fd, offsets[i] - written, tmp_path));
    const void* src = t.data;
    if (t.fill) {
      Status s = t.fill(fill_buffer.data(), t.bytes);
      if (!s.ok()) return s.with_context("generating tensor '" + t.name + "'");
      src = fill_buffer.data();
    }
    BL_RETURN_IF_ERROR(write_all(fd, src, t.bytes, tmp_path));
    written = offsets[i] + t.bytes;
  }
  // Pad the last tensor too, so the file size is a multiple of the alignment like llama.cpp's.
  BL_RETURN_IF_ERROR(write_zeros(fd, data_bytes - written, tmp_path));

  if (::fsync(fd) != 0) return io_error("flushing '" + tmp_path + "': " + std::strerror(errno));
  BL_RETURN_IF_ERROR(tmp.close());
  if (::rename(tmp_path.c_str(), path.c_str()) != 0)
    return io_error("renaming '" + tmp_path + "' to '" + path + "': " + std::strerror(errno));
  tmp.release();
  return Status::Ok();
}

}  // namespace bl
