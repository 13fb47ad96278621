// Prefill attention on the CUDA backend (kernels/cuda/prefill_attention.cu: tensor cores, for
// chunks of >= 17 tokens over f16 caches with head_dim 64 or 128) against the scalar reference
// backend: head dims 64 and 128, GQA ratios 1, 3, 4, 6, odd token counts, chunks that start
// at a later position (chunked prefill: queries p0..p0+n-1 over slots 0..p0+n-1), positions
// out of order, caches whose slots past the last position hold random data (reading one more
// slot than allowed shows), outputs poisoned with NaN before each run. Also: below the token
// threshold, and with f32 caches, the split-KV kernel still answers (at its fp32 tolerance).
// Without a GPU every test skips ("no CUDA device").
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "gpu/cuda_test_util.h"
#include "kernels/cuda/launchers.h"
#include "ops/backend_op_cases.h"
#include "quant/quant.h"

namespace bl {
namespace {

// Tolerance of the tensor-core kernel, as max |out - ref| / max |ref| (ref in fp64): q and the
// softmax weights p are rounded to fp16 (2^-12 relative each, the cache is fp16 already), so a
// score moves by up to 2^-12 sum_i |q_i k_i| scale (a few 1e-3 here, the terms' errors partly
// cancelling) and the output, a p-weighted mean of v, by about as much of its size. Reading one
// slot too many or too few, or the wrong head, is off by >= 1e-2 in the short-context cases
// (p0 = 0) and by O(1) for their first queries.
constexpr double kTensorCoreTolerance = 3e-3;
// The split-KV kernel: fp32 throughout (ops/backend_op_cases.h: attention).
constexpr double kFp32Tolerance = 1e-4;

struct Case {
  int head_dim, n_head, n_head_kv;
  int64_t n, p0, n_ctx;
  float q_scale = 1.0f;   // q uniform in [-q_scale, q_scale]; k, v in [-2, 2]
  bool shuffled = false;  // positions p0..p0+n-1 in a random order
  DType cache = DType::F16;
};

std::string describe(const Case& c) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "head_dim=%d heads=%d/%d n=%lld p0=%lld n_ctx=%lld q_scale=%g%s %s",
                c.head_dim, c.n_head, c.n_head_kv, static_cast<long long>(c.n), static_cast<long long>(c.p0),
                static_cast<long long>(c.n_ctx), c.q_scale, c.shuffled ? " shuffled" : "",
                std::string(dtype_name(c.cache)).c_str());
  return buf;
}

Tensor alloc_and_write(Backend& b, DType t, std::array<int64_t, 4> ne, const void* bytes, size_t n_bytes) {
  auto r = b.alloc(t, ne);
  EXPECT_TRUE(r.ok()) << r.status().message();
  if (!r.ok()) return {};
  if (bytes) b.write(*r, bytes, n_bytes, 0);
  return *r;
}

// max |cuda - ref| / max |ref| of one case's attention output (infinity for a NaN left in it).
double run_case(Backend& cuda, const Case& c, std::mt19937& rng) {
  auto ref = make_reference_backend();
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(c.head_dim * c.n_head * c.n));
  for (float& x : q) x = c.q_scale * unit(rng);
  const int64_t cache_elems = int64_t{c.head_dim} * c.n_head_kv * c.n_ctx;
  std::vector<float> kv(static_cast<size_t>(cache_elems));
  std::vector<uint8_t> k_bytes(row_bytes(c.cache, cache_elems)), v_bytes(k_bytes.size());
  for (float& x : kv) x = 2.0f * unit(rng);
  quantize_row(c.cache, kv.data(), k_bytes.data(), cache_elems);
  for (float& x : kv) x = 2.0f * unit(rng);
  quantize_row(c.cache, kv.data(), v_bytes.data(), cache_elems);
  std::vector<int32_t> pos(static_cast<size_t>(c.n));
  for (int64_t i = 0; i < c.n; ++i) pos[i] = static_cast<int32_t>(c.p0 + i);
  if (c.shuffled) std::shuffle(pos.begin(), pos.end(), rng);
  const std::vector<float> poison(q.size(), NAN);

  const std::array<int64_t, 4> q_ne = {c.head_dim, c.n_head, c.n, 1},
                               cache_ne = {c.head_dim, c.n_head_kv, c.n_ctx, 1};
  const AttentionParams p{c.n_head, c.n_head_kv, c.head_dim,
                          1.0f / std::sqrt(static_cast<float>(c.head_dim))};
  std::vector<float> got(q.size()), want(q.size());
  for (Backend* b : {&cuda, ref.get()}) {
    Tensor tq = alloc_and_write(*b, DType::F32, q_ne, q.data(), q.size() * sizeof(float));
    Tensor tk = alloc_and_write(*b, c.cache, cache_ne, k_bytes.data(), k_bytes.size());
    Tensor tv = alloc_and_write(*b, c.cache, cache_ne, v_bytes.data(), v_bytes.size());
    Tensor tp = alloc_and_write(*b, DType::I32, {c.n, 1, 1, 1}, pos.data(), pos.size() * sizeof(int32_t));
    Tensor out = alloc_and_write(*b, DType::F32, q_ne, poison.data(), poison.size() * sizeof(float));
    b->attention(tq, tk, tv, tp, p, out);
    b->read(out, (b == &cuda ? got : want).data(), q.size() * sizeof(float), 0);
    EXPECT_TRUE(b->status().ok()) << b->name() << ": " << b->status().message();
  }
  return op_cases::relative_max_error(got, want);
}

void expect_cases(const std::vector<Case>& cases, double tolerance) {
  auto cuda = open_or_fail();
  ASSERT_TRUE(cuda);
  std::mt19937 rng(2024);
  double worst = 0.0;
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    const double err = run_case(*cuda, c, rng);
    EXPECT_LE(err, tolerance);
    worst = std::max(worst, err);
  }
  std::printf("[ prefill attention ] max error %.3g (tolerance %.3g)\n", worst, tolerance);
}

TEST(CudaPrefillAttention, MatchesReference) {
  SKIP_WITHOUT_GPU();
  ASSERT_GE(17, cuda::kPrefillAttentionMinTokens) << "the cases below would not reach the tensor-core kernel";
  expect_cases(
      {
          {64, 8, 8, 17, 0, 40},                // one partial query tile, one KV tile
          {64, 8, 2, 100, 0, 128},              // GQA 4, two query tiles, the last partial
          {64, 6, 1, 65, 37, 160},              // GQA 6, a chunk starting mid-tile
          {128, 8, 8, 17, 300, 400},            // a short chunk late in the cache
          {128, 32, 8, 129, 0, 200},            // Llama-3 heads, 3 query tiles
          {128, 12, 4, 257, 130, 400},          // GQA 3, chunk offset not a multiple of 64
          {128, 4, 2, 64, 64, 128},             // the chunk ends on the last cache slot
          {64, 8, 2, 33, 10, 100, 1.0f, true},  // positions out of order
          {128, 8, 2, 47, 5, 90, 1.0f, true},
          {64, 9, 3, 50, 200, 512, 8.0f},  // large scores: the running max rescales
          {128, 8, 2, 600, 0, 640},        // 10 query tiles, 10 KV tiles
      },
      kTensorCoreTolerance);
}

// Decode-sized batches and f32 caches keep the fp32 split-KV kernel, and its tolerance.
TEST(CudaPrefillAttention, SplitKvKernelBelowThresholdAndForF32Caches) {
  SKIP_WITHOUT_GPU();
  const int64_t below = cuda::kPrefillAttentionMinTokens - 1;
  expect_cases(
      {
          {128, 8, 2, below, 0, 64},
          {64, 9, 3, below, 300, 400},
          {128, 8, 2, 40, 20, 100, 1.0f, false, DType::F32},
          {64, 6, 1, 70, 0, 80, 1.0f, true, DType::F32},
      },
      kFp32Tolerance);
}

}  // namespace
}  // namespace bl
