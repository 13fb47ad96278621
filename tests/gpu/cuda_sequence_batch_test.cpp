// Whole-model check of batch decode on CUDA: each sequence of a SequenceBatch gets the logits it
// gets alone (a Session of its own), at 2, 3, 5, 8 and 16 sequences, so the batched paths of
// the step all run: the 2..16-token GEMVs, rope + cache write and attention over all sequences
// in one launch each (each token in its own cache region), and the step captured as a CUDA
// graph and replayed (the batch takes all its steps first, so steps 2.. replay the graph).
//
// Tolerance: alone, a token's activations go to the GEMVs quantized to int8 per 32 values
// (dp4a path); in the batch they are rounded to fp16 (tensor-core GEMV) or int8 at 2..3 tokens,
// so the logits differ by the int8 rounding, ~max|x_block| / 254 per activation: measured
// relative max errors are printed; 3e-2 of the largest logit is the bound (a token that read
// another sequence's cache or the wrong position is off by O(1)).
#include <gtest/gtest.h>
#include <unistd.h>  // getpid: the test and its memcheck run side by side, each writes its own file

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/thread_pool.h"
#include "gpu/cuda_test_util.h"
#include "io/model_file.h"
#include "logits_error.h"
#include "model/llama_model.h"
#include "runtime/sequence_batch.h"
#include "runtime/session.h"
#include "runtime/synthetic_model.h"

namespace bl {
namespace {

std::string synth_file(const std::string& shape, DType type) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("bl_cuda_batch_test_" + shape + "_" + std::string(dtype_name(type)) + "_" +
                             std::to_string(getpid()) + ".gguf"))
                               .string();
  ThreadPool pool(2);
  const Status s = write_synthetic_model(*find_synth_shape(shape), type, 11, path, pool);
  EXPECT_TRUE(s.ok()) << s.message();
  return path;
}

TEST(CudaSequenceBatch, EachSequenceGetsTheLogitsItGetsAlone) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  constexpr int kSteps = 5;
  for (DType type : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::F16}) {
    const std::string path = synth_file("tiny", type);
    auto file = ModelFile::open(path);
    ASSERT_TRUE(file.ok()) << file.status().message();
    auto model = LlamaModel::load(**file, *backend);
    ASSERT_TRUE(model.ok()) << model.status().message();
    for (int n_seq : {2, 3, 5, 8, 16}) {
      SCOPED_TRACE(std::string(dtype_name(type)) + " n_seq=" + std::to_string(n_seq));
      const int n_vocab = (*model)->config().n_vocab;
      // Prompts of different lengths (1..n_seq + 1 tokens), so the sequences sit at different
      // positions; the steps' tokens are fixed ids, the same for the batch and alone.
      std::vector<std::vector<TokenId>> prompts(static_cast<size_t>(n_seq));
      for (int q = 0; q < n_seq; ++q)
        for (int i = 0; i <= q % 7; ++i)
          prompts[static_cast<size_t>(q)].push_back((q * 131 + i * 17 + 3) % n_vocab);
      auto token = [&](int step, int q) { return static_cast<TokenId>((step * 977 + q * 59 + 1) % n_vocab); };

      auto batch = SequenceBatch::create(**model, {.n_seq = n_seq, .n_ctx = 64, .n_batch = 8});
      ASSERT_TRUE(batch.ok()) << batch.status().message();
      for (int q = 0; q < n_seq; ++q) ASSERT_TRUE((*batch)->feed(q, prompts[static_cast<size_t>(q)]).ok());
      std::vector<std::vector<std::vector<float>>> batch_logits(kSteps);  // [step][seq][vocab]
      for (int step = 0; step < kSteps; ++step) {
        std::vector<TokenId> ids;
        for (int q = 0; q < n_seq; ++q) ids.push_back(token(step, q));
        ASSERT_TRUE((*batch)->step(ids).ok());
        for (int q = 0; q < n_seq; ++q)
          batch_logits[static_cast<size_t>(step)].push_back((*batch)->logits(q));
      }
      // Greedy steps pick on the device: the argmax of the logits each sequence gets.
      std::vector<TokenId> ids;
      for (int q = 0; q < n_seq; ++q) ids.push_back(token(kSteps, q));
      auto picked = (*batch)->step_greedy(ids);
      ASSERT_TRUE(picked.ok()) << picked.status().message();
      for (int q = 0; q < n_seq; ++q) {
        const auto l = (*batch)->logits(q);
        EXPECT_EQ((*picked)[static_cast<size_t>(q)], std::max_element(l.begin(), l.end()) - l.begin())
            << "sequence " << q;
      }
      // Sampled steps draw on the device: each sequence its own draw from its own row (what the
      // server's continuous batching runs at temperature > 0; top_k 1 is a greedy request's).
      std::vector<cpu::TopKDraw> draws;
      for (int q = 0; q < n_seq; ++q) {
        draws.push_back({.temperature = 0.5f + 0.1f * static_cast<float>(q % 6),
                         .top_k = q % 4 == 3 ? 1 : 8 + (7 * q) % 57,  // 1..64: what CUDA draws from
                         .top_p = q % 2 == 0 ? 0.9f : 1.0f,
                         .min_p = q % 3 == 0 ? 0.05f : 0.0f,
                         .u = (static_cast<double>(q) + 0.37) / static_cast<double>(n_seq + 1)});
      }
      auto drawn = (*batch)->step_sampled(*picked, draws);
      ASSERT_TRUE(drawn.ok()) << drawn.status().message();
      for (int q = 0; q < n_seq; ++q) {
        EXPECT_EQ((*drawn)[static_cast<size_t>(q)],
                  cpu::draw_from_top_k((*batch)->logits(q), draws[static_cast<size_t>(q)]))
            << "sequence " << q;
      }

      double worst = 0;
      for (int q = 0; q < n_seq; ++q) {
        auto alone = Session::create(**model, {.n_ctx = 64, .n_batch = 8});
        ASSERT_TRUE(alone.ok());
        ASSERT_TRUE((*alone)->feed(prompts[static_cast<size_t>(q)]).ok());
        for (int step = 0; step < kSteps; ++step) {
          const TokenId one[1] = {token(step, q)};
          ASSERT_TRUE((*alone)->feed(one).ok());
          worst = std::max(worst,
                           relative_max_error(batch_logits[static_cast<size_t>(step)][static_cast<size_t>(q)],
                                              (*alone)->last_logits()));
        }
      }
      std::printf("[ %s n_seq=%d ] batch vs alone: relative max error %.3g\n",
                  std::string(dtype_name(type)).c_str(), n_seq, worst);
      EXPECT_LE(worst, 3e-2);
    }
  }
  EXPECT_TRUE(backend->status().ok());
}

// Session::decode_greedy on CUDA (each step's graph fed from the device's pick and queued before
// the host reads the pick before it; picks copied through page-locked memory, read_async /
// wait_read) gives the picks of feed_greedy in a loop on the same backend, bit for bit, and
// leaves the same position, stopped by on_pick and by max_picks, with the two sessions'
// graphs replacing each other on the one backend between calls; decode_sampled likewise the
// tokens of feed_sampled with the same draws.
TEST(CudaSession, DecodeAheadEqualsFeedingInALoop) {
  SKIP_WITHOUT_GPU();
  auto backend = open_or_fail();
  ASSERT_TRUE(backend);
  for (DType type : {DType::Q4_0, DType::F16}) {
    SCOPED_TRACE(dtype_name(type));
    const std::string path = synth_file("tiny", type);
    auto file = ModelFile::open(path);
    ASSERT_TRUE(file.ok()) << file.status().message();
    auto model = LlamaModel::load(**file, *backend);
    ASSERT_TRUE(model.ok()) << model.status().message();
    auto looped = Session::create(**model, {.n_ctx = 96, .n_batch = 8});
    auto ahead = Session::create(**model, {.n_ctx = 96, .n_batch = 8});
    ASSERT_TRUE(looped.ok() && ahead.ok());
    const std::vector<TokenId> prompt = {1, 17, 300, 5, 42};
    ASSERT_TRUE((*looped)->feed(prompt).ok() && (*ahead)->feed(prompt).ok());
    TokenId from_loop = 7, from_ahead = 7;
    for (int max_picks : {-1, 9, 30}) {
      std::vector<TokenId> looped_picks, ahead_picks;
      const int wanted = max_picks < 0 ? 12 : max_picks;  // on_pick declines after 12 without a limit
      for (int i = 0; i < wanted; ++i) {
        auto next = (*looped)->feed_greedy(from_loop);
        ASSERT_TRUE(next.ok()) << next.status().message();
        looped_picks.push_back(from_loop = *next);
      }
      const Status s = (*ahead)->decode_greedy(from_ahead, max_picks, [&](TokenId t) {
        ahead_picks.push_back(t);
        return static_cast<int>(ahead_picks.size()) < 12 || max_picks >= 0;
      });
      ASSERT_TRUE(s.ok()) << s.message();
      EXPECT_EQ(ahead_picks, looped_picks) << "max_picks " << max_picks;
      EXPECT_EQ((*ahead)->n_past(), (*looped)->n_past());
      if (!ahead_picks.empty()) from_ahead = ahead_picks.back();
    }
    // decode_sampled against feed_sampled with the same draws (the draws' ring on the device).
    const cpu::TopKDraw draw0{.temperature = 1.1f, .top_k = 40, .top_p = 0.95f, .min_p = 0.0f, .u = 0.0};
    uint64_t loop_n = 0, ahead_n = 0;
    auto draw = [&](uint64_t& n) {
      cpu::TopKDraw d = draw0;
      d.u = static_cast<double>((n++ * 7919) % 1000) / 1000.0;  // spread over [0, 1)
      return d;
    };
    std::vector<TokenId> looped_picks, ahead_picks;
    for (int i = 0; i < 10; ++i) {
      auto next = (*looped)->feed_sampled(from_loop, draw(loop_n));
      ASSERT_TRUE(next.ok()) << next.status().message();
      looped_picks.push_back(from_loop = *next);
    }
    const Status s = (*ahead)->decode_sampled(from_ahead, -1, [&] { return draw(ahead_n); }, [&](TokenId t) {
      ahead_picks.push_back(t);
      return ahead_picks.size() < 10;
    });
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(ahead_picks, looped_picks) << "sampled";
    EXPECT_EQ((*ahead)->n_past(), (*looped)->n_past());
  }
  EXPECT_TRUE(backend->status().ok());
}

}  // namespace
}  // namespace bl
