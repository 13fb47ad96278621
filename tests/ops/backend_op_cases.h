// Op cases shared by every backend's op test: each op of a Backend under test is run against
// make_reference_backend() over many shapes (odd sizes included), with fresh random inputs
// per case, outputs poisoned with NaN before the run (so an element the backend forgot to
// write fails the "fully written" check), and a stated tolerance per op.
//
// Usage (tests/ops/cpu_backend_ops_test.cpp, later tests/gpu/):
//   auto backend = make_cpu_backend(2);
//   bl::op_cases::OpCases cases(*backend);
//   cases.rms_norm();  // EXPECT failures name the case; cases.all() runs every op
// A backend whose arithmetic differs by design (say fp16 accumulation) passes its own
// Tolerances, with the reason next to it.
//
// Shapes: widths d in {1, 7, 32, 64, 96, 33, 577, 4099}; n tokens in {1, 3, 17}; head_dim in
// {64, 128, 80, 100}; heads (q/kv) in {8/8, 8/2, 9/3, 8/1}; n_past in {0, 5, 300, 590} with
// caches of 640 slots whose unused slots hold random data (reading past positions[i] shows);
// F32 and F16 caches; matmul weights F32, F16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q6_K with 1..3 blocks
// and 576 columns, 1..97 rows, with and without bias.
//
// Error measure: err = max_i |out_i - ref_i| / max_i |ref_i| (max error relative to the
// largest reference value, so near-zero outputs do not blow it up). Tolerances, and why:
//   add            0      one fp32 addition per element, identical on every backend.
//   kv_store       0      a copy, or fp32 -> fp16 round-to-nearest-even (exact in both).
//   get_rows       1e-6   dequantization is exact up to the order of one multiply-add.
//   rms_norm       2e-5   fp32 sum of squares in 16 partial sums (vs fp64 in the reference):
//                         at most ~(d/16)·2^-24 = 1.5e-5 at d = 4099; ~1e-7 observed.
//   rope           1e-5   cos/sin rounded to fp32 and fp32 rotation (vs fp64): a few ulp.
//   silu_mul       1e-5   vector exp within 2 ulp, then a division and a product: a few ulp.
//   attention      1e-4   fp32 dots, softmax sums and p·v over up to ~600 slots (vs fp64):
//                         worst case ~600·2^-24 ≈ 4e-5 relative, plus a few ulp of exp.
//                         attention_prompt (n > 16 tokens, a prompt chunk) is the same by
//                         default; a backend that runs chunks on tensor cores in fp16 passes
//                         its own (CUDA: tests/gpu/cuda_backend_ops_test.cpp).
//   fused ops      fused_matmul (fused_matmul_same_input, fused_ffn) as matmul, rope_kv_store as rope (f16 k cache: 1e-3), argmax
//                  exact (see each case); sample_top_k the same ids as the host's draw (a
//                  device's exp may differ in the last ulp, which moves a draw only when its
//                  uniform number falls within ~1e-7 of a boundary: not in these cases).
// matmul measures each output's error against the size of its terms instead, as an output
// can be near zero by cancellation: err = max_i |out_i - ref_i| / (Σ_k |w_ik x_k| + |bias_i|).
//   matmul f32/f16 1e-5   fp32 accumulation (vs fp64): error <= cols·2^-24 of Σ|w x| in the
//                         worst case, ~sqrt(cols)·2^-24 typically.
//   matmul quant   1e-2   activations are quantized to 8 bits per block (Q8_0 / Q8_1 / Q8_K):
//                         each x_k is off by up to max|x_block|/254 (Q8_K: /254 too), so the
//                         error is at most Σ_k |w_k|·max|x_block|/254 ≈ 0.8% of Σ|w x| for
//                         uniform x (max|x| ≈ 2·mean|x|).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/half.h"
#include "kernels/cpu/top_k_draw.h"
#include "quant/quant.h"

namespace bl::op_cases {

struct Tolerances {
  double add = 0.0;
  double kv_store = 0.0;
  double get_rows = 1e-6;
  double rms_norm = 2e-5;
  double rope = 1e-5;
  double silu_mul = 1e-5;
  // exp(a) carries a's float rounding as a relative error, and a = -2 sqrt(2 / pi) (g + 0.044715
  // g^3) reaches ~50 at the cases' g = -8 (ulp 3.8e-6); a lone tiny value (d = 1) shows it whole.
  double gelu_mul = 3e-5;
  double scale = 0.0;
  double attention = 1e-4;
  double attention_prompt = 1e-4;  // attention of more than 16 tokens at once
  double matmul_float = 1e-5;
  double matmul_quant = 1e-2;
};

// max |a - ref| / max |ref|; infinity when a has a NaN or inf where ref is finite.
inline double relative_max_error(const std::vector<float>& a, const std::vector<float>& ref) {
  double max_ref = 0.0, max_err = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    max_ref = std::max(max_ref, std::fabs(static_cast<double>(ref[i])));
    max_err = std::max(max_err, std::fabs(static_cast<double>(a[i]) - ref[i]));
  }
  return max_ref > 0.0 ? max_err / max_ref : max_err;
}

// Index of the first non-finite value, or -1.
inline int64_t first_non_finite(const std::vector<float>& a) {
  for (size_t i = 0; i < a.size(); ++i)
    if (!std::isfinite(a[i])) return static_cast<int64_t>(i);
  return -1;
}

class OpCases {
 public:
  explicit OpCases(Backend& under_test, uint64_t seed = 1234, Tolerances tol = {})
      : test_(under_test), ref_(make_reference_backend()), rng_(seed), tol_(tol) {}

  void all() {
    add();
    rms_norm();
    silu_mul();
    gelu_mul();
    scale();
    rope();
    kv_store();
    attention();
    windowed_attention();
    get_rows();
    matmul();
    fused_matmul();
    fused_matmul_same_input();
    fused_ffn();
    rope_kv_store();
    rope_kv_store_attention();
    each_sequence();
    argmax();
    sample_top_k();
  }

  // Widths: 1..3 multiples of 32 and odd sizes; large ones so the parallel paths run.
  void add() {
    for (int64_t d : {1, 7, 32, 64, 96, 33, 577, 4099})
      for (int64_t n : {1, 3, 17})
        for (bool in_place : {false, true}) {  // in place: out is a
          begin_case();
          SCOPED_TRACE("add d=" + std::to_string(d) + " n=" + std::to_string(n) + " in_place=" + std::to_string(in_place));
          auto a = random(d * n), b = random(d * n);
          Pair ta = input(DType::F32, {d, n, 1, 1}, a), tb = input(DType::F32, {d, n, 1, 1}, b);
          Pair out = in_place ? ta : output(DType::F32, {d, n, 1, 1});
          test_.add(ta.test, tb.test, out.test);
          ref_->add(ta.ref, tb.ref, out.ref);
          compare(out, tol_.add);
        }
  }

  void rms_norm() {
    for (int64_t d : {1, 7, 32, 64, 96, 33, 577, 4099, 256})
      for (int64_t n : {1, 3, 17, 36})  // 36 at d 256: q of 4 heads x 9 tokens normed per head (Gemma 3)
        for (bool in_place : {false, true}) {  // in place: out is x
          if ((n == 36) != (d == 256)) continue;
          begin_case();
          SCOPED_TRACE("rms_norm d=" + std::to_string(d) + " n=" + std::to_string(n) + " in_place=" + std::to_string(in_place));
          auto x = random(d * n, 3.0f), w = random(d, 1.0f);
          Pair tx = input(DType::F32, {d, n, 1, 1}, x), tw = input(DType::F32, {d, 1, 1, 1}, w);
          Pair out = in_place ? tx : output(DType::F32, {d, n, 1, 1});
          test_.rms_norm(tx.test, tw.test, 1e-5f, out.test);
          ref_->rms_norm(tx.ref, tw.ref, 1e-5f, out.ref);
          compare(out, tol_.rms_norm);
        }
  }

  // x += rms_norm(s) * w against the reference's rms_norm then add (its default); s is left
  // undefined, so only x is compared.
  void add_rms_norm() {
    for (int64_t d : {1, 7, 32, 64, 96, 33, 577, 4099, 640})
      for (int64_t n : {1, 3, 17}) {
        begin_case();
        SCOPED_TRACE("add_rms_norm d=" + std::to_string(d) + " n=" + std::to_string(n));
        auto x = random(d * n, 3.0f), sub = random(d * n, 30.0f), w = random(d, 1.0f);
        Pair tx = input(DType::F32, {d, n, 1, 1}, x), ts = input(DType::F32, {d, n, 1, 1}, sub);
        Pair tw = input(DType::F32, {d, 1, 1, 1}, w);
        test_.add_rms_norm(tx.test, ts.test, tw.test, 1e-6f);
        ref_->add_rms_norm(tx.ref, ts.ref, tw.ref, 1e-6f);
        compare(tx, tol_.rms_norm);
      }
  }

  void silu_mul() {
    for (int64_t d : {1, 7, 32, 64, 96, 33, 577, 4099})
      for (int64_t n : {1, 3, 17})
        for (bool in_place : {false, true}) {  // in place: out is gate
          begin_case();
          SCOPED_TRACE("silu_mul d=" + std::to_string(d) + " n=" + std::to_string(n) + " in_place=" + std::to_string(in_place));
          // Gate values up to ±20 reach both tails of the sigmoid.
          auto g = random(d * n, 20.0f), u = random(d * n, 2.0f);
          Pair tg = input(DType::F32, {d, n, 1, 1}, g), tu = input(DType::F32, {d, n, 1, 1}, u);
          Pair out = in_place ? tg : output(DType::F32, {d, n, 1, 1});
          test_.silu_mul(tg.test, tu.test, out.test);
          ref_->silu_mul(tg.ref, tu.ref, out.ref);
          compare(out, tol_.silu_mul);
        }
  }

  void gelu_mul() {
    for (int64_t d : {1, 7, 32, 64, 96, 33, 577, 4099})
      for (int64_t n : {1, 3, 17})
        for (bool in_place : {false, true}) {  // in place: out is gate
          begin_case();
          SCOPED_TRACE("gelu_mul d=" + std::to_string(d) + " n=" + std::to_string(n) + " in_place=" + std::to_string(in_place));
          // Gate values up to ±8 reach both tails of the tanh (gelu(-8) ~ -1e-14 * 8).
          auto g = random(d * n, 8.0f), u = random(d * n, 2.0f);
          Pair tg = input(DType::F32, {d, n, 1, 1}, g), tu = input(DType::F32, {d, n, 1, 1}, u);
          Pair out = in_place ? tg : output(DType::F32, {d, n, 1, 1});
          test_.gelu_mul(tg.test, tu.test, out.test);
          ref_->gelu_mul(tg.ref, tu.ref, out.ref);
          compare(out, tol_.gelu_mul);
        }
  }

  void scale() {
    for (int64_t d : {1, 7, 640, 4099})
      for (int64_t n : {1, 3, 17})
        for (bool in_place : {false, true}) {  // in place: out is x
          begin_case();
          SCOPED_TRACE("scale d=" + std::to_string(d) + " n=" + std::to_string(n) + " in_place=" + std::to_string(in_place));
          Pair tx = input(DType::F32, {d, n, 1, 1}, random(d * n, 3.0f));
          Pair out = in_place ? tx : output(DType::F32, {d, n, 1, 1});
          const float factor = 25.298221f;  // sqrt(640), Gemma 3 270M's embedding scale
          test_.scale(tx.test, factor, out.test);
          ref_->scale(tx.ref, factor, out.ref);
          compare(out, tol_.scale);
        }
  }

  void rope() {
    std::vector<float> factors = random_positive(64, 1.0f, 8.0f);  // up to 128 / 2 pairs
    for (int64_t head_dim : {64, 128, 80})
      for (int64_t n_heads : {1, 9})
        for (int64_t n : {1, 3, 17})
          for (bool neox : {false, true})
            for (int variant = 0; variant < 3; ++variant) {
              const RopeParams p = rope_variant(variant, head_dim, neox, factors);
              begin_case();
              const int32_t n_past = static_cast<int32_t>(uniform_int(0, 600));
              SCOPED_TRACE("rope head_dim=" + std::to_string(head_dim) + " heads=" + std::to_string(n_heads) +
                           " n=" + std::to_string(n) + " neox=" + std::to_string(neox) +
                           " variant=" + std::to_string(variant) + " n_past=" + std::to_string(n_past));
              auto x = random(head_dim * n_heads * n, 2.0f);
              std::vector<int32_t> pos(static_cast<size_t>(n));
              for (int64_t i = 0; i < n; ++i) pos[i] = n_past + static_cast<int32_t>(i);
              Pair tx = input(DType::F32, {head_dim, n_heads, n, 1}, x);
              Pair tp = input_i32(pos);
              test_.rope(tx.test, tp.test, p);
              ref_->rope(tx.ref, tp.ref, p);
              compare(tx, tol_.rope);
              // Dims past n_dims pass through unchanged.
              const auto got = read_f32(test_, tx.test);
              for (int64_t r = 0; r < n_heads * n; ++r)
                for (int64_t c = p.n_dims; c < head_dim; ++c)
                  ASSERT_EQ(got[r * head_dim + c], x[r * head_dim + c]) << "pass-through dim " << c << " changed";
            }
    // The same call twice, the factors changed in place in between (as when a freed vector's
    // memory holds other values): a backend that keeps angles or a device copy per array must
    // not rotate by the old ones.
    for (int round = 0; round < 2; ++round) {
      if (round == 1)
        for (float& f : factors) f = 9.0f - f;
      begin_case();
      SCOPED_TRACE("rope, the same call twice, factors changed in place before round " + std::to_string(round));
      const RopeParams p = rope_variant(2, 128, true, factors);
      Pair tx = input(DType::F32, {128, 9, 3, 1}, random(128 * 9 * 3, 2.0f));
      Pair tp = input_i32({590, 591, 592});
      test_.rope(tx.test, tp.test, p);
      ref_->rope(tx.ref, tp.ref, p);
      compare(tx, tol_.rope);
    }
  }

  void kv_store() {
    for (DType cache_type : {DType::F32, DType::F16})
      for (int64_t head_dim : {64, 80})
        for (int64_t n_head_kv : {2, 3})
          for (int64_t n : {1, 3, 17}) {
            begin_case();
            const int64_t n_ctx = 600;
            const int32_t n_past = static_cast<int32_t>(uniform_int(0, n_ctx - n));
            SCOPED_TRACE(std::string("kv_store ") + std::string(dtype_name(cache_type)) + " head_dim=" +
                         std::to_string(head_dim) + " kv_heads=" + std::to_string(n_head_kv) +
                         " n=" + std::to_string(n) + " n_past=" + std::to_string(n_past));
            const std::array<int64_t, 4> kv_ne = {head_dim, n_head_kv, n, 1};
            const std::array<int64_t, 4> cache_ne = {head_dim, n_head_kv, n_ctx, 1};
            Pair k = input(DType::F32, kv_ne, random(head_dim * n_head_kv * n, 4.0f));
            Pair v = input(DType::F32, kv_ne, random(head_dim * n_head_kv * n, 4.0f));
            // Both caches start with the same random contents: slots not stored must keep them.
            const auto init_k = random_cache(cache_type, head_dim * n_head_kv * n_ctx);
            const auto init_v = random_cache(cache_type, head_dim * n_head_kv * n_ctx);
            Pair kc = input_bytes(cache_type, cache_ne, init_k), vc = input_bytes(cache_type, cache_ne, init_v);
            std::vector<int32_t> pos(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) pos[i] = n_past + static_cast<int32_t>(i);
            if (n > 2) std::swap(pos[0], pos[2]);  // positions need not be increasing
            Pair tp = input_i32(pos);
            test_.kv_store(k.test, v.test, kc.test, vc.test, tp.test);
            ref_->kv_store(k.ref, v.ref, kc.ref, vc.ref, tp.ref);
            for (Pair* c : {&kc, &vc}) {
              const auto got = read_bytes(test_, c->test), want = read_bytes(*ref_, c->ref);
              ASSERT_EQ(got.size(), want.size());
              EXPECT_TRUE(got == want) << "cache contents differ from the reference (tolerance " << tol_.kv_store << ")";
            }
            EXPECT_TRUE(read_bytes(test_, kc.test) != init_k) << "kv_store wrote nothing";
          }
  }

  // Caches [head_dim, n_head_kv, n_ctx] filled with random data in every slot, so reading a
  // slot past positions[i] changes the result.
  void attention() {
    struct Heads {
      int n_head, n_head_kv;
    };
    for (DType cache_type : {DType::F32, DType::F16})
      for (int head_dim : {64, 128, 80, 100})  // 100: not a multiple of the vector width
        for (Heads h : {Heads{8, 8}, Heads{8, 2}, Heads{9, 3}, Heads{8, 1}})
          for (int64_t n : {1, 3, 17})
            for (int64_t n_past : {0, 5, 300, 590}) {
              const int64_t n_ctx = 640;
              SCOPED_TRACE(std::string("attention ") + std::string(dtype_name(cache_type)) + " head_dim=" +
                           std::to_string(head_dim) + " heads=" + std::to_string(h.n_head) + "/" +
                           std::to_string(h.n_head_kv) + " n=" + std::to_string(n) + " n_past=" + std::to_string(n_past));
              run_attention(cache_type, head_dim, h.n_head, h.n_head_kv, n, n_past, n_ctx, 1.0f);
            }
    // Large scores (q scaled up) stress the running-max rescaling of the online softmax.
    for (DType cache_type : {DType::F32, DType::F16}) {
      SCOPED_TRACE("attention with large scores");
      run_attention(cache_type, 64, 9, 3, 1, 400, 512, 8.0f);
      run_attention(cache_type, 64, 9, 3, 17, 200, 512, 8.0f);
    }
    // One token right after a prompt chunk's kv_store: CUDA's decode kernel loads the K/V rows of
    // all slots but the token's own before waiting for the kernel before it, which must not
    // happen here (the store writes every slot the token reads).
    for (DType cache_type : {DType::F32, DType::F16})
      for (int head_dim : {64, 128}) {
        SCOPED_TRACE(std::string("attention after kv_store ") + std::string(dtype_name(cache_type)) +
                     " head_dim=" + std::to_string(head_dim));
        run_attention_after_store(cache_type, head_dim, 8, 2, 600, 640);
      }
  }

  // Sliding-window attention (AttentionParams::window): windows shorter than, equal to and
  // longer than the context, for one token (decode), a few and a prompt chunk (CUDA: its
  // tensor-core prefill kernel at 64 / 128 dims, the split-KV one at 256), then through
  // rope_kv_store_attention and each_sequence, which carry the window to the same kernels.
  void windowed_attention() {
    for (DType cache_type : {DType::F32, DType::F16})
      for (int head_dim : {64, 128, 256})
        for (int64_t n : {1, 3, 70})
          for (int window : {1, 7, 100, 512, 1000}) {
            const int64_t n_past = n == 70 ? 250 : 590, n_ctx = 640;
            SCOPED_TRACE(std::string("windowed attention ") + std::string(dtype_name(cache_type)) + " head_dim=" +
                         std::to_string(head_dim) + " n=" + std::to_string(n) + " window=" + std::to_string(window));
            run_attention(cache_type, head_dim, 8, 2, n, n_past, n_ctx, 1.0f, window);
          }
    for (DType cache_type : {DType::F32, DType::F16})
      for (int64_t head_dim : {128, 256})
        for (int64_t n : {1, 70}) {
          begin_case();
          SCOPED_TRACE(std::string("windowed rope_kv_store_attention ") + std::string(dtype_name(cache_type)) +
                       " head_dim=" + std::to_string(head_dim) + " n=" + std::to_string(n));
          const int64_t n_ctx = 600, n_head = 4, n_head_kv = 1;  // Gemma 3 270M's heads
          RopeParams rp;
          rp.n_dims = static_cast<int>(head_dim);
          rp.neox = true;
          AttentionParams ap{.n_head = 4, .n_head_kv = 1, .head_dim = static_cast<int>(head_dim),
                             .scale = 1.0f / std::sqrt(static_cast<float>(head_dim)), .window = 37};
          auto [q, k, v, kc, vc] = rope_kv_inputs(cache_type, head_dim, n_head, n_head_kv, n, n_ctx);
          std::vector<int32_t> pos(static_cast<size_t>(n));
          for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(500 + i);
          Pair tp = input_i32(pos);
          Pair out = output(DType::F32, {head_dim, n_head, n, 1});
          test_.rope_kv_store_attention(q.test, k.test, v.test, kc.test, vc.test, tp.test, rp, ap, out.test);
          ref_->rope_kv_store_attention(q.ref, k.ref, v.ref, kc.ref, vc.ref, tp.ref, rp, ap, out.ref);
          const double attention_tol = n > 16 ? tol_.attention_prompt : tol_.attention;
          compare(out, cache_type == DType::F16 ? std::max(attention_tol, 1e-3) : attention_tol);
        }
    each_sequence(/*window=*/20);
  }

  void get_rows() {
    for (DType t : matmul_types()) {
      if (!test_.supports(t)) continue;
      const int64_t block = dtype_info(t)->block_elems;
      // 33 chunks of 32 (CUDA: a warp's worth and one more, through its store staging), and for
      // the plain types 5 elements past whole chunks (rows not 16-byte aligned).
      const int64_t wide = 33 * std::max<int64_t>(block, 32);
      for (int64_t d : {block, 3 * block, wide, block == 1 ? wide + 5 : 5 * block}) {
        begin_case();
        const int64_t n_vocab = 50;
        SCOPED_TRACE(std::string("get_rows ") + std::string(dtype_name(t)) + " d=" + std::to_string(d));
        Weight table = make_weight(t, d, n_vocab);
        std::vector<int32_t> ids = {0, 49, 7, 7, 23, 1, 48};
        Pair ti = input_i32(ids);
        Pair out = output(DType::F32, {d, static_cast<int64_t>(ids.size()), 1, 1});
        test_.get_rows(table.test, ti.test, out.test);
        ref_->get_rows(table.ref, ti.ref, out.ref);
        compare(out, tol_.get_rows);
      }
    }
  }

  void matmul() {
    for (DType t : matmul_types()) {
      if (!test_.supports(t)) {  // the backend's own test decides whether that is a failure
        std::printf("[ %s ] matmul: skipping %s (not supported)\n", test_.name().c_str(), std::string(dtype_name(t)).c_str());
        continue;
      }
      const int64_t block = dtype_info(t)->block_elems;
      const double tol = t == DType::F32 || t == DType::F16 ? tol_.matmul_float : tol_.matmul_quant;
      for (int64_t cols : {block, 2 * block, 3 * block, std::max<int64_t>(block, 576) / block * block})
        for (int64_t rows : {1, 5, 64, 97})
          for (int64_t n : {1, 3, 17})
            for (bool with_bias : {false, true}) {
              if (with_bias && rows != 97) continue;
              begin_case();
              SCOPED_TRACE(std::string("matmul ") + std::string(dtype_name(t)) + " cols=" + std::to_string(cols) +
                           " rows=" + std::to_string(rows) + " n=" + std::to_string(n) + " bias=" + std::to_string(with_bias));
              Weight w = make_weight(t, cols, rows);
              Pair x = input(DType::F32, {cols, n, 1, 1}, random(cols * n, 1.0f));
              Pair bias = input(DType::F32, {rows, 1, 1, 1}, random(rows, 1.0f));
              Pair out = output(DType::F32, {rows, n, 1, 1});
              test_.matmul(w.test, x.test, out.test, with_bias ? &bias.test : nullptr);
              ref_->matmul(w.ref, x.ref, out.ref, with_bias ? &bias.ref : nullptr);
              compare(out, tol, term_sizes(w, x, with_bias ? &bias : nullptr, cols, rows, n));
            }
    }
  }

  // fused_matmul against the reference's plain ops. Columns of 256 and 512 reach the CUDA fused
  // GEMV (block formats, cols % 256 == 0, up to 4 tokens); 576 and 17 tokens its fallback. Each
  // output's error is measured against sum_k |w_k x'_k| + |bias| + |out before| (x' the normed
  // or gated input, computed here in fp64), with the matmul tolerances.
  void fused_matmul() {
    enum Mode { kNorm, kNormBias, kGate, kAdd, kGateAdd };
    for (DType t : matmul_types()) {
      if (!test_.supports(t)) continue;
      const int64_t block = dtype_info(t)->block_elems;
      const double tol = t == DType::F32 || t == DType::F16 ? tol_.matmul_float : tol_.matmul_quant;
      for (int64_t cols : {int64_t{256}, int64_t{512}, std::max<int64_t>(block, 576) / block * block})
        for (int64_t rows : {5, 97})
          for (int64_t n : {1, 3, 17})
            for (Mode mode : {kNorm, kNormBias, kGate, kAdd, kGateAdd}) {
              if (cols % block != 0) continue;
              begin_case();
              SCOPED_TRACE(std::string("fused_matmul ") + std::string(dtype_name(t)) + " cols=" + std::to_string(cols) +
                           " rows=" + std::to_string(rows) + " n=" + std::to_string(n) + " mode=" + std::to_string(mode));
              const bool norm = mode == kNorm || mode == kNormBias, gate = mode == kGate || mode == kGateAdd;
              const bool acc = mode == kAdd || mode == kGateAdd, with_bias = mode == kNormBias;
              Weight w = make_weight(t, cols, rows);
              const auto xv = random(cols * n, gate ? 4.0f : 2.0f), uv = random(cols * n, 1.0f), gv = random(cols, 1.0f);
              const auto bv = random(rows, 1.0f), ov = random(rows * n, 1.0f);
              Pair x = input(DType::F32, {cols, n, 1, 1}, xv);
              Pair up = input(DType::F32, {cols, n, 1, 1}, uv);
              Pair g = input(DType::F32, {cols, 1, 1, 1}, gv);
              Pair bias = input(DType::F32, {rows, 1, 1, 1}, bv);
              Pair scratch = output(DType::F32, {(cols + rows) * n, 1, 1, 1});
              Pair out = acc ? input(DType::F32, {rows, n, 1, 1}, ov) : output(DType::F32, {rows, n, 1, 1});
              for (bool on_test : {true, false}) {
                MatmulFusion f;
                f.norm = norm ? &(on_test ? g.test : g.ref) : nullptr;
                f.up = gate ? &(on_test ? up.test : up.ref) : nullptr;
                f.accumulate = acc;
                f.scratch = on_test ? &scratch.test : &scratch.ref;
                Backend& b = on_test ? test_ : *ref_;
                b.fused_matmul(on_test ? w.test : w.ref, on_test ? x.test : x.ref, on_test ? out.test : out.ref,
                               f, with_bias ? (on_test ? &bias.test : &bias.ref) : nullptr);
              }
              // x' in fp64, then the size of each output's terms.
              Pair xprime = input(DType::F32, {cols, n, 1, 1}, fused_input(xv, norm ? &gv : nullptr, gate ? &uv : nullptr, cols, n));
              auto sizes = term_sizes(w, xprime, with_bias ? &bias : nullptr, cols, rows, n);
              if (acc)
                for (size_t i = 0; i < sizes.size(); ++i) sizes[i] += std::fabs(ov[i]);
              compare(out, tol, sizes);
            }
    }
  }

  // fused_matmul_same_input: three matrices (97, 5 and 33 rows; the first with a bias) of one
  // input against the reference's fused_matmul of each. 17 and 40 tokens reach the CUDA prefill
  // path (one fp16 operand, one GEMM per matrix), 3 tokens its GEMV fallback. Errors as in
  // fused_matmul, per output.
  void fused_matmul_same_input() {
    enum Mode { kNorm, kGate, kNormAdd };
    constexpr int64_t kRows[3] = {97, 5, 33};
    for (DType t : matmul_types()) {
      if (!test_.supports(t)) continue;
      const int64_t block = dtype_info(t)->block_elems;
      const int64_t cols = std::max<int64_t>(block, 576) / block * block;
      const double tol = t == DType::F32 || t == DType::F16 ? tol_.matmul_float : tol_.matmul_quant;
      for (int64_t n : {3, 17, 40})
        for (Mode mode : {kNorm, kGate, kNormAdd}) {
          begin_case();
          SCOPED_TRACE(std::string("fused_matmul_same_input ") + std::string(dtype_name(t)) + " cols=" +
                       std::to_string(cols) + " n=" + std::to_string(n) + " mode=" + std::to_string(mode));
          const bool norm = mode != kGate, acc = mode == kNormAdd;
          const auto xv = random(cols * n, norm ? 2.0f : 4.0f), uv = random(cols * n, 1.0f), gv = random(cols, 1.0f);
          Pair x = input(DType::F32, {cols, n, 1, 1}, xv);
          Pair up = input(DType::F32, {cols, n, 1, 1}, uv);
          Pair g = input(DType::F32, {cols, 1, 1, 1}, gv);
          Pair bias = input(DType::F32, {kRows[0], 1, 1, 1}, random(kRows[0], 1.0f));
          Pair scratch = output(DType::F32, {(cols + kRows[0]) * n, 1, 1, 1});
          std::vector<Weight> w;
          std::vector<Pair> outs;
          std::vector<std::vector<float>> before;
          for (int64_t rows : kRows) {
            w.push_back(make_weight(t, cols, rows));
            before.push_back(random(rows * n, 1.0f));
            outs.push_back(acc ? input(DType::F32, {rows, n, 1, 1}, before.back()) : output(DType::F32, {rows, n, 1, 1}));
          }
          for (bool on_test : {true, false}) {
            MatmulFusion f;
            f.norm = norm ? &(on_test ? g.test : g.ref) : nullptr;
            f.up = norm ? nullptr : &(on_test ? up.test : up.ref);
            f.accumulate = acc;
            f.scratch = on_test ? &scratch.test : &scratch.ref;
            std::vector<MatmulOutput> products;
            for (size_t i = 0; i < w.size(); ++i)
              products.push_back({on_test ? &w[i].test : &w[i].ref, on_test ? &outs[i].test : &outs[i].ref,
                                  i == 0 ? (on_test ? &bias.test : &bias.ref) : nullptr});
            (on_test ? test_ : *ref_).fused_matmul_same_input(products, on_test ? x.test : x.ref, f);
          }
          // x' in fp64, then each output against the size of its terms.
          Pair xprime = input(DType::F32, {cols, n, 1, 1}, fused_input(xv, norm ? &gv : nullptr, norm ? nullptr : &uv, cols, n));
          for (size_t i = 0; i < w.size(); ++i) {
            SCOPED_TRACE("output " + std::to_string(i));
            auto sizes = term_sizes(w[i], xprime, i == 0 ? &bias : nullptr, cols, kRows[i], n);
            if (acc)
              for (size_t e = 0; e < sizes.size(); ++e) sizes[e] += std::fabs(before[i][e]);
            compare(outs[i], tol, sizes);
          }
        }
    }
  }

  // fused_ffn against the reference's default (fused_matmul_same_input of gate and up, then the
  // down matmul with the SwiGLU and the residual add). 17 and 40 tokens reach the CUDA prefill
  // path, where x', gate, up and silu(gate) * up are rounded to fp16 on the way. Each output's
  // error is measured against the size of its terms carried through the block (fp64 here): with
  // S_g, S_u the term sizes of g = x'·w_gate and u = x'·w_up and h = silu(g) u,
  //   |x_before| + sum_k |w_down_k| (|h_k| + |silu'(g_k) u_k| S_g,k + |silu(g_k)| S_u,k),
  // so a relative error e in every term of the first products or in h moves the output by at
  // most e times that; the matmul tolerances apply.
  void fused_ffn() {
    for (DType t : matmul_types()) {
      if (!test_.supports(t)) continue;
      const int64_t block = dtype_info(t)->block_elems;
      const int64_t cols = std::max<int64_t>(block, 576) / block * block;
      const int64_t n_ff = std::max<int64_t>(block, 320) / block * block;
      const double tol = t == DType::F32 || t == DType::F16 ? tol_.matmul_float : tol_.matmul_quant;
      for (int64_t n : {3, 17, 40}) {
        begin_case();
        SCOPED_TRACE(std::string("fused_ffn ") + std::string(dtype_name(t)) + " cols=" + std::to_string(cols) +
                     " n_ff=" + std::to_string(n_ff) + " n=" + std::to_string(n));
        const auto xv = random(cols * n, 2.0f), nv = random(cols, 1.0f);
        Pair x = input(DType::F32, {cols, n, 1, 1}, xv);
        Pair norm = input(DType::F32, {cols, 1, 1, 1}, nv);
        Pair gate = output(DType::F32, {n_ff, n, 1, 1}), up = output(DType::F32, {n_ff, n, 1, 1});
        Pair scratch = output(DType::F32, {(cols + n_ff + cols) * n, 1, 1, 1});
        Weight wg = make_weight(t, cols, n_ff), wu = make_weight(t, cols, n_ff), wd = make_weight(t, n_ff, cols);
        for (bool on_test : {true, false}) {
          auto pick = [&](Pair& p) { return on_test ? &p.test : &p.ref; };
          auto pick_w = [&](Weight& w) { return on_test ? &w.test : &w.ref; };
          (on_test ? test_ : *ref_).fused_ffn(*pick(x), FfnBlock{pick_w(wg), pick_w(wu), pick_w(wd), pick(norm), 1e-5f,
                                                                 pick(gate), pick(up), pick(scratch)});
        }
        // x' (fused_input), then g, u, their term sizes and h, then each output's bound.
        auto rows_of = [&](const Weight& w, int64_t c, int64_t r) {
          std::vector<float> v(static_cast<size_t>(c * r));
          const size_t rs = row_bytes(t, c);
          for (int64_t i = 0; i < r; ++i) dequantize_row(t, w.host.data() + i * rs, v.data() + i * c, c);
          return v;
        };
        const auto g_w = rows_of(wg, cols, n_ff), u_w = rows_of(wu, cols, n_ff), d_w = rows_of(wd, n_ff, cols);
        std::vector<double> bound(static_cast<size_t>(cols * n));
        const std::vector<float> xps = fused_input(xv, &nv, nullptr, cols, n);
        for (int64_t j = 0; j < n; ++j) {
          const float* xp = xps.data() + j * cols;
          std::vector<double> spread(static_cast<size_t>(n_ff));
          for (int64_t f = 0; f < n_ff; ++f) {
            double g = 0, u = 0, sg = 0, su = 0;
            for (int64_t k = 0; k < cols; ++k) {
              const double gk = static_cast<double>(g_w[f * cols + k]) * xp[k];
              const double uk = static_cast<double>(u_w[f * cols + k]) * xp[k];
              g += gk, sg += std::fabs(gk), u += uk, su += std::fabs(uk);
            }
            const double sig = 1.0 / (1.0 + std::exp(-g)), silu = g * sig, dsilu = sig * (1.0 + g * (1.0 - sig));
            spread[f] = std::fabs(silu * u) + std::fabs(dsilu * u) * sg + std::fabs(silu) * su;
          }
          for (int64_t o = 0; o < cols; ++o) {
            double b = std::fabs(xv[j * cols + o]);
            for (int64_t f = 0; f < n_ff; ++f) b += std::fabs(d_w[o * n_ff + f]) * spread[f];
            bound[j * cols + o] = b;
          }
        }
        compare(x, tol, bound);
      }
    }
  }

  // rope_kv_store against the reference's rope, rope, kv_store. q and k as rope (its tolerance);
  // the k cache holds rotated values, so an fp32 rotation one ulp off may round to the other fp16
  // neighbour: 1e-3 (2^-11 of the largest value) for f16 caches; the v cache is a copy (exact).
  void rope_kv_store() {
    const std::vector<float> factors = random_positive(64, 1.0f, 8.0f);
    struct Heads {
      int64_t q, kv;
    };
    for (DType cache_type : {DType::F32, DType::F16})
      for (int64_t head_dim : {64, 128, 80})
        for (Heads h : {Heads{8, 2}, Heads{9, 3}})
          for (int64_t n : {1, 3, 17, 70})  // 70: the CUDA kernel's many-token grid (several heads a block)
            for (int variant = 0; variant < 3; ++variant) {  // normal rope at variant 0, else neox
              const RopeParams p = rope_variant(variant, head_dim, variant != 0, factors);
              begin_case();
              const int64_t n_ctx = 600;
              const int32_t n_past = static_cast<int32_t>(uniform_int(0, n_ctx - n));
              SCOPED_TRACE(std::string("rope_kv_store ") + std::string(dtype_name(cache_type)) + " head_dim=" +
                           std::to_string(head_dim) + " heads=" + std::to_string(h.q) + "/" + std::to_string(h.kv) +
                           " n=" + std::to_string(n) + " variant=" + std::to_string(variant) + " n_past=" + std::to_string(n_past));
              auto [q, k, v, kc, vc] = rope_kv_inputs(cache_type, head_dim, h.q, h.kv, n, n_ctx);
              std::vector<int32_t> pos(static_cast<size_t>(n));
              for (int64_t i = 0; i < n; ++i) pos[i] = n_past + static_cast<int32_t>(i);
              if (n > 2) std::swap(pos[0], pos[2]);
              Pair tp = input_i32(pos);
              test_.rope_kv_store(q.test, k.test, v.test, kc.test, vc.test, tp.test, p);
              ref_->rope_kv_store(q.ref, k.ref, v.ref, kc.ref, vc.ref, tp.ref, p);
              compare_rope_kv_store(q, k, kc, vc, cache_type);
            }
  }

  // rope_kv_store_attention against the reference's rope_kv_store then attention: the output
  // (attention's tolerance, attention_prompt's for 70 tokens; f16 caches at least 1e-3, as
  // each_sequence) and the caches (as rope_kv_store), not q and k, which the op may leave
  // unrotated. One token takes CUDA's rope inside the attention kernel at head_dim 128 and 256
  // with up to 8 query heads per KV head (not 16/2); three tokens, and the other head sizes, take
  // the two ops; 70 tokens (GQA 8/2 and 16/2) with an f16 cache at head_dim 64 and 128 the
  // prompt path, q rotated inside the tensor-core attention (not at variant 1: half the dims
  // rotated), the others the two ops.
  // The caches start random everywhere, so a wrong slot or head written or read shows.
  void rope_kv_store_attention() {
    const std::vector<float> factors = random_positive(128, 1.0f, 8.0f);  // n_dims / 2 at head_dim 256
    struct Heads {
      int64_t q, kv;
    };
    for (DType cache_type : {DType::F32, DType::F16})
      for (int64_t head_dim : {64, 128, 80, 256})
        for (Heads h : {Heads{8, 2}, Heads{9, 3}, Heads{8, 8}, Heads{8, 1}, Heads{16, 2}})
          for (int64_t n : {1, 3, 70})
            for (int variant = 0; variant < 3; ++variant) {  // normal rope at variant 0, else neox
              if (n == 70 && h.kv != 2) continue;
              const RopeParams rp = rope_variant(variant, head_dim, variant != 0, factors);
              AttentionParams ap;
              ap.n_head = static_cast<int>(h.q);
              ap.n_head_kv = static_cast<int>(h.kv);
              ap.head_dim = static_cast<int>(head_dim);
              ap.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
              begin_case();
              const int64_t n_ctx = 600;
              const int32_t n_past = variant == 0 ? 0 : static_cast<int32_t>(uniform_int(1, n_ctx - n));
              SCOPED_TRACE(std::string("rope_kv_store_attention ") + std::string(dtype_name(cache_type)) + " head_dim=" +
                           std::to_string(head_dim) + " heads=" + std::to_string(h.q) + "/" + std::to_string(h.kv) +
                           " n=" + std::to_string(n) + " variant=" + std::to_string(variant) + " n_past=" + std::to_string(n_past));
              auto [q, k, v, kc, vc] = rope_kv_inputs(cache_type, head_dim, h.q, h.kv, n, n_ctx);
              std::vector<int32_t> pos(static_cast<size_t>(n));
              for (int64_t i = 0; i < n; ++i) pos[i] = n_past + static_cast<int32_t>(i);
              Pair tp = input_i32(pos);
              Pair out = output(DType::F32, {head_dim, h.q, n, 1});
              test_.rope_kv_store_attention(q.test, k.test, v.test, kc.test, vc.test, tp.test, rp, ap, out.test);
              ref_->rope_kv_store_attention(q.ref, k.ref, v.ref, kc.ref, vc.ref, tp.ref, rp, ap, out.ref);
              const double attention_tol = n > 16 ? tol_.attention_prompt : tol_.attention;
              compare(out, cache_type == DType::F16 ? std::max(attention_tol, 1e-3) : attention_tol);
              const double cache_tol = cache_type == DType::F16 ? 1e-3 : tol_.rope;
              EXPECT_LE(relative_max_error(cache_values(test_, kc.test), cache_values(*ref_, kc.ref)), cache_tol) << "k cache";
              EXPECT_TRUE(read_bytes(test_, vc.test) == read_bytes(*ref_, vc.ref)) << "v cache differs";
            }
  }

  // rope_kv_store_each_sequence then attention_each_sequence (one token per sequence, each with
  // its own region of seq_slots cache slots) against the reference's, which runs the
  // single-sequence ops per token. Positions are random within each region (one at its last
  // slot, one at 0); the caches start with random data everywhere, so a token that read or
  // wrote another sequence's region, or a slot past its position, changes the result. Tolerances
  // as rope_kv_store (q, k, k cache) and attention; the v cache is a copy (exact).
  void each_sequence(int window = 0) {
    for (DType cache_type : {DType::F32, DType::F16})
      for (int64_t head_dim : {64, 128, 80})
        for (int64_t n : {2, 3, 5, 8, 16})
          for (int64_t seq_slots : {40, 300}) {
            const int64_t n_head = head_dim == 80 ? 9 : 8, n_head_kv = head_dim == 80 ? 3 : 2;
            begin_case();
            SCOPED_TRACE(std::string("each_sequence ") + std::string(dtype_name(cache_type)) + " head_dim=" +
                         std::to_string(head_dim) + " n=" + std::to_string(n) + " seq_slots=" + std::to_string(seq_slots) +
                         " window=" + std::to_string(window));
            RopeParams rp;
            rp.n_dims = static_cast<int>(head_dim);
            rp.freq_base = 500000.0f;
            rp.neox = true;
            AttentionParams ap;
            ap.n_head = static_cast<int>(n_head);
            ap.n_head_kv = static_cast<int>(n_head_kv);
            ap.head_dim = static_cast<int>(head_dim);
            ap.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
            ap.window = window;
            Pair q = input(DType::F32, {head_dim, n_head, n, 1}, random(head_dim * n_head * n, 2.0f));
            Pair k = input(DType::F32, {head_dim, n_head_kv, n, 1}, random(head_dim * n_head_kv * n, 2.0f));
            Pair v = input(DType::F32, {head_dim, n_head_kv, n, 1}, random(head_dim * n_head_kv * n, 2.0f));
            const int64_t slots = n * seq_slots;
            const std::array<int64_t, 4> cache_ne = {head_dim, n_head_kv, slots, 1};
            Pair kc = input_bytes(cache_type, cache_ne, random_cache(cache_type, head_dim * n_head_kv * slots));
            Pair vc = input_bytes(cache_type, cache_ne, random_cache(cache_type, head_dim * n_head_kv * slots));
            std::vector<int32_t> pos(static_cast<size_t>(n));
            for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(uniform_int(0, seq_slots - 1));
            pos[0] = static_cast<int32_t>(seq_slots - 1);
            pos[1] = 0;
            Pair tp = input_i32(pos);
            Pair out = output(DType::F32, {head_dim, n_head, n, 1});
            test_.rope_kv_store_each_sequence(q.test, k.test, v.test, kc.test, vc.test, tp.test, rp, seq_slots);
            ref_->rope_kv_store_each_sequence(q.ref, k.ref, v.ref, kc.ref, vc.ref, tp.ref, rp, seq_slots);
            test_.attention_each_sequence(q.test, kc.test, vc.test, tp.test, ap, seq_slots, out.test);
            ref_->attention_each_sequence(q.ref, kc.ref, vc.ref, tp.ref, ap, seq_slots, out.ref);
            compare_rope_kv_store(q, k, kc, vc, cache_type);
            compare(out, cache_type == DType::F16 ? std::max(tol_.attention, 1e-3) : tol_.attention);
          }
  }

  // argmax against the reference's (host) argmax: ids equal, including ties (lowest index) and
  // NaN logits (never picked).
  void argmax() {
    for (int64_t n_vocab : {1, 7, 1000, 50001, 128256})
      for (int64_t n : {1, 3})
        for (int variant = 0; variant < 5; ++variant) {  // 0 random, 1 ties at the max, 2 NaNs too,
                                                           // 3 all NaN, 4 -inf and NaN only
          begin_case();
          SCOPED_TRACE("argmax n_vocab=" + std::to_string(n_vocab) + " n=" + std::to_string(n) + " variant=" + std::to_string(variant));
          auto l = random(n_vocab * n, 10.0f);
          for (int64_t t = 0; t < n; ++t) {
            float* row = l.data() + t * n_vocab;
            if (variant >= 1) {
              const int64_t a = uniform_int(0, n_vocab - 1), b = uniform_int(0, n_vocab - 1);
              row[a] = row[b] = 11.0f;  // the largest, twice (or once when a == b)
            }
            if (variant == 2) row[uniform_int(0, n_vocab - 1)] = NAN, row[0] = NAN;
            for (int64_t i = 0; variant >= 3 && i < n_vocab; ++i)
              row[i] = variant == 3 || i % 3 == 0 ? NAN : -INFINITY;
          }
          Pair logits = input(DType::F32, {n_vocab, n, 1, 1}, l);
          Pair ids = alloc_pair(DType::I32, {n, 1, 1, 1});
          const std::vector<int32_t> poison(static_cast<size_t>(n), -1);
          test_.write(ids.test, poison.data(), poison.size() * sizeof(int32_t), 0);
          test_.argmax(logits.test, ids.test);
          ref_->argmax(logits.ref, ids.ref);
          const auto got = read_bytes(test_, ids.test), want = read_bytes(*ref_, ids.ref);
          std::vector<int32_t> g(static_cast<size_t>(n)), w(static_cast<size_t>(n));
          std::memcpy(g.data(), got.data(), got.size());
          std::memcpy(w.data(), want.data(), want.size());
          EXPECT_EQ(g, w);
          for (int64_t t = 0; t < n && n_vocab > 1 && variant != 3; ++t) {  // the reference itself: never a NaN
            EXPECT_FALSE(std::isnan(l[t * n_vocab + w[t]]));
          }
        }
  }

  // sample_top_k against cpu::draw_from_top_k on the host copy of the logits (the sampler's
  // own draw): the same id for every draw the backend accepts (can_sample_top_k), over several
  // parameter sets, uniform numbers at both ends of [0, 1), and tied logits. Logits spread
  // (scale 3) so that many tokens carry probability; poisoned ids.
  void sample_top_k() {
    struct Params {
      float temperature;
      int top_k;
      float top_p, min_p;
    };
    const Params sets[] = {{0.8f, 40, 0.95f, 0.05f}, {1.0f, 1, 1.0f, 0.0f}, {2.0f, 64, 1.0f, 0.0f},
                           {0.5f, 5, 0.5f, 0.0f},    {1.5f, 0, 0.9f, 0.0f}, {1.0f, 17, 1.0f, 0.3f}};
    for (int64_t n_vocab : {1, 7, 1000, 50001, 128256, 151936})
      for (const Params& p : sets)
        for (bool ties : {false, true}) {
          if (!test_.can_sample_top_k(p.top_k, n_vocab)) continue;
          begin_case();
          SCOPED_TRACE("sample_top_k n_vocab=" + std::to_string(n_vocab) + " T=" + std::to_string(p.temperature) +
                       " k=" + std::to_string(p.top_k) + " ties=" + std::to_string(ties));
          constexpr int64_t n = 2;
          auto l = random(n_vocab * n, 3.0f);
          if (ties)  // the top tokens of row 0 tied in pairs: order by id decides
            for (int64_t i = 0; i + 1 < std::min<int64_t>(n_vocab, 40); i += 2) l[i] = l[i + 1] = 9.0f - 0.1f * i;
          Pair logits = input(DType::F32, {n_vocab, n, 1, 1}, l);
          Pair ids = alloc_pair(DType::I32, {n, 1, 1, 1});
          for (double u : {0.0, 0.999999, -1.0, -1.0, -1.0, -1.0}) {  // -1: a fresh random number
            cpu::TopKDraw draws[n];
            for (int64_t t = 0; t < n; ++t) {
              const double ut = u >= 0 ? u : std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
              draws[t] = {.temperature = p.temperature, .top_k = p.top_k, .top_p = p.top_p, .min_p = p.min_p, .u = ut};
            }
            Pair d = alloc_pair(DType::I32, {n * static_cast<int64_t>(sizeof(cpu::TopKDraw) / sizeof(int32_t)), 1, 1, 1});
            test_.write(d.test, draws, sizeof draws, 0);
            const int32_t poison[n] = {-1, -1};
            test_.write(ids.test, poison, sizeof poison, 0);
            test_.sample_top_k(logits.test, d.test, ids.test);
            const auto got = read_bytes(test_, ids.test);
            for (int64_t t = 0; t < n; ++t) {
              int32_t g;
              std::memcpy(&g, got.data() + sizeof(int32_t) * t, sizeof g);
              const std::span<const float> row(l.data() + t * n_vocab, static_cast<size_t>(n_vocab));
              EXPECT_EQ(g, cpu::draw_from_top_k(row, draws[t])) << "token " << t << " u " << draws[t].u;
            }
          }
        }
  }

  static std::vector<DType> matmul_types() {
    return {DType::F32,  DType::F16,  DType::Q8_0, DType::Q4_0, DType::Q4_1,
            DType::Q5_0, DType::Q5_1, DType::Q4_K, DType::Q6_K};
  }

 private:
  struct Pair {  // the same tensor in the backend under test and in the reference
    Tensor test, ref;
  };
  struct Weight {  // host bytes (kept alive) uploaded to both backends
    std::vector<uint8_t> host;
    DType type;  // of the host bytes (a backend may store the weight in another format)
    Tensor test, ref;
  };

  // kv_store of n_store tokens at slots 0.. over caches of random data, then attention of one
  // token at the last of them.
  void run_attention_after_store(DType cache_type, int head_dim, int n_head, int n_head_kv, int64_t n_store,
                                 int64_t n_ctx) {
    begin_case();
    const int64_t kv_dim = int64_t{head_dim} * n_head_kv;
    Pair k = input(DType::F32, {head_dim, n_head_kv, n_store, 1}, random(kv_dim * n_store, 1.0f));
    Pair v = input(DType::F32, {head_dim, n_head_kv, n_store, 1}, random(kv_dim * n_store, 1.0f));
    const std::array<int64_t, 4> cache_ne = {head_dim, n_head_kv, n_ctx, 1};
    Pair kc = input_bytes(cache_type, cache_ne, random_cache(cache_type, kv_dim * n_ctx));
    Pair vc = input_bytes(cache_type, cache_ne, random_cache(cache_type, kv_dim * n_ctx));
    std::vector<int32_t> store_pos(static_cast<size_t>(n_store));
    for (int64_t i = 0; i < n_store; ++i) store_pos[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    Pair sp = input_i32(store_pos);
    Pair tp = input_i32({static_cast<int32_t>(n_store - 1)});
    Pair q = input(DType::F32, {head_dim, n_head, 1, 1}, random(int64_t{head_dim} * n_head, 1.0f));
    Pair out = output(DType::F32, {head_dim, n_head, 1, 1});
    AttentionParams p;
    p.n_head = n_head;
    p.n_head_kv = n_head_kv;
    p.head_dim = head_dim;
    p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    test_.kv_store(k.test, v.test, kc.test, vc.test, sp.test);
    test_.attention(q.test, kc.test, vc.test, tp.test, p, out.test);
    ref_->kv_store(k.ref, v.ref, kc.ref, vc.ref, sp.ref);
    ref_->attention(q.ref, kc.ref, vc.ref, tp.ref, p, out.ref);
    compare(out, cache_type == DType::F16 ? std::max(tol_.attention, 1e-3) : tol_.attention);
  }

  void run_attention(DType cache_type, int head_dim, int n_head, int n_head_kv, int64_t n, int64_t n_past,
                     int64_t n_ctx, float q_scale, int window = 0) {
    begin_case();
    Pair q = input(DType::F32, {head_dim, n_head, n, 1}, random(int64_t{head_dim} * n_head * n, q_scale));
    const std::array<int64_t, 4> cache_ne = {head_dim, n_head_kv, n_ctx, 1};
    Pair kc = input_bytes(cache_type, cache_ne, random_cache(cache_type, int64_t{head_dim} * n_head_kv * n_ctx));
    Pair vc = input_bytes(cache_type, cache_ne, random_cache(cache_type, int64_t{head_dim} * n_head_kv * n_ctx));
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(n_past + i);
    Pair tp = input_i32(pos);
    Pair out = output(DType::F32, {head_dim, n_head, n, 1});
    AttentionParams p;
    p.n_head = n_head;
    p.n_head_kv = n_head_kv;
    p.head_dim = head_dim;
    p.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    p.window = window;
    test_.attention(q.test, kc.test, vc.test, tp.test, p, out.test);
    ref_->attention(q.ref, kc.ref, vc.ref, tp.ref, p, out.ref);
    compare(out, n > 16 ? tol_.attention_prompt : tol_.attention);
  }

  // Uniform in [-scale, scale].
  std::vector<float> random(int64_t n, float scale = 1.0f) {
    std::uniform_real_distribution<float> dist(-scale, scale);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(rng_);
    return v;
  }
  // The rope cases' parameters: variant 0 all dims, base 1e4; 1 half the dims, freq_scale 0.25,
  // base 5e5; 2 all dims with Llama 3 frequency factors (factors: at least n_dims / 2 of them).
  static RopeParams rope_variant(int variant, int64_t head_dim, bool neox, const std::vector<float>& factors) {
    RopeParams p;
    p.n_dims = static_cast<int>(variant == 1 ? head_dim / 2 : head_dim);
    p.freq_base = variant == 1 ? 500000.0f : 10000.0f;
    p.freq_scale = variant == 1 ? 0.25f : 1.0f;
    p.neox = neox;
    p.freq_factors = variant == 2 ? factors.data() : nullptr;
    return p;
  }

  // q [head_dim, n_head, n], k and v [head_dim, n_head_kv, n] in [-2, 2], and k, v caches of
  // n_ctx slots filled with random values (in that order of draws).
  struct RopeKvInputs {
    Pair q, k, v, k_cache, v_cache;
  };
  RopeKvInputs rope_kv_inputs(DType cache_type, int64_t head_dim, int64_t n_head, int64_t n_head_kv, int64_t n,
                              int64_t n_ctx) {
    const std::array<int64_t, 4> cache_ne = {head_dim, n_head_kv, n_ctx, 1};
    return RopeKvInputs{
        input(DType::F32, {head_dim, n_head, n, 1}, random(head_dim * n_head * n, 2.0f)),
        input(DType::F32, {head_dim, n_head_kv, n, 1}, random(head_dim * n_head_kv * n, 2.0f)),
        input(DType::F32, {head_dim, n_head_kv, n, 1}, random(head_dim * n_head_kv * n, 2.0f)),
        input_bytes(cache_type, cache_ne, random_cache(cache_type, head_dim * n_head_kv * n_ctx)),
        input_bytes(cache_type, cache_ne, random_cache(cache_type, head_dim * n_head_kv * n_ctx))};
  }

  std::vector<float> random_positive(int64_t n, float lo, float hi) {
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = dist(rng_);
    return v;
  }
  int64_t uniform_int(int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng_); }

  // n random cache elements (F32 or F16 bits) as bytes.
  std::vector<uint8_t> random_cache(DType t, int64_t n) {
    const auto v = random(n, 2.0f);
    std::vector<uint8_t> bytes(row_bytes(t, n));
    quantize_row(t, v.data(), bytes.data(), n);
    return bytes;
  }

  Weight make_weight(DType t, int64_t cols, int64_t rows) {
    Weight w;
    w.type = t;
    const auto values = random(cols * rows, 1.0f);
    const size_t row_size = row_bytes(t, cols);
    w.host.resize(row_size * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) quantize_row(t, values.data() + r * cols, w.host.data() + r * row_size, cols);
    const Tensor host = make_tensor_2d(w.host.data(), t, cols, rows);
    auto on_test = test_.upload_weight(host);
    auto on_ref = ref_->upload_weight(host);
    EXPECT_TRUE(on_test.ok()) << on_test.status().message();
    EXPECT_TRUE(on_ref.ok()) << on_ref.status().message();
    if (on_test.ok()) w.test = *on_test;
    if (on_ref.ok()) w.ref = *on_ref;
    return w;
  }

  static Tensor alloc_or_fail(Backend& b, int64_t bytes) {
    auto r = b.alloc(DType::F32, {(bytes + 3) / 4, 1, 1, 1});
    if (!r.ok()) {
      ADD_FAILURE() << b.name() << ": alloc failed: " << r.status().message();
      return {};
    }
    return *r;
  }

  // Backends free memory only when destroyed, so the cases reuse it: the i-th tensor of a case
  // is a view of the i-th buffer, which grows when a case needs more. begin_case() restarts
  // the count.
  void begin_case() { next_slot_ = 0; }
  Pair alloc_pair(DType t, std::array<int64_t, 4> ne) {
    if (next_slot_ == slots_.size()) slots_.push_back({});
    Slot& slot = slots_[next_slot_++];
    const Tensor shape = make_tensor(nullptr, t, ne);
    const int64_t bytes = static_cast<int64_t>(shape.bytes());
    if (slot.bytes < bytes) {
      slot.test = alloc_or_fail(test_, bytes);
      slot.ref = alloc_or_fail(*ref_, bytes);
      slot.bytes = bytes;
    }
    Pair p{slot.test, slot.ref};
    for (Tensor* v : {&p.test, &p.ref}) {
      v->dtype = t;
      v->ne = ne;
    }
    return p;
  }

  Pair input_bytes(DType t, std::array<int64_t, 4> ne, const std::vector<uint8_t>& bytes) {
    Pair p = alloc_pair(t, ne);
    test_.write(p.test, bytes.data(), bytes.size(), 0);
    ref_->write(p.ref, bytes.data(), bytes.size(), 0);
    return p;
  }
  Pair input(DType t, std::array<int64_t, 4> ne, const std::vector<float>& values) {
    std::vector<uint8_t> bytes(values.size() * sizeof(float));
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return input_bytes(t, ne, bytes);
  }
  Pair input_i32(const std::vector<int32_t>& values) {
    std::vector<uint8_t> bytes(values.size() * sizeof(int32_t));
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return input_bytes(DType::I32, {static_cast<int64_t>(values.size()), 1, 1, 1}, bytes);
  }
  // An output filled with NaN (all bits set) in both backends.
  Pair output(DType t, std::array<int64_t, 4> ne) {
    Pair p = alloc_pair(t, ne);
    const std::vector<uint8_t> nan_bytes(p.test.bytes(), 0xff);
    test_.write(p.test, nan_bytes.data(), nan_bytes.size(), 0);
    ref_->write(p.ref, nan_bytes.data(), nan_bytes.size(), 0);
    return p;
  }

  static std::vector<uint8_t> read_bytes(Backend& b, const Tensor& t) {
    std::vector<uint8_t> bytes(t.bytes());
    b.synchronize();
    b.read(t, bytes.data(), bytes.size(), 0);
    return bytes;
  }
  // A cache's elements (F32 or F16) as floats.
  static std::vector<float> cache_values(Backend& b, const Tensor& t) {
    const auto bytes = read_bytes(b, t);
    std::vector<float> v(static_cast<size_t>(t.elements()));
    dequantize_row(t.dtype, bytes.data(), v.data(), t.elements());
    return v;
  }
  static std::vector<float> read_f32(Backend& b, const Tensor& t) {
    const auto bytes = read_bytes(b, t);
    std::vector<float> v(bytes.size() / sizeof(float));
    std::memcpy(v.data(), bytes.data(), v.size() * sizeof(float));
    return v;
  }

  // x' of a fused matmul, computed in fp64 (rounded to fp32 at the end): rms_norm(x) * gamma
  // (eps 1e-5) with gamma, silu(x) * up with up, else x; x [cols, n].
  static std::vector<float> fused_input(const std::vector<float>& x, const std::vector<float>* gamma,
                                        const std::vector<float>* up, int64_t cols, int64_t n) {
    std::vector<float> xp(x.size());
    for (int64_t j = 0; j < n; ++j) {
      double ss = 0.0;
      for (int64_t k = 0; k < cols; ++k) ss += static_cast<double>(x[j * cols + k]) * x[j * cols + k];
      const double r = 1.0 / std::sqrt(ss / cols + 1e-5);
      for (int64_t k = 0; k < cols; ++k) {
        const double v = x[j * cols + k];
        xp[j * cols + k] = static_cast<float>(gamma ? v * r * (*gamma)[k] : up ? v / (1.0 + std::exp(-v)) * (*up)[j * cols + k] : v);
      }
    }
    return xp;
  }

  // Σ_k |w_rk x_kt| + |bias_r| for output (r, t), from the dequantized weights.
  std::vector<double> term_sizes(const Weight& w, const Pair& x, const Pair* bias, int64_t cols, int64_t rows,
                                 int64_t n) {
    const auto xv = read_f32(*ref_, x.ref);
    const auto bv = bias ? read_f32(*ref_, bias->ref) : std::vector<float>(static_cast<size_t>(rows), 0.0f);
    std::vector<float> w_row(static_cast<size_t>(cols));
    std::vector<double> sizes(static_cast<size_t>(rows * n));
    const size_t row_size = row_bytes(w.type, cols);
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(w.type, w.host.data() + r * row_size, w_row.data(), cols);
      for (int64_t t = 0; t < n; ++t) {
        double sum = std::fabs(bv[r]);
        for (int64_t k = 0; k < cols; ++k) sum += std::fabs(static_cast<double>(w_row[k]) * xv[t * cols + k]);
        sizes[t * rows + r] = sum;
      }
    }
    return sizes;
  }

  // With `scales`, the error of element i is measured relative to scales[i]; without, relative
  // to the largest reference value.
  // After rope_kv_store (or its each-sequence form) on both backends: q and k rotated as rope
  // (its tolerance), the k cache as rope (an f16 cache: within 1e-3), the v cache an exact copy.
  void compare_rope_kv_store(const Pair& q, const Pair& k, const Pair& kc, const Pair& vc, DType cache_type) {
    compare(q, tol_.rope);
    compare(k, tol_.rope);
    const double cache_tol = cache_type == DType::F16 ? 1e-3 : tol_.rope;
    const auto got = cache_values(test_, kc.test), want = cache_values(*ref_, kc.ref);
    EXPECT_LE(relative_max_error(got, want), cache_tol) << "k cache";
    EXPECT_TRUE(read_bytes(test_, vc.test) == read_bytes(*ref_, vc.ref)) << "v cache differs";
  }

  void compare(const Pair& p, double tol, const std::vector<double>& scales = {}) {
    const auto got = read_f32(test_, p.test), want = read_f32(*ref_, p.ref);
    ASSERT_EQ(got.size(), want.size());
    ASSERT_EQ(first_non_finite(want), -1) << "reference output is not finite (a harness bug)";
    const int64_t bad = first_non_finite(got);
    ASSERT_EQ(bad, -1) << "element " << bad << " not written (still NaN) or not finite: " << shape_string(p.test);
    double err = 0.0;
    if (scales.empty()) {
      err = relative_max_error(got, want);
    } else {
      for (size_t i = 0; i < got.size(); ++i)
        err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]) / std::max(scales[i], 1e-30));
    }
    EXPECT_LE(err, tol) << shape_string(p.test);
    max_error_seen_ = std::max(max_error_seen_, err / (tol > 0 ? tol : 1.0));
  }

 public:
  // The largest error / tolerance ratio seen so far (for printing the margin).
  double max_error_ratio() const { return max_error_seen_; }

 private:
  struct Slot {
    Tensor test, ref;
    int64_t bytes = 0;
  };
  Backend& test_;
  std::unique_ptr<Backend> ref_;
  std::vector<Slot> slots_;
  size_t next_slot_ = 0;
  std::mt19937_64 rng_;
  Tolerances tol_;
  double max_error_seen_ = 0.0;
};

}  // namespace bl::op_cases
