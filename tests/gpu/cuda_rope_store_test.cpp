// The QKV GEMV doing the rope and the KV-cache store of the attention after it
// (MatmulFusion::rope_next, GemvRopeStore in the dp4a or the fp32 GEMV's epilogue): q and k as it leaves them
// against a host rope in fp64 of the same GEMV's output without the hint, the cache's new slot,
// and the attention's output against the same ops without the hint. Without a GPU every test skips.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "core/half.h"
#include "gpu/cuda_test_util.h"
#include "quant/quant.h"

namespace bl {
namespace {

// ggml's normal rope of pairs (2i, 2i + 1) of every head of x [head_dim, heads] at pos, in fp64.
std::vector<double> rope_on_host(const float* x, int head_dim, int64_t heads, int n_dims, float base, int64_t pos) {
  std::vector<double> y(x, x + head_dim * heads);
  for (int64_t h = 0; h < heads; ++h)
    for (int i = 0; i < n_dims / 2; ++i) {
      const double theta = static_cast<double>(pos) * std::pow(static_cast<double>(base), -2.0 * i / n_dims);
      const double x0 = x[h * head_dim + 2 * i], x1 = x[h * head_dim + 2 * i + 1];
      y[h * head_dim + 2 * i] = x0 * std::cos(theta) - x1 * std::sin(theta);
      y[h * head_dim + 2 * i + 1] = x0 * std::sin(theta) + x1 * std::cos(theta);
    }
  return y;
}

// Head dims 128 (the rope inside the attention kernel without the hint) and 64 (the rope kernel);
// Q4_0 at 2048 columns takes x quantized once, Q4_K the norm inside the dp4a GEMV, F16 and BF16
// the norm inside the fp32 GEMV, bl4g128 and bl3g64 x quantized once before the bl GEMV. (Where
// a GEMV did not take the hint, q and k come back unrotated and the first check below fails.)
TEST(CudaRopeStore, HintGivesTheResultsOfThePlainOps) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  std::mt19937_64 rng(2711);
  const int64_t cols = 2048, n_ctx = 64, pos = 37;
  const float eps = 1e-5f, base = 500000.0f;
  for (int head_dim : {128, 64}) {
    for (DType t : {DType::Q4_0, DType::Q4_K, DType::F16, DType::BF16, DType::BL4G128, DType::BL3G64}) {
      SCOPED_TRACE(std::string(dtype_name(t)) + " head_dim " + std::to_string(head_dim));
      const int n_head = 8, n_head_kv = 2;
      const int64_t q_rows = int64_t{n_head} * head_dim, kv_rows = int64_t{n_head_kv} * head_dim;
      const int64_t rows = q_rows + 2 * kv_rows;
      std::vector<uint8_t> wq(static_cast<size_t>(rows) * row_bytes(t, cols));
      const std::vector<float> w_values = random_vector(rows * cols, 1.0f, rng);
      quantize_matrix(t, w_values.data(), wq.data(), rows, cols);
      const std::vector<float> x_host = random_vector(cols, 1.0f, rng), g_host = random_vector(cols, 1.0f, rng);
      std::vector<uint16_t> history(static_cast<size_t>(kv_rows * n_ctx));
      for (uint16_t& h : history) h = f32_to_fp16(std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng));
      auto w = backend->upload_weight(make_tensor_2d(wq.data(), t, cols, rows));
      auto x = backend->alloc(DType::F32, {cols, 1, 1, 1});
      auto g = backend->alloc(DType::F32, {cols, 1, 1, 1});
      auto qkv = backend->alloc(DType::F32, {rows, 1, 1, 1});
      auto out = backend->alloc(DType::F32, {head_dim, n_head, 1, 1});
      auto positions = backend->alloc(DType::I32, {1, 1, 1, 1});
      auto scratch = backend->alloc(DType::F32, {cols + rows, 1, 1, 1});
      auto k_cache = backend->alloc(DType::F16, {head_dim, n_head_kv, n_ctx, 1});
      auto v_cache = backend->alloc(DType::F16, {head_dim, n_head_kv, n_ctx, 1});
      ASSERT_TRUE(w.ok() && x.ok() && g.ok() && qkv.ok() && out.ok() && positions.ok() && scratch.ok() &&
                  k_cache.ok() && v_cache.ok());
      backend->write(*x, x_host.data(), cols * sizeof(float));
      backend->write(*g, g_host.data(), cols * sizeof(float));
      const int32_t p32 = static_cast<int32_t>(pos);
      backend->write(*positions, &p32, sizeof p32);
      Tensor q = *qkv, k = *qkv, v = *qkv;  // views of qkv = [q; k; v], as the model's
      q.ne = {head_dim, n_head, 1, 1};
      k.ne = v.ne = {head_dim, n_head_kv, 1, 1};
      k.data = qkv->as<float>() + q_rows;
      v.data = qkv->as<float>() + q_rows + kv_rows;
      const RopeParams rope{.n_dims = head_dim, .freq_base = base};
      const AttentionParams attn{.n_head = n_head, .n_head_kv = n_head_kv, .head_dim = head_dim,
                                 .scale = 1.0f / std::sqrt(static_cast<float>(head_dim))};
      MatmulFusion normed{.norm = &*g, .eps = eps, .scratch = &*scratch};

      std::vector<float> raw(static_cast<size_t>(rows)), roped(static_cast<size_t>(rows));
      std::vector<float> att[2];
      std::vector<uint16_t> k_slot[2], v_slot[2];
      for (int hinted = 0; hinted < 2; ++hinted) {
        backend->write(*k_cache, history.data(), history.size() * sizeof(uint16_t));
        backend->write(*v_cache, history.data(), history.size() * sizeof(uint16_t));
        MatmulFusion f = normed;
        if (hinted) {
          if (t == DType::Q4_0 || t == DType::Q4_K) {
            ASSERT_TRUE(cuda::gemv_dp4a_applies(cuda::WeightView{w->data, t, cols, rows, w->row_size(),
                                                                 cuda::weight_tileable(t, cols)}, 1));
          }
          f.rope_next = {&q, &k, &v, &*k_cache, &*v_cache, &*positions, &rope};
        }
        backend->fused_matmul(*w, *x, *qkv, f);
        backend->read(*qkv, (hinted ? roped : raw).data(), rows * sizeof(float));
        backend->rope_kv_store_attention(q, k, v, *k_cache, *v_cache, *positions, rope, attn, *out);
        att[hinted].resize(static_cast<size_t>(q_rows));
        backend->read(*out, att[hinted].data(), q_rows * sizeof(float));
        std::vector<uint16_t> kc(history.size()), vc(history.size());
        backend->read(*k_cache, kc.data(), kc.size() * sizeof(uint16_t));
        backend->read(*v_cache, vc.data(), vc.size() * sizeof(uint16_t));
        k_slot[hinted].assign(kc.begin() + pos * kv_rows, kc.begin() + (pos + 1) * kv_rows);
        v_slot[hinted].assign(vc.begin() + pos * kv_rows, vc.begin() + (pos + 1) * kv_rows);
        ASSERT_TRUE(backend->status().ok()) << backend->status().message();
      }
      // q and k as the hinted GEMV left them: the unhinted GEMV's values rotated (fp64 on the host);
      // v as it was. The GEMVs' sums are the same dot products, so only the rope's rounding differs.
      const std::vector<double> q_ref = rope_on_host(raw.data(), head_dim, n_head, head_dim, base, pos);
      const std::vector<double> k_ref = rope_on_host(raw.data() + q_rows, head_dim, n_head_kv, head_dim, base, pos);
      double worst = 0.0;
      for (int64_t i = 0; i < q_rows; ++i) worst = std::max(worst, std::fabs(roped[i] - q_ref[i]));
      for (int64_t i = 0; i < kv_rows; ++i) worst = std::max(worst, std::fabs(roped[q_rows + i] - k_ref[i]));
      for (int64_t i = 0; i < kv_rows; ++i)
        worst = std::max(worst, std::fabs(static_cast<double>(roped[q_rows + kv_rows + i]) - raw[q_rows + kv_rows + i]));
      double scale = 0.0;
      for (float r : raw) scale = std::max(scale, std::fabs(static_cast<double>(r)));
      EXPECT_LE(worst, 1e-5 * scale) << "q, k rotated / v by the GEMV's epilogue";
      // The cache's new slot: k rotated, v, in f16 (one rounding either way).
      for (int64_t i = 0; i < kv_rows; ++i) {
        EXPECT_NEAR(fp16_to_f32(k_slot[1][i]), k_ref[i], 1e-3 * scale) << "k slot " << i;
        EXPECT_NEAR(fp16_to_f32(v_slot[1][i]), raw[q_rows + kv_rows + i], 1e-3 * scale) << "v slot " << i;
        EXPECT_NEAR(fp16_to_f32(k_slot[1][i]), fp16_to_f32(k_slot[0][i]), 1e-3 * scale) << "k slot " << i;
      }
      // The attention after it: as without the hint (rotated once, not twice).
      double att_scale = 0.0, att_worst = 0.0;
      for (int64_t i = 0; i < q_rows; ++i) {
        att_scale = std::max(att_scale, std::fabs(static_cast<double>(att[0][i])));
        att_worst = std::max(att_worst, std::fabs(static_cast<double>(att[1][i]) - att[0][i]));
      }
      EXPECT_GT(att_scale, 0.0);
      EXPECT_LE(att_worst, 1e-3 * att_scale) << "attention output with the hint against without";
    }
  }
}

}  // namespace
}  // namespace bl
