// An owned, 64-byte aligned host allocation (one cache line; enough for AVX-512 loads).
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

#if defined(__linux__)
#include <sys/mman.h>
#endif

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

  // Huge pages: streams of weights read at decode (and the bandwidth baseline they are compared
  // with) lose TLB misses and page-boundary stops of the prefetchers on 4 KiB pages; Linux backs
  // a 2 MiB-aligned region with 2 MiB pages where transparent huge pages are allowed (madvise).
  enum class Pages { normal, huge };
  static constexpr size_t kHugePage = size_t{2} << 20;

  // Returns false when the allocation failed (the buffer is then empty).
  bool resize(size_t bytes, Pages pages = Pages::normal) {
    std::free(data_);
    bytes_ = 0;
    const bool huge = pages == Pages::huge && bytes >= kHugePage;
    const size_t align = huge ? kHugePage : kAlignment;
    size_t rounded = (bytes + align - 1) / align * align;
    data_ = rounded ? std::aligned_alloc(align, rounded) : nullptr;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (data_ && huge) madvise(data_, rounded, MADV_HUGEPAGE);  // a hint: without THP, 4 KiB pages
#endif
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
