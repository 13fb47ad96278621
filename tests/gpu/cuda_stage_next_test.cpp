// A GEMV that adds into the residual stream staging the next GEMV's x (StageNext,
// kernels/cuda/gemv_stage_next.cuh; MatmulFusion::norm_next): the bytes it stages against
// quantize_x_once_kernel's on the same x, the next GEMV on them against W x' in fp64, and the
// backend's hint path against the same ops without the hint. Without a GPU every test skips.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gpu/cuda_test_util.h"
#include "quant/quant.h"

namespace bl {
namespace {

constexpr DType kProducerTypes[] = {DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K};

struct HostWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> w;  // dequantized, [rows][cols]
};

HostWeight random_weight(DType t, int64_t cols, int64_t rows, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  HostWeight h;
  std::vector<float> values(static_cast<size_t>(cols * rows));
  for (float& v : values) v = dist(rng);
  h.bytes.resize(static_cast<size_t>(rows) * row_bytes(t, cols));
  quantize_matrix(t, values.data(), h.bytes.data(), rows, cols);
  h.w.resize(values.size());
  for (int64_t r = 0; r < rows; ++r) dequantize_matrix_row(t, h.bytes.data(), cols, r, h.w.data() + r * cols);
  return h;
}

// The view the backend gives the launchers of a weight it uploaded (tiled where tileable).
cuda::WeightView uploaded_view(const Tensor& w) {
  cuda::WeightView v;
  v.data = w.data, v.dtype = w.dtype, v.cols = w.ne[0], v.rows = w.rows(), v.row_bytes = w.row_size();
  v.tiled = cuda::weight_tileable(w.dtype, w.ne[0]);
  return v;
}

// A down GEMV (w_down: cols -> rows; its x' = silu(gate) * up) that adds into a residual stream
// of `rows` values, and the normed GEMV after it (w_next: rows -> next_rows, norm g): random on
// the host, drawn in this order, and the weights, gate, up and g on the device with a scratch for
// x quantized once. false (with a test failure) when an upload or allocation failed.
struct DownThenNext {
  HostWeight down, next;
  std::vector<float> gate, up, residual, g;
  Tensor w_down, w_next, gate_t, up_t, g_t, scratch;
};

bool make_down_then_next(Backend& backend, DType t_down, DType t_next, int64_t cols, int64_t rows, int64_t next_rows,
                         std::mt19937_64& rng, DownThenNext& d) {
  d.down = random_weight(t_down, cols, rows, rng);
  d.next = random_weight(t_next, rows, next_rows, rng);
  d.gate = random_vector(cols, 4.0f, rng);
  d.up = random_vector(cols, 1.0f, rng);
  d.residual = random_vector(rows, 1.0f, rng);
  d.g = random_vector(rows, 1.0f, rng);
  auto w_down = backend.upload_weight(make_tensor_2d(d.down.bytes.data(), t_down, cols, rows));
  auto w_next = backend.upload_weight(make_tensor_2d(d.next.bytes.data(), t_next, rows, next_rows));
  auto gate_t = backend.alloc(DType::F32, {cols, 1, 1, 1});
  auto up_t = backend.alloc(DType::F32, {cols, 1, 1, 1});
  auto g_t = backend.alloc(DType::F32, {rows, 1, 1, 1});
  auto scratch = backend.alloc(DType::F32, {cols + rows, 1, 1, 1});
  if (!(w_down.ok() && w_next.ok() && gate_t.ok() && up_t.ok() && g_t.ok() && scratch.ok())) {
    ADD_FAILURE() << "upload or allocation failed";
    return false;
  }
  d.w_down = *w_down, d.w_next = *w_next, d.gate_t = *gate_t, d.up_t = *up_t, d.g_t = *g_t, d.scratch = *scratch;
  backend.write(d.gate_t, d.gate.data(), d.gate.size() * sizeof(float));
  backend.write(d.up_t, d.up.data(), d.up.size() * sizeof(float));
  backend.write(d.g_t, d.g.data(), d.g.size() * sizeof(float));
  return true;
}

// Max over rows of |y - W x'| / bound, x' = h * g / rms(h) in fp64, bound = 1e-5 sum |w x'| plus
// the int8 rounding of x' per 32 (each value by up to max|x'_block| / 254). Passes at <= 1.
double error_against_normed(const HostWeight& wc, int64_t cols, int64_t rows, const std::vector<float>& h,
                            const std::vector<float>& g, float eps, const std::vector<float>& y) {
  double ss = 0.0;
  for (float v : h) ss += static_cast<double>(v) * v;
  const double inv_rms = 1.0 / std::sqrt(ss / static_cast<double>(cols) + eps);
  std::vector<double> x(static_cast<size_t>(cols)), half_step(static_cast<size_t>(cols));
  for (int64_t k = 0; k < cols; ++k) x[k] = h[k] * inv_rms * g[k];
  for (int64_t b = 0; b < cols; b += 32) {
    double amax = 0.0;
    for (int64_t k = b; k < b + 32; ++k) amax = std::max(amax, std::fabs(x[k]));
    for (int64_t k = b; k < b + 32; ++k) half_step[k] = amax / 127.0 / 2.0;
  }
  double worst = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    double ref = 0.0, size = 0.0, rounding = 0.0;
    for (int64_t k = 0; k < cols; ++k) {
      const double w = wc.w[r * cols + k];
      ref += w * x[k], size += std::fabs(w * x[k]), rounding += std::fabs(w) * half_step[k];
    }
    if (!std::isfinite(y[r])) return INFINITY;
    worst = std::max(worst, std::fabs(y[r] - ref) / (1e-5 * size + 1.001 * rounding));
  }
  return worst;
}

// The GEMV with x quantized once (the down GEMV) staging the next x, every dp4a format, 2048 and
// 4096 rows (64 / 128 partial sums), then the next GEMV (Q4_0 on dp4a, bl4g128 on the bl GEMV)
// on the staged bytes.
TEST(CudaStageNext, StagedBytesEqualTheQuantizeKernelsAndTheNextGemvIsRight) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(2204);
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  const float eps = 1e-5f;
  for (DType tp : kProducerTypes)
    for (int64_t rows : {2048, 4096})
      for (DType tc : {DType::Q4_0, DType::BL4G128}) {
        const int64_t cols = 4096, next_rows = 272;  // producer in, next GEMV out (17 bl tiles)
        SCOPED_TRACE(std::string(dtype_name(tp)) + " rows=" + std::to_string(rows) + " next " + std::string(dtype_name(tc)));
        DownThenNext d;
        ASSERT_TRUE(make_down_then_next(*backend, tp, tc, cols, rows, next_rows, rng, d));
        auto h = backend->alloc(DType::F32, {rows, 1, 1, 1});
        auto y = backend->alloc(DType::F32, {next_rows, 1, 1, 1});
        auto staged = backend->alloc(DType::I8, {cuda::stage_next_bytes(rows), 1, 1, 1});
        // The quantize kernel's output: the same quantized bytes, then rows / 2048 partial sums.
        auto reference = backend->alloc(DType::I8, {cuda::stage_next_bytes(rows), 1, 1, 1});
        ASSERT_TRUE(h.ok() && y.ok() && staged.ok() && reference.ok());
        backend->write(*h, d.residual.data(), d.residual.size() * sizeof(float));
        const std::vector<uint8_t> poison(static_cast<size_t>(staged->bytes()), 0xff);
        backend->write(*staged, poison.data(), poison.size());
        const std::vector<uint8_t> poison_y(y->bytes(), 0xff);
        backend->write(*y, poison_y.data(), poison_y.size());
        backend->synchronize();  // the launches below are on their own stream

        const cuda::WeightView vp = uploaded_view(d.w_down), vc = uploaded_view(d.w_next);
        ASSERT_TRUE(cuda::gemv_stages_next_applies(vp)) << "needs an sm_90 GPU (thread-block clusters)";
        ASSERT_TRUE(cuda::gemv_staged_applies(vc));
        const cuda::StageNext next{d.g_t.as<float>(), static_cast<uint8_t*>(staged->data)};
        cuda::GemvFusion down{.up = d.up_t.as<float>(), .accumulate = true, .stage_next = next};
        ASSERT_TRUE(cuda::launch_gemv_x_quantized_once(vp, d.gate_t.as<float>(), 1, h->as<float>(), nullptr, down,
                                                       d.scratch.data, d.scratch.bytes(), stream));
        const cuda::GemvFusion normed{.norm = d.g_t.as<float>(), .eps = eps};
        const cuda::StagedX ref = cuda::launch_quantize_x_once(h->as<float>(), normed, rows, reference->data, stream);
        ASSERT_TRUE(cuda::launch_gemv_staged(vc, cuda::staged_next_x(next, rows), y->as<float>(), nullptr, normed,
                                             stream));
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        ASSERT_EQ(cudaGetLastError(), cudaSuccess);

        // The int8 values and their {scale, sum}: the same bytes as the quantize kernel's.
        const cuda::StagedX mine = cuda::staged_next_x(next, rows);
        const auto qx_bytes = reinterpret_cast<const uint8_t*>(mine.sumsq_partials) - mine.bytes;  // int8 + scales
        ASSERT_EQ(reinterpret_cast<const uint8_t*>(ref.sumsq_partials) - ref.bytes, qx_bytes);
        ASSERT_EQ(mine.n_partials, rows / 32);
        std::vector<uint8_t> got(static_cast<size_t>(staged->bytes())), want(static_cast<size_t>(reference->bytes()));
        backend->read(*staged, got.data(), got.size());
        backend->read(*reference, want.data(), want.size());
        EXPECT_EQ(std::memcmp(got.data(), want.data(), static_cast<size_t>(qx_bytes)), 0);
        // The sums of h^2: per 32 rows against the kernel's per 2048, the same total to rounding.
        std::vector<float> partials(static_cast<size_t>(rows / 32)), ref_partials(static_cast<size_t>(ref.n_partials));
        std::memcpy(partials.data(), got.data() + qx_bytes, partials.size() * sizeof(float));
        std::memcpy(ref_partials.data(), want.data() + qx_bytes, ref_partials.size() * sizeof(float));
        double total = 0.0, ref_total = 0.0;
        for (float v : partials) total += v;
        for (float v : ref_partials) ref_total += v;
        EXPECT_NEAR(total, ref_total, 1e-5 * ref_total);

        std::vector<float> h_after(static_cast<size_t>(rows)), y_got(static_cast<size_t>(next_rows));
        backend->read(*h, h_after.data(), h_after.size() * sizeof(float));
        backend->read(*y, y_got.data(), y_got.size() * sizeof(float));
        ASSERT_TRUE(backend->status().ok());
        EXPECT_LE(error_against_normed(d.next, rows, next_rows, h_after, d.g, eps, y_got), 1.0);
      }
  cudaStreamDestroy(stream);
}

// Through the backend: x += W_down x', then the next layer's normed GEMV on x, with the
// norm_next hint and without it, from the same x. x must come out with the same bits (the sums
// are the same dot products), and the next GEMV's output within the fp64 bound either way.
TEST(CudaStageNext, HintGivesTheResultsOfThePlainOps) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(2205);
  const int64_t cols = 14336, rows = 4096, next_rows = 6144;  // the 8B down GEMV, then q, k, v
  const float eps = 1e-5f;
  for (DType t : {DType::Q4_0, DType::Q4_K}) {
    SCOPED_TRACE(dtype_name(t));
    DownThenNext d;
    ASSERT_TRUE(make_down_then_next(*backend, t, t, cols, rows, next_rows, rng, d));
    ASSERT_TRUE(cuda::gemv_stages_next_applies(uploaded_view(d.w_down))) << "needs an sm_90 GPU";
    std::vector<float> x_after[2], y_got[2];
    for (int hinted = 0; hinted < 2; ++hinted) {
      auto x = backend->alloc(DType::F32, {rows, 1, 1, 1});
      auto y = backend->alloc(DType::F32, {next_rows, 1, 1, 1});
      ASSERT_TRUE(x.ok() && y.ok());
      backend->write(*x, d.residual.data(), d.residual.size() * sizeof(float));
      const std::vector<uint8_t> poison(y->bytes(), 0xff);
      backend->write(*y, poison.data(), poison.size());
      MatmulFusion down{.up = &d.up_t, .accumulate = true, .scratch = &d.scratch};
      if (hinted) down.norm_next = &d.g_t, down.norm_next_matmul = &d.w_next;
      backend->fused_matmul(d.w_down, d.gate_t, *x, down);
      backend->fused_matmul(d.w_next, *x, *y, MatmulFusion{.norm = &d.g_t, .eps = eps, .scratch = &d.scratch});
      x_after[hinted].resize(static_cast<size_t>(rows));
      y_got[hinted].resize(static_cast<size_t>(next_rows));
      backend->read(*x, x_after[hinted].data(), rows * sizeof(float));
      backend->read(*y, y_got[hinted].data(), next_rows * sizeof(float));
      ASSERT_TRUE(backend->status().ok());
      EXPECT_LE(error_against_normed(d.next, rows, next_rows, x_after[hinted], d.g, eps, y_got[hinted]), 1.0)
          << (hinted ? "with" : "without") << " the hint";
    }
    EXPECT_EQ(std::memcmp(x_after[0].data(), x_after[1].data(), rows * sizeof(float)), 0);
  }
}

}  // namespace
}  // namespace bl
