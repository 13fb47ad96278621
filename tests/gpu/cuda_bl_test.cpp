// bl<b>g<g> weights on the CUDA backend (in their device layout, bl_device_layout.h: gemv_bl.cu,
// bl_rows.cu) against the reference backend (fp64 dot products of dequantize_matrix_row): every
// bit width at g = 32, 64, 128, rows 16, 48 and 4112 (one tile, three, 257), several groups per
// row, 1..5 and 17 tokens (1..4: one GEMV launch; 5: two; 17: dequantize + cuBLAS), fresh random
// inputs, the output poisoned with NaN before each run; read-back equal to the uploaded bytes;
// write() stores the same device bytes as upload_weight and refuses partial tile groups; get_rows.
// The codes the dequantizing kernel takes out of the code lines in the device layout
// (bltile::codes_line_dword, run on the host after swap_bl_layout_on_host) equal
// unpack_bl_codes for every width and group (no GPU needed).
// Decode through fused_matmul (the model's path): one token with the norm / SwiGLU prologue
// inside the GEMV or x quantized once before it, 2..5 tokens, the residual add
// (FusedMatmulAgainstFp64). 5..16 tokens on the skinny tensor-core GEMM, with a bias, the add
// and K split across blocks (SkinnyGemmAgainstFp64). Prefill through the GEMM with the
// dequantization in its main loop at 2..4 bits (InLoopGemmAgainstFp64).
// Without a GPU every test skips ("no CUDA device").
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "core/half.h"
#include "gpu/cuda_test_util.h"
#include "kernels/cuda/bl_device_layout.h"
#include "kernels/cuda/bl_tiles.cuh"
#include "kernels/cuda/launchers.h"
#include "quant/bl_group.h"
#include "quant/quant.h"

namespace bl {
namespace {

struct BlProblem {
  std::vector<uint8_t> bytes;  // as quantize_matrix writes them (the file's bytes)
  std::vector<float> w;        // dequantized [rows][cols]
};

BlProblem make_weight(DType t, int64_t cols, int64_t rows, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(cols * rows));
  for (float& v : values) v = dist(rng);
  BlProblem p;
  p.bytes.resize(static_cast<size_t>(rows) * row_bytes(t, cols));
  quantize_matrix(t, values.data(), p.bytes.data(), rows, cols);
  p.w.resize(values.size());
  for (int64_t r = 0; r < rows; ++r) dequantize_matrix_row(t, p.bytes.data(), cols, r, p.w.data() + r * cols);
  return p;
}

// Max over outputs of |got - ref| / allowed. allowed = tol * sum_k |w_k x_k| + (int8 x only)
// sum_k |w_k| d_b / 2, d_b = max|x| of k's block of 32 / 127: the most the kernel's int8
// rounding of x can move the exact sum (0.1 % slack for the fp32 scale arithmetic).
double error_ratio(const BlProblem& p, const std::vector<float>& x, const std::vector<float>& got,
                   const std::vector<float>& ref, int64_t cols, int64_t rows, int64_t n, double tol, bool int8_x) {
  double worst = 0.0;
  for (int64_t t = 0; t < n; ++t) {
    std::vector<double> half_step(static_cast<size_t>(cols), 0.0);
    if (int8_x)
      for (int64_t b = 0; b < cols; b += 32) {
        float amax = 0.0f;
        for (int64_t k = b; k < b + 32; ++k) amax = std::max(amax, std::fabs(x[t * cols + k]));
        for (int64_t k = b; k < b + 32; ++k) half_step[k] = amax / 127.0 / 2.0;
      }
    for (int64_t r = 0; r < rows; ++r) {
      double size = 0.0, rounding = 0.0;
      for (int64_t k = 0; k < cols; ++k) {
        const double w = p.w[r * cols + k];
        size += std::fabs(w * x[t * cols + k]);
        rounding += std::fabs(w) * half_step[k];
      }
      const float g = got[t * rows + r];
      if (!std::isfinite(g)) return INFINITY;
      const double allowed = std::max(tol * size + 1.001 * rounding, 1e-30);
      worst = std::max(worst, std::fabs(g - static_cast<double>(ref[t * rows + r])) / allowed);
    }
  }
  return worst;
}

// W x in fp64 from the dequantized rows: out [n][rows] for x [n][cols].
std::vector<float> product_fp64(const BlProblem& p, const std::vector<float>& x, int64_t cols, int64_t rows, int64_t n) {
  std::vector<float> out(static_cast<size_t>(rows * n));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0.0;
      for (int64_t k = 0; k < cols; ++k) sum += static_cast<double>(p.w[r * cols + k]) * x[j * cols + k];
      out[j * rows + r] = static_cast<float>(sum);
    }
  return out;
}

std::vector<DType> every_bl_type() {
  std::vector<DType> types;
  for (int bits = 1; bits <= 8; ++bits)
    for (int g : {32, 64, 128}) types.push_back(*quant::bl_group_dtype(bits, g));
  return types;
}

TEST(CudaBl, MatmulEveryWidthAgainstReference) {
  SKIP_WITHOUT_GPU();
  auto opened = open_cuda_backend(0);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  CudaBackend& cuda = **opened;
  auto ref = make_reference_backend();
  std::mt19937_64 rng(2026);
  std::uniform_real_distribution<float> xdist(-1.0f, 1.0f);
  double worst = 0.0;
  for (DType t : every_bl_type()) {
    ASSERT_TRUE(cuda.supports(t)) << dtype_name(t);
    const int g = quant::bl_group_shape(t)->group_size;
    struct Shape {
      int64_t cols, rows;
    };
    // 3 and 5 groups per row; 4112 rows = 257 tiles, more than one pass of the grid.
    for (const Shape s : {Shape{3 * g, 16}, Shape{5 * g, 48}, Shape{3 * g, 4096 + 16}}) {
      const BlProblem p = make_weight(t, s.cols, s.rows, rng);
      Tensor host_w = make_tensor_2d(const_cast<uint8_t*>(p.bytes.data()), t, s.cols, s.rows);
      auto w = cuda.upload_weight(host_w);
      ASSERT_TRUE(w.ok()) << w.status().message();
      std::vector<uint8_t> back(p.bytes.size(), 0);
      cuda.read(*w, back.data(), back.size());
      ASSERT_TRUE(cuda.status().ok());
      EXPECT_EQ(back, p.bytes) << dtype_name(t) << ": read() must give the uploaded bytes";
      for (int64_t n : {1, 2, 3, 4, 5, 17}) {
        if (s.rows > 48 && n != 1 && n != 4 && n != 17) continue;
        SCOPED_TRACE(std::string(dtype_name(t)) + " cols=" + std::to_string(s.cols) + " rows=" +
                     std::to_string(s.rows) + " n=" + std::to_string(n));
        std::vector<float> xv(static_cast<size_t>(s.cols * n));
        for (float& v : xv) v = xdist(rng);
        auto x = cuda.alloc(DType::F32, {s.cols, n, 1, 1});
        auto out = cuda.alloc(DType::F32, {s.rows, n, 1, 1});
        ASSERT_TRUE(x.ok() && out.ok());
        cuda.write(*x, xv.data(), xv.size() * sizeof(float));
        const std::vector<uint8_t> poison(out->bytes(), 0xff);  // NaN
        cuda.write(*out, poison.data(), poison.size());
        cuda.matmul(*w, *x, *out);
        std::vector<float> got(static_cast<size_t>(s.rows * n));
        cuda.read(*out, got.data(), got.size() * sizeof(float));
        ASSERT_TRUE(cuda.status().ok());

        std::vector<float> want(got.size());
        Tensor rx = make_tensor_2d(xv.data(), DType::F32, s.cols, n);
        Tensor rout = make_tensor_2d(want.data(), DType::F32, s.rows, n);
        ref->matmul(host_w, rx, rout);
        // GEMV (n <= 16): int8 x, fp32 sums (1e-5); n > 16: fp16 operands on tensor cores (2e-3).
        const bool gemv = n <= cuda::kGemvMaxTokens;
        const double e = error_ratio(p, xv, got, want, s.cols, s.rows, n, gemv ? 1e-5 : 2e-3, gemv);
        EXPECT_LE(e, 1.0);
        worst = std::max(worst, e);
      }
    }
  }
  std::printf("[ bl matmul ] max error / tolerance = %.3g\n", worst);
}

template <int kBits>
void check_codes_of_lines(std::mt19937_64& rng) {
  for (int g : {32, 64, 128}) {
    const DType t = *quant::bl_group_dtype(kBits, g);
    const quant::BlGroupShape shape = *quant::bl_group_shape(t);
    const BlProblem p = make_weight(t, g, 16, rng);  // one tile group
    std::vector<uint8_t> device = p.bytes;
    ASSERT_TRUE(cuda::swap_bl_layout_on_host(t, device.data(), device.size()));
    for (int r = 0; r < 16; ++r) {
      uint8_t want[128];
      float s, z;
      quant::unpack_bl_codes(shape, p.bytes.data(), r, want, s, z);
      for (int xb = 0; xb < g / 32; ++xb) {
        uint32_t dwords[kBits], codes[8] = {};
        for (int u = 0; u < kBits; ++u)
          std::memcpy(&dwords[u], device.data() + cuda::bltile::kHeaderBytes +
                                      cuda::bltile::kLineBytes * (kBits * xb + u) + 4 * r, 4);
        cuda::bltile::codes_of_lines<kBits>(dwords, codes);
        for (int col = 0; col < 32; ++col)
          ASSERT_EQ((codes[col / 4] >> (8 * (col % 4))) & 0xFF, want[32 * xb + col])
              << dtype_name(t) << " row " << r << " column " << 32 * xb + col;
      }
    }
  }
}

TEST(CudaBl, CodesFromLinesEqualUnpackOnHost) {
  std::mt19937_64 rng(19);
  check_codes_of_lines<1>(rng);
  check_codes_of_lines<2>(rng);
  check_codes_of_lines<3>(rng);
  check_codes_of_lines<4>(rng);
  check_codes_of_lines<5>(rng);
  check_codes_of_lines<6>(rng);
  check_codes_of_lines<7>(rng);
  check_codes_of_lines<8>(rng);
}

// fused_matmul with cols % 256 == 0 (gemv_bl_token_kernel): one token with x' = x, x * norm /
// rms or silu(x) * up, with and without the residual add; 2..5 tokens with x' = x, with and
// without the add, 4 a launch on the token kernel and (5 tokens) on the skinny GEMM, which with
// tensor cores off runs as two launches of the token kernel;
// against W x' in fp64 from the dequantized rows. For one token,
// columns 768 take the prologue inside every block, wider ones x quantized once by a kernel
// before the GEMV; 4352 leaves the last of a tile's x-block rounds mostly empty; 14336 gives each
// lane 7 x blocks a tile (the loads cross tile ends), 4112 rows 257 tiles (more than one pass of
// the grid). Every width and group at the two small shapes, a few types at the big ones (the
// host's fp64 product is the slow part).
TEST(CudaBl, FusedMatmulAgainstFp64) {
  SKIP_WITHOUT_GPU();
  auto opened = open_cuda_backend(0);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  CudaBackend& cuda = **opened;
  std::mt19937_64 rng(2611);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  enum Mode { kPlain, kNorm, kGate, kAdd, kGateAdd, kNormAdd };
  struct Shape {
    int64_t cols, rows;
  };
  const std::vector<DType> big_types = {*quant::bl_group_dtype(4, 128), *quant::bl_group_dtype(2, 128),
                                        *quant::bl_group_dtype(3, 64), *quant::bl_group_dtype(8, 32)};
  double worst = 0.0;
  for (DType t : every_bl_type())
    for (const Shape s : {Shape{768, 48}, Shape{2048, 16}, Shape{4352, 4112}, Shape{14336, 48}})
      for (int64_t n : {1, 2, 3, 4, 5})
        for (Mode mode : {kPlain, kNorm, kGate, kAdd, kGateAdd, kNormAdd}) {
          const bool big = s.cols * s.rows > 2048 * 16;
          if (big && std::find(big_types.begin(), big_types.end(), t) == big_types.end()) continue;
          if (big && s.rows > 48 && mode != kNorm && mode != kGateAdd && mode != kAdd) continue;
          if (n > 1 && mode != kPlain && mode != kAdd) continue;  // prologues: one token
          if (n > 1 && big && n != 4) continue;
          SCOPED_TRACE(std::string(dtype_name(t)) + " cols=" + std::to_string(s.cols) + " rows=" +
                       std::to_string(s.rows) + " n=" + std::to_string(n) + " mode=" + std::to_string(mode));
          const bool norm = mode == kNorm || mode == kNormAdd, gate = mode == kGate || mode == kGateAdd,
                     acc = mode == kAdd || mode == kGateAdd || mode == kNormAdd;
          cuda::WeightView v;
          v.dtype = t, v.cols = s.cols, v.rows = s.rows;
          const BlProblem p = make_weight(t, s.cols, s.rows, rng);
          auto w = cuda.upload_weight(make_tensor_2d(const_cast<uint8_t*>(p.bytes.data()), t, s.cols, s.rows));
          ASSERT_TRUE(w.ok()) << w.status().message();
          v.data = w->data;
          ASSERT_TRUE(cuda::gemv_bl_token_applies(v));

          std::vector<float> x(static_cast<size_t>(s.cols * n)), up(x.size()), g(static_cast<size_t>(s.cols)),
              before(static_cast<size_t>(s.rows * n));
          for (float& e : x) e = 4.0f * dist(rng);
          for (float& e : up) e = dist(rng);
          for (float& e : g) e = dist(rng);
          for (float& e : before) e = dist(rng);
          std::vector<float> xp(x.size());  // x', what the product is checked against
          for (int64_t j = 0; j < n; ++j) {
            double ss = 0.0;
            for (int64_t k = 0; k < s.cols; ++k) ss += static_cast<double>(x[j * s.cols + k]) * x[j * s.cols + k];
            const double inv_rms = 1.0 / std::sqrt(ss / static_cast<double>(s.cols) + 1e-5);
            for (int64_t k = 0; k < s.cols; ++k) {
              const size_t i = static_cast<size_t>(j * s.cols + k);
              const double e = x[i];
              xp[i] = static_cast<float>(norm ? e * inv_rms * g[k] : gate ? e / (1.0 + std::exp(-e)) * up[i] : e);
            }
          }
          auto xt = cuda.alloc(DType::F32, {s.cols, n, 1, 1});
          auto ut = cuda.alloc(DType::F32, {s.cols, n, 1, 1});
          auto gt = cuda.alloc(DType::F32, {s.cols, 1, 1, 1});
          auto out = cuda.alloc(DType::F32, {s.rows, n, 1, 1});
          auto scratch = cuda.alloc(DType::F32, {(s.cols + s.rows) * n, 1, 1, 1});
          ASSERT_TRUE(xt.ok() && ut.ok() && gt.ok() && out.ok() && scratch.ok());
          cuda.write(*xt, x.data(), x.size() * sizeof(float));
          cuda.write(*ut, up.data(), up.size() * sizeof(float));
          cuda.write(*gt, g.data(), g.size() * sizeof(float));
          MatmulFusion f;
          f.norm = norm ? &*gt : nullptr;
          f.up = gate ? &*ut : nullptr;
          f.accumulate = acc;
          f.scratch = &*scratch;
          const std::vector<float> want = product_fp64(p, xp, s.cols, s.rows, n);
          // The skinny GEMM where it applies (fp16 x and weights: 2e-3 of sum |w x|), and with
          // tensor cores off the 4-token kernel (int8 x).
          for (bool tensor_cores : {true, false}) {
            if (n == 1 && !tensor_cores) continue;
            cuda::set_tensor_core_gemv(tensor_cores);
            const bool skinny = cuda::gemv_bl_skinny_applies(v, static_cast<int>(n));
            SCOPED_TRACE(skinny ? "skinny GEMM" : "dp4a GEMV");
            if (acc) {
              cuda.write(*out, before.data(), before.size() * sizeof(float));
            } else {
              const std::vector<uint8_t> poison(out->bytes(), 0xff);  // NaN
              cuda.write(*out, poison.data(), poison.size());
            }
            cuda.fused_matmul(*w, *xt, *out, f);
            std::vector<float> got(static_cast<size_t>(s.rows * n));
            cuda.read(*out, got.data(), got.size() * sizeof(float));
            ASSERT_TRUE(cuda.status().ok()) << cuda.status().message();
            if (acc)
              for (size_t i = 0; i < got.size(); ++i) got[i] -= before[i];
            const double e = error_ratio(p, xp, got, want, s.cols, s.rows, n, skinny ? 2e-3 : 1e-5, !skinny);
            EXPECT_LE(e, 1.0);
            worst = std::max(worst, e);
          }
          cuda::set_tensor_core_gemv(true);
        }
  std::printf("[ bl fused matmul ] max error / tolerance = %.3g\n", worst);
}

// The skinny GEMM on bl tiles (gemv_skinny_bl.cu), launched directly: every width but 7 bits
// (which it refuses) and every group; 5..16 tokens (one and two token tiles of 8, a tile cut
// short; fewer it refuses); rows 16 (one warp of a 128-row block), 48, 272 (17 tiles: a block
// mostly past the end) and 4112; columns 256 (no K split), 768 and 4096 (K split across
// blocks: atomics); out = W x + bias (NaN-poisoned before) and out += W x; against fp64 W x of
// the dequantized rows (2e-3 of sum |w x|: x and the weights rounded to fp16).
TEST(CudaBl, SkinnyGemmAgainstFp64) {
  SKIP_WITHOUT_GPU();
  auto opened = open_cuda_backend(0);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  CudaBackend& cuda = **opened;
  std::mt19937_64 rng(2911);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  struct Case {
    int64_t cols, rows;
    std::vector<int64_t> tokens;
  };
  const std::vector<Case> cases = {{256, 16, {5, 8, 9, 16}}, {768, 48, {6, 16}}, {4096, 272, {7, 12}},
                                   {768, 4112, {16}}};
  double worst = 0.0;
  for (DType t : every_bl_type())
    for (const Case& k : cases) {
      const int bits = quant::bl_group_shape(t)->bits;
      if (k.rows > 1000 && bits != 2 && bits != 4) continue;  // the host's fp64 product is the slow part
      const BlProblem p = make_weight(t, k.cols, k.rows, rng);
      auto w = cuda.upload_weight(make_tensor_2d(const_cast<uint8_t*>(p.bytes.data()), t, k.cols, k.rows));
      ASSERT_TRUE(w.ok()) << w.status().message();
      const cuda::WeightView v{w->data, t, k.cols, k.rows, 0, false};
      for (int64_t n : k.tokens) {
        SCOPED_TRACE(std::string(dtype_name(t)) + " cols=" + std::to_string(k.cols) + " rows=" +
                     std::to_string(k.rows) + " n=" + std::to_string(n));
        if (bits == 7) {
          EXPECT_FALSE(cuda::gemv_bl_skinny_applies(v, static_cast<int>(n)));
          continue;
        }
        EXPECT_FALSE(cuda::gemv_bl_skinny_applies(v, cuda::kBlSkinnyMinTokens - 1));
        ASSERT_TRUE(cuda::gemv_bl_skinny_applies(v, static_cast<int>(n)));
        std::vector<float> x(static_cast<size_t>(k.cols * n)), bias(static_cast<size_t>(k.rows)),
            before(static_cast<size_t>(k.rows * n));
        for (float& e : x) e = dist(rng);
        for (float& e : bias) e = dist(rng);
        for (float& e : before) e = dist(rng);
        auto xt = cuda.alloc(DType::F32, {k.cols, n, 1, 1});
        auto bt = cuda.alloc(DType::F32, {k.rows, 1, 1, 1});
        auto out = cuda.alloc(DType::F32, {k.rows, n, 1, 1});
        ASSERT_TRUE(xt.ok() && bt.ok() && out.ok());
        cuda.write(*xt, x.data(), x.size() * sizeof(float));
        cuda.write(*bt, bias.data(), bias.size() * sizeof(float));
        const std::vector<float> want = product_fp64(p, x, k.cols, k.rows, n);
        for (bool accumulate : {false, true}) {
          SCOPED_TRACE(accumulate ? "out += W x" : "out = W x + bias");
          if (accumulate) {
            cuda.write(*out, before.data(), before.size() * sizeof(float));
          } else {
            const std::vector<uint8_t> poison(out->bytes(), 0xff);  // NaN
            cuda.write(*out, poison.data(), poison.size());
          }
          cuda.synchronize();  // the launch below is on its own stream
          const float* bias_or_none = accumulate ? nullptr : bt->as<float>();
          ASSERT_TRUE(cuda::launch_gemv_bl_skinny(v, xt->as<float>(), static_cast<int>(n), out->as<float>(),
                                                  bias_or_none, accumulate, stream));
          ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
          ASSERT_EQ(cudaGetLastError(), cudaSuccess);
          std::vector<float> got(want.size());
          cuda.read(*out, got.data(), got.size() * sizeof(float));
          ASSERT_TRUE(cuda.status().ok()) << cuda.status().message();
          for (int64_t j = 0; j < n; ++j)
            for (int64_t r = 0; r < k.rows; ++r)
              got[j * k.rows + r] -= accumulate ? before[j * k.rows + r] : bias[r];
          const double e = error_ratio(p, x, got, want, k.cols, k.rows, n, 2e-3, false);
          EXPECT_LE(e, 1.0);
          worst = std::max(worst, e);
        }
      }
    }
  cudaStreamDestroy(stream);
  std::printf("[ bl skinny GEMM ] max error / tolerance = %.3g\n", worst);
}

// The prefill GEMM with the dequantization in its main loop (gemm_in_loop_wgmma.cu, an sm_90a
// GPU) reads bl<2..4>g<g> as stored: every group size, both block tiles (128 x 256, 128 x 128
// tokens) and clusters of 2 and 1; rows 48 (one 128-row block mostly past the end), 272 (17
// tiles: 3 blocks); columns 256 and 1280 (g = 128: 10 groups, 20 k tiles); 17 and 300 tokens
// (a token tile cut short); out = W x (NaN-poisoned before) and out += W x; against fp64 W x of
// the dequantized rows with x rounded to fp16 (2e-3 of sum |w x|: the fp16 weights). Asserts
// that the in-loop kernel ran (its launch count).
TEST(CudaBl, InLoopGemmAgainstFp64) {
  SKIP_WITHOUT_GPU();
  auto opened = open_cuda_backend(0);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  CudaBackend& cuda = **opened;
  if (!cuda::gemm_in_loop_applies(cuda::WeightView{nullptr, *quant::bl_group_dtype(4, 128), 256, 48, 0, false}, 40))
    GTEST_SKIP() << "the in-loop GEMM needs an sm_90a GPU (H100/H200)";
  std::mt19937_64 rng(2620);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  double worst = 0.0;
  for (int bits : {2, 3, 4})
    for (int g : {32, 64, 128})
      for (cuda::InLoopGemmTile tile : {cuda::InLoopGemmTile::rows128_tokens256, cuda::InLoopGemmTile::rows128_tokens128})
        for (int cluster : {2, 1})
          for (int64_t cols : {256, 1280})
            for (int64_t rows : {48, 272})
              for (int64_t n : {17, 300}) {
                const DType t = *quant::bl_group_dtype(bits, g);
                if ((cluster == 1 || tile == cuda::InLoopGemmTile::rows128_tokens128) && (cols != 256 || rows != 272))
                  continue;
                SCOPED_TRACE(std::string(dtype_name(t)) + " tile " + std::to_string(static_cast<int>(tile)) +
                             " cluster " + std::to_string(cluster) + " cols=" + std::to_string(cols) +
                             " rows=" + std::to_string(rows) + " n=" + std::to_string(n));
                const InLoopGemmSwitchedOn switched_on(tile, cluster);
                const BlProblem p = make_weight(t, cols, rows, rng);
                auto w = cuda.upload_weight(make_tensor_2d(const_cast<uint8_t*>(p.bytes.data()), t, cols, rows));
                ASSERT_TRUE(w.ok()) << w.status().message();
                ASSERT_TRUE(cuda::gemm_in_loop_applies(cuda::WeightView{w->data, t, cols, rows, 0, false}, n));
                std::vector<float> x(static_cast<size_t>(cols * n)), x_half(x.size()),
                    before(static_cast<size_t>(rows * n));
                for (size_t i = 0; i < x.size(); ++i) {
                  x[i] = dist(rng);
                  x_half[i] = fp16_to_f32(f32_to_fp16(x[i]));  // the GEMM's fp16 operand
                }
                for (float& e : before) e = dist(rng);
                auto xt = cuda.alloc(DType::F32, {cols, n, 1, 1});
                auto out = cuda.alloc(DType::F32, {rows, n, 1, 1});
                ASSERT_TRUE(xt.ok() && out.ok());
                cuda.write(*xt, x.data(), x.size() * sizeof(float));
                const std::vector<float> want = product_fp64(p, x_half, cols, rows, n);
                for (bool accumulate : {false, true}) {
                  SCOPED_TRACE(accumulate ? "out += W x" : "out = W x");
                  if (accumulate) {
                    cuda.write(*out, before.data(), before.size() * sizeof(float));
                  } else {
                    const std::vector<uint8_t> poison(out->bytes(), 0xff);  // NaN
                    cuda.write(*out, poison.data(), poison.size());
                  }
                  const int64_t launches = cuda::in_loop_gemm_launch_count();
                  if (accumulate)
                    cuda.fused_matmul(*w, *xt, *out, MatmulFusion{.accumulate = true});
                  else
                    cuda.matmul(*w, *xt, *out);
                  std::vector<float> got(want.size());
                  cuda.read(*out, got.data(), got.size() * sizeof(float));
                  ASSERT_TRUE(cuda.status().ok()) << cuda.status().message();
                  EXPECT_EQ(cuda::in_loop_gemm_launch_count(), launches + 1) << "the in-loop GEMM did not run";
                  if (accumulate)
                    for (size_t i = 0; i < got.size(); ++i) got[i] -= before[i];
                  const double e = error_ratio(p, x_half, got, want, cols, rows, n, 2e-3, false);
                  EXPECT_LE(e, 1.0);
                  worst = std::max(worst, e);
                }
              }
  std::printf("[ bl in-loop GEMM ] max error / tolerance = %.3g\n", worst);
}

// The device bytes of a bl weight: what upload_weight and write() leave in device memory must
// be the file's bytes with each code-line dword transposed and the headers as they were (checked
// here on the host, dword by dword, independently of swap_bl_layout_on_host); read() gives the
// file's bytes back; write() of a part of a tile group is refused and changes nothing.
TEST(CudaBl, DeviceLayoutOfUploadAndWrite) {
  SKIP_WITHOUT_GPU();
  auto opened = open_cuda_backend(0);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  CudaBackend& cuda = **opened;
  std::mt19937_64 rng(11);
  for (DType t : {*quant::bl_group_dtype(2, 32), *quant::bl_group_dtype(3, 64), *quant::bl_group_dtype(4, 128)}) {
    SCOPED_TRACE(std::string(dtype_name(t)));
    const quant::BlGroupShape shape = *quant::bl_group_shape(t);
    const int64_t cols = 2 * shape.group_size, rows = 32;
    const BlProblem p = make_weight(t, cols, rows, rng);
    std::vector<uint8_t> want = p.bytes;
    const size_t group_bytes = static_cast<size_t>(shape.tile_group_bytes());
    for (size_t off = 0; off < want.size(); off += 4) {
      if (off % group_bytes < static_cast<size_t>(cuda::bltile::kHeaderBytes)) continue;
      uint32_t v;
      std::memcpy(&v, want.data() + off, 4);
      uint32_t tv = 0;  // byte m bit i <- byte i bit m, in each nibble
      for (int i = 0; i < 4; ++i)
        for (int m = 0; m < 4; ++m)
          for (int h = 0; h < 2; ++h) tv |= ((v >> (8 * i + 4 * h + m)) & 1u) << (8 * m + 4 * h + i);
      std::memcpy(want.data() + off, &tv, 4);
    }
    Tensor host_w = make_tensor_2d(const_cast<uint8_t*>(p.bytes.data()), t, cols, rows);
    auto up = cuda.upload_weight(host_w);
    auto written = cuda.alloc(t, {cols, rows, 1, 1});
    ASSERT_TRUE(up.ok() && written.ok());
    cuda.write(*written, p.bytes.data(), p.bytes.size());
    ASSERT_TRUE(cuda.status().ok());
    for (const Tensor* d : {&*up, &*written}) {
      std::vector<uint8_t> raw(want.size());
      ASSERT_EQ(cudaMemcpy(raw.data(), d->data, raw.size(), cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(raw, want) << (d == &*up ? "upload_weight" : "write");
      std::vector<uint8_t> back(p.bytes.size(), 0);
      cuda.read(*d, back.data(), back.size());
      ASSERT_TRUE(cuda.status().ok());
      EXPECT_EQ(back, p.bytes);
    }
    cuda.write(*written, p.bytes.data(), group_bytes / 2);  // half a tile group
    EXPECT_FALSE(cuda.status().ok()) << "a partial tile group must be refused";
    std::vector<uint8_t> raw(want.size());
    ASSERT_EQ(cudaMemcpy(raw.data(), written->data, raw.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(raw, want) << "the refused write changed the weight";
  }
}

TEST(CudaBl, GetRowsEqualsReference) {
  SKIP_WITHOUT_GPU();
  auto opened = open_cuda_backend(0);
  ASSERT_TRUE(opened.ok()) << opened.status().message();
  CudaBackend& cuda = **opened;
  std::mt19937_64 rng(7);
  for (DType t : every_bl_type()) {
    const int g = quant::bl_group_shape(t)->group_size;
    const int64_t d = 3 * g, vocab = 48;
    SCOPED_TRACE(std::string(dtype_name(t)));
    const BlProblem p = make_weight(t, d, vocab, rng);
    Tensor host_w = make_tensor_2d(const_cast<uint8_t*>(p.bytes.data()), t, d, vocab);
    auto table = cuda.upload_weight(host_w);
    ASSERT_TRUE(table.ok());
    std::vector<int32_t> ids = {0, 47, 17, 17, 31, 1, 46, -1};
    const int64_t n = static_cast<int64_t>(ids.size());
    auto dids = cuda.alloc(DType::I32, {n, 1, 1, 1});
    auto out = cuda.alloc(DType::F32, {d, n, 1, 1});
    ASSERT_TRUE(dids.ok() && out.ok());
    cuda.write(*dids, ids.data(), ids.size() * sizeof(int32_t));
    const std::vector<uint8_t> poison(out->bytes(), 0xff);
    cuda.write(*out, poison.data(), poison.size());
    cuda.get_rows(*table, *dids, *out);
    std::vector<float> got(static_cast<size_t>(d * n));
    cuda.read(*out, got.data(), got.size() * sizeof(float));
    ASSERT_TRUE(cuda.status().ok());
    // p.w is dequantize_matrix_row, what the reference backend's get_rows copies out.
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < d; ++k) {
        const float want = ids[i] >= 0 ? p.w[ids[i] * d + k] : 0.0f;  // out-of-range ids give zeros
        // s (q - z) in fp32 on both sides; 1e-6 relative allows a fused multiply-add.
        ASSERT_NEAR(got[i * d + k], want, 1e-6 * std::max(1.0f, std::fabs(want))) << "id " << ids[i] << " col " << k;
      }
  }
}

}  // namespace
}  // namespace bl
