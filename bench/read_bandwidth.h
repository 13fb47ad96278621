// The memory read-bandwidth baseline: threads sum disjoint parts of a large buffer with
// 256-bit loads. GEMV at decode is a read stream of the weights, so this is its roofline.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "core/aligned_buffer.h"
#include "core/thread_pool.h"

namespace bl::bench {

// Sum of the floats in [p, p + n); n a multiple of 32. Four accumulators keep several loads
// in flight; the adds are far cheaper than the DRAM traffic. The same software prefetch as
// the matmul kernels (4 KiB ahead into L2), so the baseline is not weaker than what they reach.
__attribute__((target("avx2"))) inline float sum_floats(const float* p, size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  for (size_t i = 0; i < n; i += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(p + i) + 4096, _MM_HINT_T1);
    _mm_prefetch(reinterpret_cast<const char*>(p + i) + 4096 + 64, _MM_HINT_T1);
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  float s = 0;
  for (float v : lanes) s += v;
  return s;
}

// A buffer of `bytes` (touched, so it is backed by memory) read in parallel by the pool.
class ReadBandwidth {
 public:
  explicit ReadBandwidth(size_t bytes) {
    buf_.resize(bytes, AlignedBuffer::Pages::huge);  // as the weights the matmul benchmark streams
    std::memset(buf_.data(), 0, bytes);
  }
  size_t bytes() const { return buf_.bytes(); }

  // One full pass over the buffer; returns the sum so the reads cannot be optimised away.
  float pass(ThreadPool& pool) {
    const size_t n = buf_.bytes() / sizeof(float);
    float partial[64] = {};
    pool.run([&](int t, int nt) {
      const size_t chunk = n / nt / 32 * 32;
      const size_t begin = chunk * t, len = t == nt - 1 ? (n - begin) / 32 * 32 : chunk;
      partial[t] = sum_floats(buf_.as<float>() + begin, len);
    });
    float s = 0;
    for (int t = 0; t < pool.size(); ++t) s += partial[t];
    return s;
  }

 private:
  AlignedBuffer buf_;
};

}  // namespace bl::bench
