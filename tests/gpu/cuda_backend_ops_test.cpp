// Every op of the CUDA backend against the reference backend (ops/backend_op_cases.h: many
// shapes, odd sizes, fresh random inputs, outputs poisoned with NaN), plus what the shared
// cases do not reach: the formats they skip (BF16, Q5_K), rows long enough that each lane of
// the GEMV loops, both GEMV paths (tensor cores and CUDA cores), the prefill (cuBLAS) path,
// CUDA-graph replay and error reporting.
// Without a GPU every test skips with "no CUDA device".
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cuda/cuda_backend.h"
#include "gpu/cuda_test_util.h"
#include "core/half.h"
#include "kernels/cuda/launchers.h"
#include "ops/backend_op_cases.h"
#include "quant/quant.h"

namespace bl {
namespace {

// The shared tolerances, except matmul on F32/F16 weights: at n > 16 tokens (the cases use 17)
// the product runs on tensor cores with activations rounded to fp16, so each term is off by
// up to 2^-11 of its size: 1e-3 of sum |w x|. The GEMV (n <= 16) is checked at 1e-5 below.
// Attention of 17 tokens over an f16 cache runs the tensor-core prefill kernel (q and p in
// fp16): its tolerance, with the reason, is in cuda_prefill_attention_test.cpp.
op_cases::Tolerances cuda_tolerances() {
  op_cases::Tolerances t;
  t.matmul_float = 1e-3;
  t.attention_prompt = 3e-3;
  return t;
}

struct CudaBackendOps : ::testing::Test {
  void SetUp() override {
    SKIP_WITHOUT_GPU();
    backend = open_or_fail();
    ASSERT_TRUE(backend);
    cases = std::make_unique<op_cases::OpCases>(*backend, 4321, cuda_tolerances());
  }
  void TearDown() override {
    if (!backend) return;
    EXPECT_TRUE(backend->status().ok());
    std::printf("[ %s ] max error / tolerance = %.3g\n", backend->name().c_str(), cases->max_error_ratio());
  }
  std::unique_ptr<CudaBackend> backend;
  std::unique_ptr<op_cases::OpCases> cases;
};

TEST_F(CudaBackendOps, Add) { cases->add(); }
TEST_F(CudaBackendOps, RmsNorm) { cases->rms_norm(); }
TEST_F(CudaBackendOps, AddRmsNorm) { cases->add_rms_norm(); }
TEST_F(CudaBackendOps, SiluMul) { cases->silu_mul(); }
TEST_F(CudaBackendOps, GeluMul) { cases->gelu_mul(); }
TEST_F(CudaBackendOps, Scale) { cases->scale(); }
TEST_F(CudaBackendOps, Rope) { cases->rope(); }
TEST_F(CudaBackendOps, KvStore) { cases->kv_store(); }
TEST_F(CudaBackendOps, Attention) { cases->attention(); }
TEST_F(CudaBackendOps, WindowedAttention) { cases->windowed_attention(); }
TEST_F(CudaBackendOps, GetRows) { cases->get_rows(); }
TEST_F(CudaBackendOps, Matmul) { cases->matmul(); }
TEST_F(CudaBackendOps, FusedMatmul) { cases->fused_matmul(); }
TEST_F(CudaBackendOps, FusedMatmulSameInput) { cases->fused_matmul_same_input(); }
TEST_F(CudaBackendOps, FusedFfn) { cases->fused_ffn(); }
TEST_F(CudaBackendOps, RopeKvStore) { cases->rope_kv_store(); }
TEST_F(CudaBackendOps, RopeKvStoreAttention) { cases->rope_kv_store_attention(); }
TEST_F(CudaBackendOps, EachSequence) { cases->each_sequence(); }
TEST_F(CudaBackendOps, Argmax) { cases->argmax(); }
TEST_F(CudaBackendOps, SampleTopK) { cases->sample_top_k(); }

// ---- matmul over every supported format, against fp64 dot products of dequantize_row ----

struct HostMatmul {
  std::vector<uint8_t> w_bytes;
  std::vector<float> w;  // dequantized, [rows][cols]
  std::vector<float> x;  // [n][cols]
};

HostMatmul make_problem(DType t, int64_t cols, int64_t rows, int64_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  HostMatmul p;
  std::vector<float> values(static_cast<size_t>(cols * rows));
  for (float& v : values) v = dist(rng);
  const size_t rb = row_bytes(t, cols);
  p.w_bytes.resize(rb * rows);
  p.w.resize(values.size());
  for (int64_t r = 0; r < rows; ++r) {
    quantize_row(t, values.data() + r * cols, p.w_bytes.data() + r * rb, cols);
    dequantize_row(t, p.w_bytes.data() + r * rb, p.w.data() + r * cols, cols);
  }
  p.x.resize(static_cast<size_t>(cols * n));
  for (float& v : p.x) v = dist(rng);
  return p;
}

// Max over outputs of |out - ref| / allowed, allowed = tol * sum_k |w x| and, when x is
// quantized to int8 per 32 values (x_int8, the dp4a GEMV), plus the most that rounding can
// move the exact sum: each x_k by up to d_b / 2 (d_b = max|x| over its block of 32 / 127), so
// sum_k |w_k| d_b / 2 (with 0.1 % slack for the fp32 scale arithmetic). Passes at <= 1.
double matmul_error(const HostMatmul& p, const std::vector<float>& out, int64_t cols, int64_t rows, int64_t n, double tol,
                    bool x_int8 = false) {
  std::vector<double> half_step(static_cast<size_t>(cols * n), 0.0);  // d_b / 2 for each x_k
  if (x_int8)
    for (int64_t i = 0; i < cols * n; i += 32) {
      float amax = 0.0f;
      for (int64_t k = i; k < i + 32; ++k) amax = std::max(amax, std::fabs(p.x[k]));
      for (int64_t k = i; k < i + 32; ++k) half_step[k] = amax / 127.0 / 2.0;
    }
  double err = 0.0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double ref = 0.0, size = 0.0, rounding = 0.0;
      for (int64_t k = 0; k < cols; ++k) {
        const double w = p.w[r * cols + k];
        const double term = w * p.x[t * cols + k];
        ref += term;
        size += std::fabs(term);
        rounding += std::fabs(w) * half_step[t * cols + k];
      }
      const float got = out[t * rows + r];
      if (!std::isfinite(got)) return INFINITY;
      err = std::max(err, std::fabs(got - ref) / std::max(tol * size + 1.001 * rounding, 1e-30));
    }
  return err;
}

bool is_plain(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

cuda::WeightView weight_view(DType t, int64_t cols, int64_t rows) {
  cuda::WeightView v;
  v.dtype = t, v.cols = cols, v.rows = rows, v.tiled = cuda::weight_tileable(t, cols);
  return v;
}

// Whether launch_gemv takes the skinny tensor-core GEMM (fp16 x) for this weight and batch.
bool uses_skinny(DType t, int64_t cols, int64_t rows, int64_t n) {
  return cuda::tensor_core_gemv_enabled() && cuda::gemv_skinny_applies(weight_view(t, cols, rows), static_cast<int>(n));
}

// Whether launch_gemv takes the dp4a path (int8 x) for this weight as upload_weight stores it.
bool uses_int8_x(DType t, int64_t cols, int64_t rows, int64_t n) {
  return n <= cuda::kDp4aMaxTokens && !uses_skinny(t, cols, rows, n) &&
         cuda::gemv_dp4a_applies(weight_view(t, cols, rows), static_cast<int>(n));
}

TEST(CudaMatmul, EveryFormatGemvAndGemm) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(77);
  const DType formats[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_1,
                           DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};
  for (bool tensor_cores : {true, false})
  for (DType t : formats) {
    cuda::set_tensor_core_gemv(tensor_cores);
    ASSERT_TRUE(backend->supports(t)) << dtype_name(t);
    const bool plain = is_plain(t);
    // 2816 = 11 super-blocks = 352 pieces: GEMV threads loop more than once; 1001 is an odd row.
    // 2816 is whole tiles for Q4_0 / Q4_1 / Q8_0 (stored tiled) but not for Q6_K; 6144 is
    // whole tiles for Q6_K too.
    // 256: one K unit of the skinny GEMM (no K split, so no atomics); 2816 splits K 11 ways.
    // 640 (Gemma 3 270M; not whole super-blocks, so not for the K-quants): rows of 80 pieces,
    // one warp per 4 rows in the fp32 GEMV at one token.
    std::vector<int64_t> col_sizes = {2816};
    if (plain) col_sizes.push_back(1001);
    if (!plain) col_sizes.push_back(256);
    if (dtype_info(t)->block_elems <= 32) col_sizes.push_back(640);
    if (t == DType::Q6_K) col_sizes.push_back(6144);
    for (int64_t cols : col_sizes)
      for (int64_t rows : {67, 300, 2051})  // the tensor-core GEMV starts at 2048 rows
        for (int64_t n : {1, 2, 3, 5, 7, 8, 9, 16, 40}) {
          // 2051 rows only for the tensor-core paths (2..16 tokens); other paths are covered above.
          if (rows == 2051 && (!tensor_cores || n < 2 || n > 16)) continue;
          SCOPED_TRACE(std::string(dtype_name(t)) + " cols=" + std::to_string(cols) + " rows=" + std::to_string(rows) +
                       " n=" + std::to_string(n) + " tensor_cores=" + std::to_string(tensor_cores));
          const HostMatmul p = make_problem(t, cols, rows, n, rng);
          auto w = backend->upload_weight(make_tensor_2d(const_cast<uint8_t*>(p.w_bytes.data()), t, cols, rows));
          ASSERT_TRUE(w.ok()) << w.status().message();
          auto x = backend->alloc(DType::F32, {cols, n, 1, 1});
          auto out = backend->alloc(DType::F32, {rows, n, 1, 1});
          ASSERT_TRUE(x.ok() && out.ok());
          backend->write(*x, p.x.data(), p.x.size() * sizeof(float));
          const std::vector<uint8_t> poison(out->bytes(), 0xff);
          backend->write(*out, poison.data(), poison.size());
          backend->matmul(*w, *x, *out);
          std::vector<float> got(static_cast<size_t>(rows * n));
          backend->read(*out, got.data(), got.size() * sizeof(float));
          ASSERT_TRUE(backend->status().ok());
          // CUDA-core GEMV: fp32 FMAs, 1e-5; on the dp4a path plus the bound of x's int8
          // rounding (matmul_error). Tensor-core GEMV (block formats, 8..16 tokens) and the GEMM
          // (n > 16): operands rounded to fp16 (2^-11 each, so 2e-3 covers both) or, for bf16
          // weights in the GEMM, to bf16 (2^-8).
          // The skinny GEMM (block formats, 2..16 tokens, cols % 256 == 0): x in fp16 too.
          const bool fp16_operands =
              n > 16 || uses_skinny(t, cols, rows, n) || (tensor_cores && !plain && n >= 8 && rows >= 2048);
          const double tol = !fp16_operands ? 1e-5 : (t == DType::BF16 ? 8e-3 : 2e-3);
          EXPECT_LE(matmul_error(p, got, cols, rows, n, tol, uses_int8_x(t, cols, rows, n)), 1.0);
        }
  }
  cuda::set_tensor_core_gemv(true);
}

// The dp4a GEMV with more rows than its resident warps (each warp loops over several rows,
// several chunks per row at 6144 columns): every block format it takes, 1 and 4 tokens (the
// skinny tensor-core GEMM, which takes 2..16 tokens by default, switched off).
TEST(CudaMatmul, Dp4aRowLoop) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(78);
  cuda::set_tensor_core_gemv(false);
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K})
    for (int64_t n : {1, 4}) {
      const int64_t cols = 6144, rows = n == 1 ? 6001 : 2503;
      SCOPED_TRACE(std::string(dtype_name(t)) + " rows=" + std::to_string(rows) + " n=" + std::to_string(n));
      ASSERT_TRUE(uses_int8_x(t, cols, rows, n));
      const HostMatmul p = make_problem(t, cols, rows, n, rng);
      auto w = backend->upload_weight(make_tensor_2d(const_cast<uint8_t*>(p.w_bytes.data()), t, cols, rows));
      auto x = backend->alloc(DType::F32, {cols, n, 1, 1});
      auto out = backend->alloc(DType::F32, {rows, n, 1, 1});
      ASSERT_TRUE(w.ok() && x.ok() && out.ok());
      backend->write(*x, p.x.data(), p.x.size() * sizeof(float));
      const std::vector<uint8_t> poison(out->bytes(), 0xff);
      backend->write(*out, poison.data(), poison.size());
      backend->matmul(*w, *x, *out);
      std::vector<float> got(static_cast<size_t>(rows * n));
      backend->read(*out, got.data(), got.size() * sizeof(float));
      ASSERT_TRUE(backend->status().ok());
      EXPECT_LE(matmul_error(p, got, cols, rows, n, 1e-5, true), 1.0);
    }
  cuda::set_tensor_core_gemv(true);
}

// A NaN in x makes every output of the dp4a path NaN, as in fp32 (quantizing to int8 would
// otherwise turn it into a 0).
TEST(CudaMatmul, Dp4aPropagatesNaN) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(80);
  const int64_t cols = 512, rows = 9;
  for (DType t : {DType::Q4_0, DType::Q4_K}) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    ASSERT_TRUE(uses_int8_x(t, cols, rows, 1));
    HostMatmul p = make_problem(t, cols, rows, 1, rng);
    p.x[300] = NAN;
    auto w = backend->upload_weight(make_tensor_2d(p.w_bytes.data(), t, cols, rows));
    auto x = backend->alloc(DType::F32, {cols, 1, 1, 1});
    auto out = backend->alloc(DType::F32, {rows, 1, 1, 1});
    ASSERT_TRUE(w.ok() && x.ok() && out.ok());
    backend->write(*x, p.x.data(), p.x.size() * sizeof(float));
    backend->matmul(*w, *x, *out);
    std::vector<float> got(rows, 0.0f);
    backend->read(*out, got.data(), got.size() * sizeof(float));
    ASSERT_TRUE(backend->status().ok());
    for (float g : got) EXPECT_TRUE(std::isnan(g)) << g;
  }
}

// The fused dp4a GEMV (Backend::fused_matmul) at decode shapes: rows long enough that lanes
// loop (4096 columns), 1..4 tokens, each fusion, against fp64 W x' (x' = the normed or gated
// input, computed here) with the int8 rounding bound of x' (matmul_error); with accumulate the
// product is what out gained. One token over 2048 columns with a prologue takes the path that
// quantizes x once in a kernel of its own (launch_gemv_dp4a_x_quantized_once): 2304 (a last
// quantizing block with one warp of work), 6144 (3 partial sums of x^2), 14336 (the 8B down
// projection: 17920 bytes copied per GEMV block), 1 and 67 rows besides 4096's.
TEST(CudaMatmul, FusedDp4a) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(81);
  cuda::set_tensor_core_gemv(false);  // the skinny GEMM would take 4 tokens without a prologue
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  enum Mode { kNorm, kGate, kAdd, kGateAdd };
  for (int64_t cols : {4096, 2304, 6144, 14336})
    for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K})
      for (int64_t rows : {1, 67, 2051})
        for (int64_t n : {1, 2, 3, 4})
          for (Mode mode : {kNorm, kGate, kAdd, kGateAdd}) {
            if (rows == 2051 && n != 1 && n != 4) continue;
            if (cols != 4096 && (n != 1 || rows == 2051)) continue;
            if (cols == 4096 && rows == 1) continue;
            if (t == DType::Q6_K && cols % 2048 != 0) continue;  // Q6_K on dp4a needs whole tiles of 2048
            SCOPED_TRACE(std::string(dtype_name(t)) + " cols=" + std::to_string(cols) + " rows=" +
                         std::to_string(rows) + " n=" + std::to_string(n) + " mode=" + std::to_string(mode));
            ASSERT_TRUE(uses_int8_x(t, cols, rows, n));
            if (cols > 2048 && n == 1) {
              cuda::WeightView v;
              v.dtype = t, v.cols = cols, v.rows = rows, v.tiled = cuda::weight_tileable(t, cols);
              ASSERT_TRUE(cuda::gemv_dp4a_x_quantized_once_applies(v, 1));
            }
            const bool norm = mode == kNorm, gate = mode == kGate || mode == kGateAdd,
                       acc = mode == kAdd || mode == kGateAdd;
            HostMatmul p = make_problem(t, cols, rows, n, rng);
            std::vector<float> x = p.x, up(p.x.size()), g(static_cast<size_t>(cols)),
                               before(static_cast<size_t>(rows * n));
            for (float& v : x) v *= 4.0f;
            for (float& v : up) v = dist(rng);
            for (float& v : g) v = dist(rng);
            for (float& v : before) v = dist(rng);
            for (int64_t j = 0; j < n; ++j) {  // p.x = x', what the product is checked against
              double ss = 0.0;
              for (int64_t k = 0; k < cols; ++k) ss += static_cast<double>(x[j * cols + k]) * x[j * cols + k];
              const double r = 1.0 / std::sqrt(ss / cols + 1e-5);
              for (int64_t k = 0; k < cols; ++k) {
                const double v = x[j * cols + k];
                p.x[j * cols + k] = static_cast<float>(norm   ? v * r * g[k]
                                                       : gate ? v / (1.0 + std::exp(-v)) * up[j * cols + k]
                                                              : v);
              }
            }
            auto w = backend->upload_weight(make_tensor_2d(p.w_bytes.data(), t, cols, rows));
            auto xt = backend->alloc(DType::F32, {cols, n, 1, 1});
            auto ut = backend->alloc(DType::F32, {cols, n, 1, 1});
            auto gt = backend->alloc(DType::F32, {cols, 1, 1, 1});
            auto out = backend->alloc(DType::F32, {rows, n, 1, 1});
            auto scratch = backend->alloc(DType::F32, {(cols + rows) * n, 1, 1, 1});
            ASSERT_TRUE(w.ok() && xt.ok() && ut.ok() && gt.ok() && out.ok() && scratch.ok());
            backend->write(*xt, x.data(), x.size() * sizeof(float));
            backend->write(*ut, up.data(), up.size() * sizeof(float));
            backend->write(*gt, g.data(), g.size() * sizeof(float));
            const std::vector<uint8_t> poison(out->bytes(), 0xff);
            if (acc)
              backend->write(*out, before.data(), before.size() * sizeof(float));
            else
              backend->write(*out, poison.data(), poison.size());
            MatmulFusion f;
            f.norm = norm ? &*gt : nullptr;
            f.up = gate ? &*ut : nullptr;
            f.accumulate = acc;
            f.scratch = &*scratch;
            backend->fused_matmul(*w, *xt, *out, f);
            std::vector<float> got(static_cast<size_t>(rows * n));
            backend->read(*out, got.data(), got.size() * sizeof(float));
            ASSERT_TRUE(backend->status().ok());
            if (acc)
              for (size_t i = 0; i < got.size(); ++i) got[i] -= before[i];
            EXPECT_LE(matmul_error(p, got, cols, rows, n, 1e-5, true), 1.0);
          }
  cuda::set_tensor_core_gemv(true);
}

// A decode step's feed-forward with plain-type weights, with and without the swiglu_next hint
// (MatmulFusion): with it the gate/up GEMV stores silu(gate) and the down GEMV multiplies by up
// only, which computes the same floats in the same order as the silu_mul kernel's path, so x must
// come out with the same bits. n_ff 2304 (the SwiGLU apart as a kernel) and 1536 (<= 2048: the
// default composition); twice in a row, with x fed back.
TEST(CudaMatmul, SwigluSplitOverTwoGemvsMatchesSiluKernel) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(85);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  constexpr int64_t d = 1024;
  for (DType t : {DType::F16, DType::BF16, DType::F32})
    for (int64_t n_ff : {2304, 1536}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " n_ff=" + std::to_string(n_ff));
      auto weight = [&](int64_t cols, int64_t rows) {
        std::vector<float> values(static_cast<size_t>(cols * rows));
        for (float& v : values) v = dist(rng) * 0.05f;
        std::vector<uint8_t> bytes(row_bytes(t, cols) * rows);
        quantize_matrix(t, values.data(), bytes.data(), rows, cols);
        return backend->upload_weight(make_tensor_2d(bytes.data(), t, cols, rows));
      };
      auto w_gate_up = weight(d, 2 * n_ff), w_down = weight(n_ff, d);
      auto norm = backend->alloc(DType::F32, {d, 1, 1, 1});
      ASSERT_TRUE(w_gate_up.ok() && w_down.ok() && norm.ok());
      std::vector<float> x_init(static_cast<size_t>(d)), g(static_cast<size_t>(d));
      for (float& v : x_init) v = dist(rng) * 3.0f;
      for (float& v : g) v = dist(rng) + 1.0f;
      backend->write(*norm, g.data(), g.size() * sizeof(float));
      auto run = [&](bool hint) {
        std::vector<float> result(static_cast<size_t>(d));
        auto x = backend->alloc(DType::F32, {d, 1, 1, 1});
        auto gate_up = backend->alloc(DType::F32, {2 * n_ff, 1, 1, 1});
        auto scratch = backend->alloc(DType::F32, {2 * n_ff + d, 1, 1, 1});
        if (!x.ok() || !gate_up.ok() || !scratch.ok()) return result;
        backend->write(*x, x_init.data(), x_init.size() * sizeof(float));
        Tensor gate = *gate_up, up = *gate_up;
        gate.ne = up.ne = {n_ff, 1, 1, 1};
        up.data = gate_up->as<float>() + n_ff;
        for (int step = 0; step < 2; ++step) {
          MatmulFusion ffn{.norm = &*norm, .scratch = &*scratch};
          if (hint) ffn.swiglu_next = &*w_down;
          backend->fused_matmul(*w_gate_up, *x, *gate_up, ffn);
          backend->fused_matmul(*w_down, gate, *x, {.up = &up, .accumulate = true, .scratch = &*scratch});
        }
        backend->read(*x, result.data(), result.size() * sizeof(float));
        return result;
      };
      const std::vector<float> apart = run(false), split = run(true);
      ASSERT_TRUE(backend->status().ok());
      bool finite = true;
      for (float v : split) finite = finite && std::isfinite(v);
      EXPECT_TRUE(finite);
      EXPECT_EQ(std::memcmp(apart.data(), split.data(), apart.size() * sizeof(float)), 0)
          << "x differs with the SwiGLU split over the two GEMVs";
    }
}

// The prefill GEMM with the dequantization in its main loop (gemm_in_loop_wgmma.cu; a GPU of
// compute capability 9.0), each format (Q4_0, Q4_K, Q4_1, Q8_0, Q5_K) and block tile: row and token
// tiles cut short (67, 300, 513 rows; 17, 130, 300 tokens), more tiles than SMs (4100 x 1100),
// K from one 256-column tile to 16, against fp64 W x with x rounded to fp16 (2e-3 of sum |w x|,
// as the cuBLAS path); out = W x through matmul and out += W x through fused_matmul's
// accumulate, over outputs that are not poisoned but random.
TEST(CudaMatmul, InLoopGemmAgainstFp64) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(86);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (DType t : kInLoopTypes)
  for (cuda::InLoopGemmTile tile : {cuda::InLoopGemmTile::rows128_tokens256, cuda::InLoopGemmTile::rows128_tokens128})
  for (int64_t cols : {256, 2816, 4096})
    for (int64_t rows : {67, 300, 513, 4100})
      for (int64_t n : {17, 130, 300, 1100}) {
        if ((rows == 4100) != (n == 1100) || (rows == 4100 && cols != 256)) continue;  // 4100 x 1100: only at 256
        if (cols == 4096 && n == 300 && rows != 513) continue;  // the fp64 reference's time
        SCOPED_TRACE(std::string(dtype_name(t)) + " tile " + std::to_string(static_cast<int>(tile)) + " cols=" +
                     std::to_string(cols) + " rows=" + std::to_string(rows) + " n=" + std::to_string(n));
        const InLoopGemmSwitchedOn switched_on(tile);
        if (!cuda::gemm_in_loop_applies(weight_view(t, cols, rows), n))
          GTEST_SKIP() << "the in-loop GEMM needs an sm_90a GPU (H100/H200)";
        const HostMatmul p = make_problem(t, cols, rows, n, rng);
        auto w = backend->upload_weight(make_tensor_2d(const_cast<uint8_t*>(p.w_bytes.data()), t, cols, rows));
        auto x = backend->alloc(DType::F32, {cols, n, 1, 1});
        auto out = backend->alloc(DType::F32, {rows, n, 1, 1});
        ASSERT_TRUE(w.ok() && x.ok() && out.ok());
        backend->write(*x, p.x.data(), p.x.size() * sizeof(float));
        for (bool accumulate : {false, true}) {
          SCOPED_TRACE(accumulate ? "out += W x" : "out = W x");
          std::vector<float> before(static_cast<size_t>(rows * n));
          for (float& v : before) v = accumulate ? dist(rng) : NAN;
          backend->write(*out, before.data(), before.size() * sizeof(float));
          if (accumulate)
            backend->fused_matmul(*w, *x, *out, MatmulFusion{.accumulate = true});
          else
            backend->matmul(*w, *x, *out);
          std::vector<float> got(before.size());
          backend->read(*out, got.data(), got.size() * sizeof(float));
          ASSERT_TRUE(backend->status().ok());
          if (accumulate)
            for (size_t i = 0; i < got.size(); ++i) got[i] -= before[i];
          EXPECT_LE(matmul_error(p, got, cols, rows, n, 2e-3), 1.0);
        }
      }
}

// By default the backend takes the in-loop GEMM for Q4_0, Q4_1, Q4_K and Q8_0 at any token count
// and for Q5_K up to 512 tokens (each measured faster than the dequantize pass + cuBLAS there in
// the whole 8B forward on an H100), in clusters of 2 blocks; Q6_K (not read by the kernel) stays
// with the dequantize pass. The token limit moves a format either way.
TEST(CudaMatmul, InLoopGemmFormatsByDefault) {
  SKIP_WITHOUT_GPU();
  ASSERT_EQ(cuda::in_loop_gemm_cluster(), 2) << "BITLIGHT_CUDA_INLOOP_GEMM_CLUSTER=1 set for the test run?";
  ASSERT_EQ(std::getenv("BITLIGHT_CUDA_INLOOP_GEMM_FORMATS"), nullptr) << "the defaults are tested here";
  if (!cuda::gemm_in_loop_applies(weight_view(DType::Q4_0, 512, 256), 40))
    GTEST_SKIP() << "the in-loop GEMM needs an sm_90a GPU (H100/H200)";
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q4_K, DType::Q8_0})
    for (int64_t n : {17, 512, 513, 8192}) EXPECT_TRUE(cuda::gemm_in_loop_applies(weight_view(t, 512, 256), n)) << n;
  EXPECT_TRUE(cuda::gemm_in_loop_applies(weight_view(DType::Q5_K, 512, 256), 17));
  EXPECT_TRUE(cuda::gemm_in_loop_applies(weight_view(DType::Q5_K, 512, 256), 512));
  EXPECT_FALSE(cuda::gemm_in_loop_applies(weight_view(DType::Q5_K, 512, 256), 513));
  EXPECT_FALSE(cuda::gemm_in_loop_applies(weight_view(DType::Q6_K, 512, 256), 40));
  EXPECT_FALSE(cuda::gemm_in_loop_applies(weight_view(DType::Q8_0, 512, 256), cuda::kGemvMaxTokens));
  const int64_t q5_k_default = cuda::in_loop_gemm_max_tokens(DType::Q5_K);
  cuda::set_in_loop_gemm_max_tokens(DType::Q8_0, 0);
  cuda::set_in_loop_gemm_max_tokens(DType::Q5_K, cuda::kInLoopGemmAnyTokens);
  cuda::set_in_loop_gemm_max_tokens(DType::Q6_K, cuda::kInLoopGemmAnyTokens);  // not a format the kernel reads: ignored
  EXPECT_FALSE(cuda::gemm_in_loop_applies(weight_view(DType::Q8_0, 512, 256), 40));
  EXPECT_TRUE(cuda::gemm_in_loop_applies(weight_view(DType::Q5_K, 512, 256), 2048));
  EXPECT_FALSE(cuda::gemm_in_loop_applies(weight_view(DType::Q6_K, 512, 256), 40));
  EXPECT_TRUE(cuda::gemm_in_loop_applies(weight_view(DType::Q4_0, 512, 256), 40));
  cuda::set_in_loop_gemm_max_tokens(DType::Q8_0, cuda::kInLoopGemmAnyTokens);
  cuda::set_in_loop_gemm_max_tokens(DType::Q5_K, q5_k_default);
}

// The in-loop GEMM (each format) over the rows of several matrices stored one after another (a
// layer's q, k, v fused at load), each row range into its own output: ranges of 192, 64, 64 rows (on the
// stored boxes' boundaries: the tile leaves by TMA) and of 200, 72, 72 (inside them: direct
// stores), both cutting 128-row block tiles, fp32 and fp16 outputs, blocks in clusters of 2 and
// alone (328 and 344 rows are 3 row tiles: in clusters of 2 the fourth block lies wholly past
// the last row and only loads its half of x for its neighbour), against fp64 W x of the fp16 x
// it was given (2e-3 of sum |w x|: the fp16 weights, and the fp16 outputs' rounding).
TEST(CudaMatmul, InLoopGemmRowRanges) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  constexpr int64_t cols = 512;
  std::mt19937_64 rng(88);
  for (DType t : kInLoopTypes)
  for (const std::array<int64_t, 3> range_rows : {std::array<int64_t, 3>{192, 64, 64}, std::array<int64_t, 3>{200, 72, 72}})
  for (cuda::InLoopGemmTile tile : {cuda::InLoopGemmTile::rows128_tokens256, cuda::InLoopGemmTile::rows128_tokens128})
  for (int cluster : {2, 1})
    for (int64_t n : {40, 300})
      for (bool out_half : {false, true}) {
        const int64_t rows = range_rows[0] + range_rows[1] + range_rows[2];
        SCOPED_TRACE(std::string(dtype_name(t)) + " ranges " + std::to_string(range_rows[0]) + "/" +
                     std::to_string(range_rows[1]) + " tile " + std::to_string(static_cast<int>(tile)) +
                     " cluster " + std::to_string(cluster) + " n=" + std::to_string(n) +
                     (out_half ? " fp16 out" : " fp32 out"));
        const InLoopGemmSwitchedOn switched_on(tile, cluster);
        HostMatmul p = make_problem(t, cols, rows, n, rng);
        auto w = backend->upload_weight(make_tensor_2d(p.w_bytes.data(), t, cols, rows));
        auto x = backend->alloc(DType::F16, {cols, n, 1, 1});
        ASSERT_TRUE(w.ok() && x.ok());
        cuda::WeightView wv = weight_view(t, cols, rows);
        wv.data = w->data;
        wv.row_bytes = w->row_size();
        if (!cuda::gemm_in_loop_applies(wv, n)) GTEST_SKIP() << "the in-loop GEMM needs an sm_90a GPU (H100/H200)";
        std::vector<uint16_t> x_half(p.x.size());
        for (size_t i = 0; i < p.x.size(); ++i) {
          x_half[i] = f32_to_fp16(p.x[i]);
          p.x[i] = fp16_to_f32(x_half[i]);  // the reference multiplies what the GEMM is given
        }
        backend->write(*x, x_half.data(), x_half.size() * sizeof(uint16_t));
        std::vector<Tensor> outs;
        cuda::GemmRowRange ranges[3];
        int64_t first = 0;
        for (int i = 0; i < 3; ++i) {
          auto out = backend->alloc(out_half ? DType::F16 : DType::F32, {range_rows[i], n, 1, 1});
          ASSERT_TRUE(out.ok());
          const std::vector<uint8_t> poison(out->bytes(), 0xff);
          backend->write(*out, poison.data(), poison.size());
          ranges[i] = {first, out->data, range_rows[i]};
          first += range_rows[i];
          outs.push_back(*out);
        }
        backend->synchronize();  // the launch below is on the default stream
        ASSERT_TRUE(cuda::launch_gemm_in_loop_row_ranges(wv, x->as<uint16_t>(), n, ranges, out_half, false, nullptr));
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        std::vector<float> got(static_cast<size_t>(rows * n));  // [n][rows], as one output
        for (int i = 0; i < 3; ++i) {
          std::vector<float> part(static_cast<size_t>(range_rows[i] * n));
          if (out_half) {
            std::vector<uint16_t> h(part.size());
            backend->read(outs[static_cast<size_t>(i)], h.data(), h.size() * sizeof(uint16_t));
            for (size_t k = 0; k < h.size(); ++k) part[k] = fp16_to_f32(h[k]);
          } else {
            backend->read(outs[static_cast<size_t>(i)], part.data(), part.size() * sizeof(float));
          }
          for (int64_t t = 0; t < n; ++t)
            for (int64_t r = 0; r < range_rows[i]; ++r)
              got[static_cast<size_t>(t * rows + ranges[i].first_row + r)] = part[static_cast<size_t>(t * range_rows[i] + r)];
        }
        ASSERT_TRUE(backend->status().ok());
        EXPECT_LE(matmul_error(p, got, cols, rows, n, 2e-3), 1.0);
      }
}

// A prompt chunk's q, k and v (fused_matmul_same_input with the norm, a bias on k) from weights
// of each in-loop format stored as one matrix, as LlamaModel fuses them: by default one in-loop
// GEMM for the three (row ranges of 192, 64, 64; the launch is counted), against the dequantize pass + cuBLAS
// per matrix: the same fp16 operands, sums in another order (2e-3 of each output's max |value|).
TEST(CudaMatmul, InLoopGemmQkvMatchesCublasPath) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  const InLoopGemmSwitchedOn switched_on;
  for (DType t : kInLoopTypes) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    constexpr int64_t cols = 512;
    const int64_t range_rows[] = {192, 64, 64}, rows = 320;
    std::mt19937_64 rng(89);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> values(static_cast<size_t>(cols * rows));
    for (float& v : values) v = dist(rng) * 0.1f;
    std::vector<uint8_t> bytes(row_bytes(t, cols) * rows);
    quantize_matrix(t, values.data(), bytes.data(), rows, cols);
    auto wqkv = backend->upload_weight(make_tensor_2d(bytes.data(), t, cols, rows));
    auto norm = backend->alloc(DType::F32, {cols, 1, 1, 1});
    auto bias = backend->alloc(DType::F32, {range_rows[1], 1, 1, 1});
    ASSERT_TRUE(wqkv.ok() && norm.ok() && bias.ok());
    std::vector<float> g(static_cast<size_t>(cols)), b(static_cast<size_t>(range_rows[1]));
    for (float& v : g) v = dist(rng) + 1.0f;
    for (float& v : b) v = dist(rng);
    backend->write(*norm, g.data(), g.size() * sizeof(float));
    backend->write(*bias, b.data(), b.size() * sizeof(float));
    Tensor w[3];
    int64_t first = 0;
    for (int i = 0; i < 3; ++i) {
      w[i] = *wqkv;
      w[i].data = static_cast<char*>(wqkv->data) + static_cast<size_t>(first) * wqkv->row_size();
      w[i].ne = {cols, range_rows[i], 1, 1};
      first += range_rows[i];
    }
    if (!cuda::gemm_in_loop_applies(weight_view(t, cols, rows), 40))
      GTEST_SKIP() << "the in-loop GEMM needs an sm_90a GPU (H100/H200)";
    for (int64_t n : {40, 300}) {
      SCOPED_TRACE("n=" + std::to_string(n));
      std::vector<float> xv(static_cast<size_t>(cols * n));
      for (float& v : xv) v = dist(rng) * 2.0f;
      auto run = [&](cuda::InLoopGemmUse use) {
        cuda::set_in_loop_gemm(use);
        std::vector<std::vector<float>> result(3);
        auto x = backend->alloc(DType::F32, {cols, n, 1, 1});
        if (!x.ok()) return result;
        backend->write(*x, xv.data(), xv.size() * sizeof(float));
        std::vector<Tensor> outs;
        for (int i = 0; i < 3; ++i) {
          auto out = backend->alloc(DType::F32, {range_rows[i], n, 1, 1});
          if (!out.ok()) return result;
          const std::vector<uint8_t> poison(out->bytes(), 0xff);
          backend->write(*out, poison.data(), poison.size());
          outs.push_back(*out);
        }
        const MatmulOutput outputs[] = {{&w[0], &outs[0], nullptr}, {&w[1], &outs[1], &*bias}, {&w[2], &outs[2], nullptr}};
        backend->fused_matmul_same_input(outputs, *x, MatmulFusion{.norm = &*norm, .eps = 1e-5f});
        for (int i = 0; i < 3; ++i) {
          result[static_cast<size_t>(i)].resize(static_cast<size_t>(range_rows[i] * n));
          backend->read(outs[static_cast<size_t>(i)], result[static_cast<size_t>(i)].data(),
                        result[static_cast<size_t>(i)].size() * sizeof(float));
        }
        return result;
      };
      const int64_t launches = cuda::in_loop_gemm_launch_count();
      const auto in_loop = run(cuda::InLoopGemmUse::qkv);
      EXPECT_EQ(cuda::in_loop_gemm_launch_count(), launches + 1) << "one in-loop GEMM for q, k and v";
      const auto cublas = run(cuda::InLoopGemmUse::off);
      EXPECT_EQ(cuda::in_loop_gemm_launch_count(), launches + 1) << "none with the in-loop GEMM off";
      cuda::set_in_loop_gemm(cuda::InLoopGemmUse::everywhere);
      ASSERT_TRUE(backend->status().ok());
      for (size_t i = 0; i < 3; ++i) {
        SCOPED_TRACE("output " + std::to_string(i));
        ASSERT_EQ(in_loop[i].size(), cublas[i].size());
        float largest = 0.0f, worst = 0.0f;
        for (size_t k = 0; k < in_loop[i].size(); ++k) {
          ASSERT_TRUE(std::isfinite(in_loop[i][k])) << k;
          largest = std::max(largest, std::fabs(cublas[i][k]));
          worst = std::max(worst, std::fabs(in_loop[i][k] - cublas[i][k]));
        }
        EXPECT_GT(largest, 0.0f);
        EXPECT_LE(worst, 2e-3f * largest);
      }
    }
  }
}

// A prompt chunk's feed-forward (fused_ffn: gate and up written as fp16 by the GEMM, SwiGLU in
// place, down added into x) with each in-loop format's weights, the in-loop GEMM against the dequantize pass and
// cuBLAS, each block tile, gate and up apart or as rows of one matrix (one GEMM for both): the
// same fp16 weights and operands, sums in another order, so x agrees to the fp16 rounding of
// gate / up (2e-3 of max |x|).
TEST(CudaMatmul, InLoopGemmFfnMatchesCublasPath) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  for (DType t : kInLoopTypes) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    const InLoopGemmSwitchedOn switched_on;
    if (!cuda::gemm_in_loop_applies(weight_view(t, 512, 768), 40))
      GTEST_SKIP() << "the in-loop GEMM needs an sm_90a GPU (H100/H200)";
    std::mt19937_64 rng(87);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    constexpr int64_t d = 512, n_ff = 768;
    auto weight = [&](int64_t cols, int64_t rows) {
      std::vector<float> values(static_cast<size_t>(cols * rows));
      for (float& v : values) v = dist(rng) * 0.1f;
      std::vector<uint8_t> bytes(row_bytes(t, cols) * rows);
      quantize_matrix(t, values.data(), bytes.data(), rows, cols);
      return backend->upload_weight(make_tensor_2d(bytes.data(), t, cols, rows));
    };
    auto w_gate_apart = weight(d, n_ff), w_up_apart = weight(d, n_ff), w_gate_up = weight(d, 2 * n_ff),
         w_down = weight(n_ff, d);
    auto norm = backend->alloc(DType::F32, {d, 1, 1, 1});
    ASSERT_TRUE(w_gate_apart.ok() && w_up_apart.ok() && w_gate_up.ok() && w_down.ok() && norm.ok());
    // Gate and up as rows of one matrix (as LlamaModel fuses them at load): one GEMM for both.
    auto rows_of = [&](const Tensor& w, int64_t r0, int64_t rows) {
      Tensor v = w;
      v.data = static_cast<char*>(w.data) + static_cast<size_t>(r0) * w.row_size();
      v.ne = {w.ne[0], rows, 1, 1};
      return v;
    };
    const Tensor gate_rows = rows_of(*w_gate_up, 0, n_ff), up_rows = rows_of(*w_gate_up, n_ff, n_ff);
    std::vector<float> g(static_cast<size_t>(d));
    for (float& v : g) v = dist(rng) + 1.0f;
    backend->write(*norm, g.data(), g.size() * sizeof(float));
    for (cuda::InLoopGemmTile tile : {cuda::InLoopGemmTile::rows128_tokens256, cuda::InLoopGemmTile::rows128_tokens128})
    for (bool one_matrix : {false, true})
    for (int64_t n : {40, 200}) {
      SCOPED_TRACE("tile " + std::to_string(static_cast<int>(tile)) + (one_matrix ? " gate/up one matrix" : "") +
                   " n=" + std::to_string(n));
      const Tensor* w_gate = one_matrix ? &gate_rows : &*w_gate_apart;
      const Tensor* w_up = one_matrix ? &up_rows : &*w_up_apart;
      std::vector<float> x_init(static_cast<size_t>(d * n));
      for (float& v : x_init) v = dist(rng) * 3.0f;
      auto run = [&](bool in_loop) {
        cuda::set_in_loop_gemm(in_loop ? cuda::InLoopGemmUse::everywhere : cuda::InLoopGemmUse::off, tile);
        std::vector<float> result(x_init.size());
        auto x = backend->alloc(DType::F32, {d, n, 1, 1});
        auto gate = backend->alloc(DType::F32, {n_ff, n, 1, 1});
        auto up = backend->alloc(DType::F32, {n_ff, n, 1, 1});
        auto scratch = backend->alloc(DType::F32, {(n_ff + d) * n, 1, 1, 1});
        if (!x.ok() || !gate.ok() || !up.ok() || !scratch.ok()) return result;
        backend->write(*x, x_init.data(), x_init.size() * sizeof(float));
        backend->fused_ffn(*x, FfnBlock{w_gate, w_up, &*w_down, &*norm, 1e-5f, &*gate, &*up, &*scratch});
        backend->read(*x, result.data(), result.size() * sizeof(float));
        return result;
      };
      const std::vector<float> in_loop = run(true), cublas = run(false);
      ASSERT_TRUE(backend->status().ok());
      float largest = 0.0f, worst = 0.0f, moved = 0.0f;
      for (size_t i = 0; i < in_loop.size(); ++i) {
        ASSERT_TRUE(std::isfinite(in_loop[i])) << i;
        largest = std::max(largest, std::fabs(cublas[i]));
        worst = std::max(worst, std::fabs(in_loop[i] - cublas[i]));
        moved = std::max(moved, std::fabs(in_loop[i] - x_init[i]));
      }
      EXPECT_LE(worst, 2e-3f * largest);
      EXPECT_GT(moved, 1e-2f * largest) << "the feed-forward added nothing to x";
    }
  }
}

// Weights stored tiled (Q4_0, Q4_1, Q8_0, Q6_K with whole tiles per row) read back as the
// GGUF bytes that were uploaded, whole or from a row on, and get_rows decodes them as the host.
TEST(CudaWeights, TiledWeightsReadBackAndDecode) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(79);
  for (DType t : {DType::Q4_0, DType::Q4_1, DType::Q8_0, DType::Q6_K}) {
    const int64_t cols = 4096, rows = 7;
    SCOPED_TRACE(std::string(dtype_name(t)));
    ASSERT_TRUE(cuda::weight_tileable(t, cols));
    const HostMatmul p = make_problem(t, cols, rows, 1, rng);
    auto w = backend->upload_weight(make_tensor_2d(const_cast<uint8_t*>(p.w_bytes.data()), t, cols, rows));
    ASSERT_TRUE(w.ok()) << w.status().message();
    std::vector<uint8_t> back(p.w_bytes.size(), 0);
    backend->read(*w, back.data(), back.size());
    EXPECT_TRUE(back == p.w_bytes) << "whole tensor";
    const size_t rb = w->row_size();
    std::vector<uint8_t> tail(2 * rb, 0);
    backend->read(*w, tail.data(), tail.size(), 4 * rb);
    EXPECT_TRUE(std::equal(tail.begin(), tail.end(), p.w_bytes.begin() + 4 * rb)) << "rows 4..5";

    const std::vector<int32_t> ids = {6, 0, 3, 3};
    auto id_t = backend->alloc(DType::I32, {static_cast<int64_t>(ids.size()), 1, 1, 1});
    auto out = backend->alloc(DType::F32, {cols, static_cast<int64_t>(ids.size()), 1, 1});
    ASSERT_TRUE(id_t.ok() && out.ok());
    backend->write(*id_t, ids.data(), ids.size() * sizeof(int32_t));
    const std::vector<uint8_t> poison(out->bytes(), 0xff);
    backend->write(*out, poison.data(), poison.size());
    backend->get_rows(*w, *id_t, *out);
    std::vector<float> got(static_cast<size_t>(cols) * ids.size());
    backend->read(*out, got.data(), got.size() * sizeof(float));
    ASSERT_TRUE(backend->status().ok());
    double worst = 0.0;  // relative to the row's largest value (Q4_1's d q + m may be fused)
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* want = p.w.data() + ids[i] * cols;
      float amax = 0.0f;
      for (int64_t k = 0; k < cols; ++k) amax = std::max(amax, std::fabs(want[k]));
      for (int64_t k = 0; k < cols; ++k) {
        const float g = got[i * cols + k];
        worst = std::max(worst, std::isfinite(g) ? static_cast<double>(std::fabs(g - want[k]) / amax) : INFINITY);
      }
    }
    EXPECT_LE(worst, 1e-6);
  }
}

// ---- one token's attention left as sums for the O GEMV (AttentionParams::out_matmul_next) ----

// Layers of one decode step, each rope_kv_store_attention with the hint and then x +=
// W_o · attn, for several steps at growing positions (eagerly, or as a captured graph replayed
// with new inputs), against the reference backend's attention (no hint) times the dequantized
// W_o in fp64, within matmul_error's bound for x quantized to int8 (the dp4a GEMV) plus `tol` of
// sum |w x| for the attention's own rounding (f32 caches 2e-5; f16 caches 5e-4: the new k is
// rounded to f16 after a rope that differs in the last bits). The shapes: the 8B's heads (rope
// inside the attention), the 1B's (rope apart), GQA 16/2, and 9/3 heads (1152 columns: not a
// dp4a shape, so the quantized W_o take the sums in the fp32 GEMV, as F16 / BF16 and Q5_0 (no
// dp4a unit) do up to 2048 columns, so not at 32 x 128; bl4g128 / bl3g64 in the one-token bl
// GEMV where columns % 256 == 0). Three layers, so the two sums buffers alternate across steps the other
// way round each step, and a graph (odd count of attentions) must zero its first buffer itself.
// Positions start at 0 (a single slot: every split but the first is empty). With big_scores, q
// is scaled so that scores spread over hundreds and most splits' maxima exceed slot 0's score by
// more than kAttentionSumsMaxExponent: the GEMV's exact combine of overflowed splits.
void attention_sums_match_reference(bool graph, bool big_scores) {
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  auto ref = make_reference_backend();
  std::mt19937_64 rng(graph ? 61 : 62);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  struct Shape {
    int n_head, n_head_kv, head_dim;
  };
  constexpr int64_t kCtx = 640, kRows = 512, kLayers = 3, kSteps = 4;
  const int32_t positions[kSteps] = {0, 1, 300, 599};
  for (DType cache_type : {DType::F32, DType::F16})
    for (DType wt : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::F16, DType::BF16, DType::BL4G128,
                     DType::BL3G64, DType::Q5_0})
      for (Shape sh : {Shape{32, 8, 128}, Shape{32, 8, 64}, Shape{16, 2, 128}, Shape{9, 3, 128}}) {
        const int64_t hd = sh.head_dim, cols = sh.n_head * hd, kv_dim = sh.n_head_kv * hd;
        if (cache_type == DType::F16 && wt != DType::Q4_0) continue;  // the caches do not meet the GEMV
        if (cols % 256 != 0 && (wt == DType::Q4_K || wt == DType::Q6_K)) continue;  // whole super-blocks
        SCOPED_TRACE(std::string(dtype_name(cache_type)) + " caches, W_o " + std::string(dtype_name(wt)) + ", heads " +
                     std::to_string(sh.n_head) + "/" + std::to_string(sh.n_head_kv) + " x " + std::to_string(hd) +
                     (graph ? ", graph" : ", eager") + (big_scores ? ", big scores" : ""));
        // Per layer: W_o (device and dequantized), caches on both backends.
        struct Layer {
          std::vector<float> w;  // dequantized [kRows][cols]
          Tensor w_dev;
          Tensor kc, vc, kc_ref, vc_ref;
        };
        std::vector<Layer> layers(kLayers);
        const size_t cache_bytes = row_bytes(cache_type, kv_dim * kCtx);
        for (Layer& l : layers) {
          std::vector<float> values(static_cast<size_t>(cols * kRows));
          for (float& v : values) v = dist(rng);
          std::vector<uint8_t> bytes(row_bytes(wt, cols) * kRows);
          quantize_matrix(wt, values.data(), bytes.data(), kRows, cols);
          l.w.resize(values.size());
          for (int64_t r = 0; r < kRows; ++r) dequantize_matrix_row(wt, bytes.data(), cols, r, l.w.data() + r * cols);
          auto w = backend->upload_weight(make_tensor_2d(bytes.data(), wt, cols, kRows));
          auto kc = backend->alloc(cache_type, {hd, sh.n_head_kv, kCtx, 1});
          auto vc = backend->alloc(cache_type, {hd, sh.n_head_kv, kCtx, 1});
          auto kr = ref->alloc(cache_type, {hd, sh.n_head_kv, kCtx, 1});
          auto vr = ref->alloc(cache_type, {hd, sh.n_head_kv, kCtx, 1});
          ASSERT_TRUE(w.ok() && kc.ok() && vc.ok() && kr.ok() && vr.ok());
          l.w_dev = *w, l.kc = *kc, l.vc = *vc, l.kc_ref = *kr, l.vc_ref = *vr;
          for (auto [dev, host] : {std::pair{&l.kc, &l.kc_ref}, std::pair{&l.vc, &l.vc_ref}}) {
            std::vector<float> c(static_cast<size_t>(kv_dim * kCtx));
            for (float& v : c) v = dist(rng);
            std::vector<uint8_t> cb(cache_bytes);
            if (cache_type == DType::F16)
              for (size_t i = 0; i < c.size(); ++i) reinterpret_cast<uint16_t*>(cb.data())[i] = f32_to_fp16(c[i]);
            else
              std::memcpy(cb.data(), c.data(), cache_bytes);
            backend->write(*dev, cb.data(), cb.size());
            ref->write(*host, cb.data(), cb.size());
          }
        }
        // The step's inputs (q, k, v per layer, written before each step) and x.
        auto alloc_both = [&](int64_t n) {
          auto d = backend->alloc(DType::F32, {n, 1, 1, 1});
          auto r = ref->alloc(DType::F32, {n, 1, 1, 1});
          EXPECT_TRUE(d.ok() && r.ok());
          return std::pair{*d, *r};
        };
        std::vector<std::pair<Tensor, Tensor>> q(kLayers), k(kLayers), v(kLayers);
        for (int64_t i = 0; i < kLayers; ++i)
          q[i] = alloc_both(cols), k[i] = alloc_both(kv_dim), v[i] = alloc_both(kv_dim);
        auto [att, att_ref] = alloc_both(cols);
        auto [x, x_unused] = alloc_both(kRows);
        auto [pos, pos_ref] = std::pair{backend->alloc(DType::I32, {1, 1, 1, 1}), ref->alloc(DType::I32, {1, 1, 1, 1})};
        ASSERT_TRUE(pos.ok() && pos_ref.ok());
        auto heads = [&](Tensor t, int64_t n) {
          t.ne = {hd, n, 1, 1};
          return t;
        };
        RopeParams rp;
        rp.n_dims = static_cast<int>(hd);
        const AttentionParams ap{sh.n_head, sh.n_head_kv, static_cast<int>(hd),
                                 1.0f / std::sqrt(static_cast<float>(hd))};
        auto step = [&] {
          for (int64_t i = 0; i < kLayers; ++i) {
            AttentionParams hinted = ap;
            hinted.out_matmul_next = &layers[i].w_dev;
            Tensor qh = heads(q[i].first, sh.n_head), kh = heads(k[i].first, sh.n_head_kv),
                   vh = heads(v[i].first, sh.n_head_kv), ah = heads(att, sh.n_head);
            backend->rope_kv_store_attention(qh, kh, vh, layers[i].kc, layers[i].vc, *pos, rp, hinted, ah);
            backend->fused_matmul(layers[i].w_dev, att, x, {.accumulate = true});
          }
        };
        bool captured = false;
        double worst = 0.0;
        for (int si = 0; si < kSteps; ++si) {
          const int32_t p = positions[si];
          backend->write(*pos, &p, sizeof p);
          ref->write(*pos_ref, &p, sizeof p);
          std::vector<std::vector<float>> expected_inputs;  // per layer: the reference's attention output
          for (int64_t i = 0; i < kLayers; ++i) {
            std::vector<float> qv(static_cast<size_t>(cols)), kv(static_cast<size_t>(kv_dim)),
                vv(static_cast<size_t>(kv_dim));
            for (float& e : qv) e = dist(rng) * (big_scores ? 40.0f : 1.0f);
            for (float& e : kv) e = dist(rng);
            for (float& e : vv) e = dist(rng);
            for (auto [t, vals] : {std::pair{&q[i], &qv}, std::pair{&k[i], &kv}, std::pair{&v[i], &vv}}) {
              backend->write(t->first, vals->data(), vals->size() * sizeof(float));
              ref->write(t->second, vals->data(), vals->size() * sizeof(float));
            }
            Tensor qh = heads(q[i].second, sh.n_head), kh = heads(k[i].second, sh.n_head_kv),
                   vh = heads(v[i].second, sh.n_head_kv), ah = heads(att_ref, sh.n_head);
            ref->rope_kv_store_attention(qh, kh, vh, layers[i].kc_ref, layers[i].vc_ref, *pos_ref, rp, ap, ah);
            std::vector<float> a(static_cast<size_t>(cols));
            ref->read(att_ref, a.data(), a.size() * sizeof(float));
            expected_inputs.push_back(std::move(a));
          }
          const std::vector<float> zeros(static_cast<size_t>(kRows), 0.0f);
          backend->write(x, zeros.data(), zeros.size() * sizeof(float));
          // Graph: the first step eager (it sizes the workspaces, as Session::step), then captured once.
          if (graph && si == 1 && !captured) {
            ASSERT_TRUE(backend->capture_graph(step).ok());
            captured = true;
          }
          if (captured) ASSERT_TRUE(backend->replay_graph().ok());
          else step();
          std::vector<float> got(static_cast<size_t>(kRows));
          backend->read(x, got.data(), got.size() * sizeof(float));
          ASSERT_TRUE(backend->status().ok());
          // x = sum over layers of W_o,i · attn_i: the bound is the sum of the layers' bounds, which
          // matmul_error gives for one product; so compare against the layers stacked as one
          // product of kLayers * cols columns.
          HostMatmul stacked;
          stacked.w.resize(static_cast<size_t>(kRows * cols * kLayers));
          for (int64_t r = 0; r < kRows; ++r)
            for (int64_t i = 0; i < kLayers; ++i)
              std::copy_n(layers[i].w.data() + r * cols, cols, stacked.w.data() + (r * kLayers + i) * cols);
          for (const auto& a : expected_inputs) stacked.x.insert(stacked.x.end(), a.begin(), a.end());
          const double tol = cache_type == DType::F16 ? 5e-4 : 2e-5;
          const double err = matmul_error(stacked, got, cols * kLayers, kRows, 1, tol, true);
          worst = std::max(worst, err);
          EXPECT_LE(err, 1.0) << "step " << si << " at position " << p;
        }
        std::printf("  %s: worst error / bound %.3g\n",
                    ::testing::UnitTest::GetInstance()->current_test_info()->name(), worst);
      }
}

TEST(CudaAttention, SumsForTheOGemvMatchReference) {
  SKIP_WITHOUT_GPU();
  attention_sums_match_reference(false, false);
}

TEST(CudaAttention, SumsWithOverflowedSplitsMatchReference) {
  SKIP_WITHOUT_GPU();
  attention_sums_match_reference(false, true);
}

TEST(CudaAttention, SumsInAReplayedGraphMatchReference) {
  SKIP_WITHOUT_GPU();
  attention_sums_match_reference(true, false);
}

// ---- a small decode step captured as a CUDA graph, replayed with new inputs ----

// fused: the same step through fused_matmul (norm in the GEMV), rope_kv_store and an argmax of
// the attention output (whose counters must be left ready for the next replay).
void graph_replay_matches_eager(bool fused) {
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const int64_t d = 256, rows = 512, head_dim = 64, n_head = 4, n_head_kv = 2, n_ctx = 96;
  const HostMatmul p = make_problem(DType::Q4_0, d, rows, 1, rng);
  auto w = backend->upload_weight(make_tensor_2d(const_cast<uint8_t*>(p.w_bytes.data()), DType::Q4_0, d, rows));
  std::vector<float> norm_w(d);
  for (float& v : norm_w) v = dist(rng);
  auto nw = backend->upload_weight(make_tensor_2d(norm_w.data(), DType::F32, d, 1));
  auto x = backend->alloc(DType::F32, {d, 1, 1, 1});
  auto h = backend->alloc(DType::F32, {d, 1, 1, 1});
  auto y = backend->alloc(DType::F32, {rows, 1, 1, 1});  // q (256) | k (128) | v (128)
  auto att = backend->alloc(DType::F32, {head_dim, n_head, 1, 1});
  auto kc = backend->alloc(DType::F16, {head_dim, n_head_kv, n_ctx, 1});
  auto vc = backend->alloc(DType::F16, {head_dim, n_head_kv, n_ctx, 1});
  auto pos = backend->alloc(DType::I32, {1, 1, 1, 1});
  auto scratch = backend->alloc(DType::F32, {d, 1, 1, 1});
  auto id = backend->alloc(DType::I32, {1, 1, 1, 1});
  ASSERT_TRUE(w.ok() && nw.ok() && x.ok() && h.ok() && y.ok() && att.ok() && kc.ok() && vc.ok() && pos.ok() &&
              scratch.ok() && id.ok());
  const std::vector<uint8_t> zeros(kc->bytes(), 0);
  backend->write(*kc, zeros.data(), zeros.size());
  backend->write(*vc, zeros.data(), zeros.size());

  auto qkv = [&](int64_t offset, int64_t heads) {
    Tensor t = *y;
    t.data = y->as<float>() + offset;
    t.ne = {head_dim, heads, 1, 1};
    return t;
  };
  RopeParams rp;
  rp.n_dims = head_dim;
  AttentionParams ap{static_cast<int>(n_head), static_cast<int>(n_head_kv), static_cast<int>(head_dim),
                     1.0f / std::sqrt(static_cast<float>(head_dim))};
  auto step = [&] {
    Tensor q = qkv(0, n_head), k = qkv(head_dim * n_head, n_head_kv), v = qkv(head_dim * (n_head + n_head_kv), n_head_kv);
    if (fused) {
      MatmulFusion f;
      f.norm = &*nw;
      f.scratch = &*scratch;
      backend->fused_matmul(*w, *x, *y, f);
      backend->rope_kv_store(q, k, v, *kc, *vc, *pos, rp);
    } else {
      backend->rms_norm(*x, *nw, 1e-5f, *h);
      backend->matmul(*w, *h, *y);
      backend->rope(q, *pos, rp);
      backend->rope(k, *pos, rp);
      backend->kv_store(k, v, *kc, *vc, *pos);
    }
    backend->attention(q, *kc, *vc, *pos, ap, *att);
    if (fused) {
      Tensor flat = *att;
      flat.ne = {head_dim * n_head, 1, 1, 1};
      backend->argmax(flat, *id);
    }
  };
  auto set_inputs = [&](int32_t position, std::vector<float>& xv) {
    for (float& v : xv) v = dist(rng);
    backend->write(*x, xv.data(), xv.size() * sizeof(float));
    backend->write(*pos, &position, sizeof position);
  };
  auto read_att = [&] {  // the attention output, then (fused) the argmax id as a float
    std::vector<float> out(static_cast<size_t>(head_dim * n_head));
    backend->read(*att, out.data(), out.size() * sizeof(float));
    if (fused) {
      int32_t best = -1;
      backend->read(*id, &best, sizeof best);
      const auto it = std::max_element(out.begin(), out.end());
      EXPECT_EQ(best, it - out.begin()) << "argmax";
      out.push_back(static_cast<float>(best));
    }
    return out;
  };

  // Eager: positions 0..9, remembering each output; then replay the graph over the same inputs
  // from a cleared cache.
  std::vector<std::vector<float>> inputs(10, std::vector<float>(d)), eager;
  for (int32_t i = 0; i < 10; ++i) {
    set_inputs(i, inputs[i]);
    step();
    eager.push_back(read_att());
  }
  ASSERT_TRUE(backend->status().ok());
  backend->write(*kc, zeros.data(), zeros.size());
  backend->write(*vc, zeros.data(), zeros.size());
  ASSERT_TRUE(backend->capture_graph(step).ok());
  for (int32_t i = 0; i < 10; ++i) {
    backend->write(*x, inputs[i].data(), inputs[i].size() * sizeof(float));
    backend->write(*pos, &i, sizeof i);
    ASSERT_TRUE(backend->replay_graph().ok());
    EXPECT_EQ(read_att(), eager[i]) << "replay " << i << " differs from the eager run";
  }
  EXPECT_TRUE(backend->status().ok());
}

TEST(CudaGraph, ReplayMatchesEagerRunsWithNewInputs) {
  SKIP_WITHOUT_GPU();
  graph_replay_matches_eager(false);
}

TEST(CudaGraph, FusedStepReplayMatchesEagerRuns) {
  SKIP_WITHOUT_GPU();
  graph_replay_matches_eager(true);
}

// ---- errors ----

TEST(CudaErrors, OutOfMemoryNamesTheBytes) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  auto huge = backend->alloc(DType::F32, {int64_t{1} << 40, 1, 1, 1});  // 4 TiB
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), StatusCode::out_of_memory);
  EXPECT_NE(huge.status().message().find("4398046511104 bytes"), std::string::npos) << huge.status().message();
  auto partial_block = backend->alloc(DType::Q4_0, {33, 2, 1, 1});
  ASSERT_FALSE(partial_block.ok());
  EXPECT_NE(partial_block.status().message().find("block size"), std::string::npos);
}

TEST(CudaErrors, BadShapeIsReportedAndSkipped) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  auto a = backend->alloc(DType::F32, {8, 1, 1, 1});
  auto b = backend->alloc(DType::F32, {9, 1, 1, 1});
  ASSERT_TRUE(a.ok() && b.ok());
  backend->add(*a, *b, *a);
  const Status s = backend->status();
  EXPECT_EQ(s.code(), StatusCode::invalid_argument);
  EXPECT_NE(s.message().find("add"), std::string::npos) << s.message();
  EXPECT_TRUE(backend->status().ok()) << "status() clears the error it returned";
  EXPECT_FALSE(backend->replay_graph().ok()) << "no graph was captured";
}

TEST(CudaBackend, NameAndSupport) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  EXPECT_EQ(backend->name().rfind("cuda (", 0), 0u) << backend->name();
  EXPECT_TRUE(backend->supports(DType::Q4_K));
  EXPECT_FALSE(backend->supports(DType::Q2_K));
  EXPECT_GT(backend->multiprocessor_count(), 0);
}

}  // namespace
}  // namespace bl
