// An owned, 64-byte aligned host allocation (one cache line; enough for AVX-512 loads).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

namespace bl {

class AlignedBuffer {
 public:
  static constexpr size_t kAlignment = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t bytes) { resize(bytes); }
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : data_(std::exchange(o.data_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    std::swap(data_, o.data_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }

  // Returns false when the allocation failed (the buffer is then empty).
  bool resize(size_t bytes) {
    std::free(data_);
    bytes_ = 0;
    size_t rounded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    data_ = rounded ? std::aligned_alloc(kAlignment, rounded) : nullptr;
    if (data_ || !rounded) bytes_ = bytes;
    return data_ != nullptr || !rounded;
  }

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace bl
