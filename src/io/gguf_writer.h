// Writes GGUF v3 files: metadata of every value type, then tensors, each tensor's data aligned
// to general.alignment (default 32).
//
// Tensor data comes either from memory the caller keeps alive until write(), or from a fill
// callback that write() calls with a buffer of exactly the tensor's bytes, one tensor at a time;
// so a multi-GB model (bitlight synth, quantize) streams to disk while holding at most its
// largest tensor in memory.
//
// The file is written to "<path>.tmp", flushed, and renamed to <path> only when complete: a
// failed or interrupted write never leaves a partial file under the final name.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/status.h"
#include "io/gguf_value.h"

namespace bl {

// Writes exactly `bytes` bytes of tensor data to dst (64-byte aligned); an error aborts write().
using TensorFill = std::function<Status(void* dst, uint64_t bytes)>;

class GgufWriter {
 public:
  // Metadata, written in the order keys are first set; setting a key again replaces its value.
  void set(std::string key, GgufValue value);
  void set_u8(std::string key, uint8_t v) { set(std::move(key), gguf_int(GgufType::u8, v)); }
  void set_i8(std::string key, int8_t v) { set(std::move(key), gguf_int(GgufType::i8, v)); }
  void set_u16(std::string key, uint16_t v) { set(std::move(key), gguf_int(GgufType::u16, v)); }
  void set_i16(std::string key, int16_t v) { set(std::move(key), gguf_int(GgufType::i16, v)); }
  void set_u32(std::string key, uint32_t v) { set(std::move(key), gguf_int(GgufType::u32, v)); }
  void set_i32(std::string key, int32_t v) { set(std::move(key), gguf_int(GgufType::i32, v)); }
  void set_u64(std::string key, uint64_t v) { set(std::move(key), gguf_u64(v)); }
  void set_i64(std::string key, int64_t v) { set(std::move(key), gguf_int(GgufType::i64, v)); }
  void set_f32(std::string key, float v) { set(std::move(key), gguf_float(GgufType::f32, v)); }
  void set_f64(std::string key, double v) { set(std::move(key), gguf_float(GgufType::f64, v)); }
  void set_bool(std::string key, bool v) { set(std::move(key), gguf_bool(v)); }
  void set_string(std::string key, std::string v) { set(std::move(key), gguf_string(std::move(v))); }
  void set_int_array(std::string key, GgufType elem_type, std::vector<int64_t> v) {
    set(std::move(key), gguf_int_array(elem_type, std::move(v)));
  }
  void set_float_array(std::string key, GgufType elem_type, std::vector<double> v) {
    set(std::move(key), gguf_float_array(elem_type, std::move(v)));
  }
  void set_bool_array(std::string key, std::vector<bool> v) { set(std::move(key), gguf_bool_array(std::move(v))); }
  void set_string_array(std::string key, std::vector<std::string> v) {
    set(std::move(key), gguf_string_array(std::move(v)));
  }
  // general.alignment as u32 (a power of two); tensor data is aligned to it.
  void set_alignment(uint32_t bytes) { set_u32("general.alignment", bytes); }
  bool remove(const std::string& key);
  const std::vector<GgufKeyValue>& metadata() const { return metadata_; }

  // Tensors, written in the order added. ne in GGUF order (ne[0] contiguous), 1..4 dims;
  // ne[0] a multiple of the dtype's block size. The first form copies from `data` (`bytes`
  // must equal the tensor's size) at write(); the pointer must stay valid until then.
  Status add_tensor(std::string name, DType dtype, std::vector<int64_t> ne, const void* data, uint64_t bytes);
  Status add_tensor(std::string name, DType dtype, std::vector<int64_t> ne, TensorFill fill);
  size_t tensor_count() const { return tensors_.size(); }

  // Writes the file (see the top of this header for the .tmp + rename protocol).
  Status write(const std::string& path) const;

 private:
  struct PendingTensor {
    std::string name;
    DType dtype;
    std::vector<int64_t> ne;
    uint64_t bytes = 0;
    const void* data = nullptr;  // either data or fill
    TensorFill fill;
  };
  Status check_new_tensor(const std::string& name, DType dtype, const std::vector<int64_t>& ne,
                          uint64_t& bytes_out) const;

  std::vector<GgufKeyValue> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace bl
