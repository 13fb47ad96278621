// Whole-model checks on synthetic models: the fast CPU backend against the scalar reference,
// chunked prefill against one pass, and the session's bounds.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <set>

#include "backend/backend.h"
#include "io/gguf_writer.h"
#include "io/model_file.h"
#include "kernels/cpu/blocks_as_bl.h"
#include "kernels/cpu/matmul.h"
#include "logits_error.h"
#include "model/llama_model.h"
#include "runtime/sampler.h"
#include "runtime/sequence_batch.h"
#include "runtime/session.h"
#include "runtime/synthetic_model.h"

namespace bl {
namespace {

std::string synth_file(const std::string& type_name) {
  const std::string path = (std::filesystem::temp_directory_path() / ("bl_model_test_tiny_" + type_name + ".gguf")).string();
  ThreadPool pool(2);
  Status s = write_synthetic_model(*find_synth_shape("tiny"), *dtype_from_name(type_name), 7, path, pool);
  EXPECT_TRUE(s.ok()) << s.message();
  return path;
}

struct Loaded {
  std::unique_ptr<ModelFile> file;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
};

Loaded load(const std::string& path, const std::string& device) {
  Loaded l;
  auto file = ModelFile::open(path);
  EXPECT_TRUE(file.ok()) << file.status().message();
  l.file = std::move(file).value();
  l.backend = std::move(make_backend(device, 2)).value();
  auto model = LlamaModel::load(*l.file, *l.backend);
  EXPECT_TRUE(model.ok()) << model.status().message();
  l.model = std::move(model).value();
  return l;
}

std::vector<float> logits_of(const LlamaModel& model, const std::vector<TokenId>& ids, int n_batch, DType kv_type) {
  auto session = Session::create(model, {.n_ctx = 256, .n_batch = n_batch, .logits_all = true, .kv_type = kv_type});
  EXPECT_TRUE(session.ok()) << session.status().message();
  Status s = (*session)->feed(ids);
  EXPECT_TRUE(s.ok()) << s.message();
  return (*session)->all_logits();
}

std::vector<TokenId> some_ids(int n) {
  std::vector<TokenId> ids;
  for (int i = 0; i < n; ++i) ids.push_back((i * 131 + 17) % 1024);
  return ids;
}

// Whether the CPU backend converts block formats to bl<b>g32 at load (cpu::blocks_as_bl; by
// default at the AVX2 level), for one test: never keeps the file's formats on the dot kernels.
struct BlocksAsBlMode {
  explicit BlocksAsBlMode(cpu::BlocksAsBl mode) { cpu::set_blocks_as_bl(mode); }
  ~BlocksAsBlMode() { cpu::set_blocks_as_bl(cpu::BlocksAsBl::automatic); }
};

TEST(LlamaModel, CpuMatchesReferenceOnSyntheticModels) {
  // Tolerance: with an f32 KV cache on both sides, f32 and f16 weights differ only by summation
  // order; for quantized weights the CPU backend also sends activations as two 8-bit terms
  // (kernels/cpu/matmul.h), ~2^-16 relative per activation, measured ~6e-5 at the logits.
  const BlocksAsBlMode dot_kernels(cpu::BlocksAsBl::never);
  const std::vector<std::pair<std::string, double>> cases = {{"f32", 1e-5}, {"f16", 1e-5}, {"q8_0", 5e-4},
                                                             {"q4_0", 5e-4}, {"q4_k", 5e-4}, {"q6_k", 5e-4}};
  for (const auto& [type, tolerance] : cases) {
    const std::string path = synth_file(type);
    Loaded ref = load(path, "ref"), cpu = load(path, "cpu");
    const std::vector<TokenId> ids = some_ids(37);
    const std::vector<float> want = logits_of(*ref.model, ids, 64, DType::F32);
    const std::vector<float> got = logits_of(*cpu.model, ids, 64, DType::F32);
    ASSERT_EQ(got.size(), want.size());
    const double error = relative_max_error(got, want);
    EXPECT_LE(error, tolerance) << type;
    std::printf("%s: relative max error %.3g\n", type.c_str(), error);
  }
}

TEST(LlamaModel, CpuTokenByTokenMatchesReference) {
  // One token per forward call: where the CPU backend interleaves Q4_0 / Q8_0 weights it also
  // copies them, so the model joins Q/K/V and gate/up into one matrix each and a one-token
  // step runs one matmul for each (Backend::copies_weights). Tolerances as above.
  const BlocksAsBlMode dot_kernels(cpu::BlocksAsBl::never);
  for (const char* type : {"q8_0", "q4_0", "q4_k"}) {
    const std::string path = synth_file(type);
    Loaded ref = load(path, "ref"), cpu = load(path, "cpu");
    const std::vector<TokenId> ids = some_ids(19);
    const std::vector<float> want = logits_of(*ref.model, ids, 64, DType::F32);
    const std::vector<float> got = logits_of(*cpu.model, ids, 1, DType::F32);
    ASSERT_EQ(got.size(), want.size());
    EXPECT_LE(relative_max_error(got, want), 5e-4) << type;
  }
}

// The 4- and 5-bit block formats converted to bl4g32 / bl5g32 at load (cpu::blocks_as_bl) run
// on the lookup-table kernels, whose int8 table entries are about as precise as llama.cpp's int8
// activations: within the bl models' bound (quantize_model_test: 2.5 % RMS with one table term,
// the default; 0.1 % with two), for a prompt and for a token a forward.
TEST(LlamaModel, CpuRunsBlockFormatsAsBl) {
  const BlocksAsBlMode as_bl(cpu::BlocksAsBl::always);
  const double bound = cpu::lut_act_precision() == cpu::ActPrecision::int8x2 ? 1e-3 : 2.5e-2;
  for (const char* type : {"q4_0", "q4_1", "q4_k", "q5_0", "q5_1", "q5_k"}) {
    const std::string path = synth_file(type);
    Loaded ref = load(path, "ref"), cpu = load(path, "cpu");
    const std::vector<TokenId> ids = some_ids(19);
    const std::vector<float> want = logits_of(*ref.model, ids, 64, DType::F32);
    for (int n_batch : {64, 1}) {
      const std::vector<float> got = logits_of(*cpu.model, ids, n_batch, DType::F32);
      ASSERT_EQ(got.size(), want.size());
      const double error = relative_rms(got, want);
      EXPECT_LT(error, bound) << type << " n_batch " << n_batch;
      std::printf("%s as bl, n_batch %d: relative RMS error %.4g\n", type, n_batch, error);
    }
  }
}

TEST(LlamaModel, ChunkedPrefillEqualsOnePass) {
  const std::string path = synth_file("f32");
  Loaded ref = load(path, "ref");
  const std::vector<TokenId> ids = some_ids(23);
  const std::vector<float> one_pass = logits_of(*ref.model, ids, 64, DType::F32);
  for (int n_batch : {1, 4, 7}) {
    const std::vector<float> chunked = logits_of(*ref.model, ids, n_batch, DType::F32);
    EXPECT_LE(relative_max_error(chunked, one_pass), 1e-6) << "n_batch " << n_batch;
  }
}

TEST(LlamaModel, SessionRejectsBadIdsAndAFullContext) {
  const std::string path = synth_file("f32");
  Loaded ref = load(path, "ref");
  auto session = Session::create(*ref.model, {.n_ctx = 8, .n_batch = 4});
  ASSERT_TRUE(session.ok());
  const std::vector<TokenId> bad = {1, 5000};
  Status s = (*session)->feed(bad);
  EXPECT_EQ(s.code(), StatusCode::invalid_argument);
  EXPECT_NE(s.message().find("5000"), std::string::npos);
  EXPECT_EQ((*session)->n_past(), 0);  // nothing was fed
  const std::vector<TokenId> nine = some_ids(9);
  s = (*session)->feed(nine);
  EXPECT_NE(s.message().find("context is full"), std::string::npos) << s.message();
  EXPECT_EQ((*session)->n_past(), 0);
}

// Copies a model file with one metadata key changed, so that its tensors no longer match.
std::string rewrite_with(const ModelFile& file, const std::string& key, uint32_t value, const std::string& name) {
  GgufWriter w;
  for (const GgufKeyValue& kv : file.metadata()) w.set(kv.key, kv.value);
  w.set_u32(key, value);
  for (const TensorInfo& t : file.tensors()) EXPECT_TRUE(w.add_tensor(t.name, t.dtype, t.ne, t.data, t.bytes).ok());
  const std::string path = (std::filesystem::temp_directory_path() / name).string();
  Status s = w.write(path);
  EXPECT_TRUE(s.ok()) << s.message();
  return path;
}

// Session::feed_sampled (the backend draws, Backend::sample_top_k) continues a prompt with the
// tokens the host sampler draws from the logits of Session::feed, number for number.
TEST(LlamaModel, BackendDrawsTheSamplersTokens) {
  Loaded m = load(synth_file("q8_0"), "cpu");
  const std::vector<TokenId> prompt = {1, 17, 300, 5};
  for (uint64_t seed : {1u, 2u}) {
    const SamplerParams params{.temperature = 1.2f, .top_k = 40, .top_p = 0.9f, .min_p = 0.02f, .seed = seed};
    auto on_host = Session::create(*m.model, {.n_ctx = 64, .n_batch = 8});
    auto on_backend = Session::create(*m.model, {.n_ctx = 64, .n_batch = 8});
    ASSERT_TRUE(on_host.ok() && on_backend.ok());
    ASSERT_TRUE((*on_host)->feed(prompt).ok() && (*on_backend)->feed(prompt).ok());
    Sampler host_sampler(params), backend_sampler(params);
    std::vector<TokenId> host_ids, backend_ids;
    TokenId id = backend_sampler.sample((*on_backend)->last_logits(), {});
    for (int i = 0; i < 24; ++i) {
      host_ids.push_back(host_sampler.sample((*on_host)->last_logits(), {}));
      const TokenId next[1] = {host_ids.back()};
      ASSERT_TRUE((*on_host)->feed(next).ok());
      backend_ids.push_back(id);
      auto drawn = (*on_backend)->feed_sampled(id, top_k_draw(params, backend_sampler.next_uniform()));
      ASSERT_TRUE(drawn.ok()) << drawn.status().message();
      id = *drawn;
    }
    EXPECT_EQ(backend_ids, host_ids) << "seed " << seed;
    std::set<TokenId> distinct(host_ids.begin(), host_ids.end());
    EXPECT_GT(distinct.size(), 3u) << "the draws should not all be one token at temperature 1.2";
  }
  auto session = Session::create(*m.model, {.n_ctx = 64, .n_batch = 8});
  ASSERT_TRUE(session.ok());
  auto greedy_draw = (*session)->feed_sampled(1, {.temperature = 0.0f, .top_k = 40, .top_p = 1.0f, .min_p = 0.0f, .u = 0.5});
  EXPECT_EQ(greedy_draw.status().code(), StatusCode::invalid_argument);
  const Status bad = (*session)->decode_sampled(
      1, 4, [] { return cpu::TopKDraw{.temperature = 1.0f, .top_k = 40, .top_p = 1.0f, .min_p = 0.0f, .u = 1.5}; },
      [](TokenId) { return true; });
  EXPECT_EQ(bad.code(), StatusCode::invalid_argument);
}

// Session::decode_sampled (each step queued before the host reads the draw before it) gives the
// tokens feed_sampled gives in a loop with the same draws, stopped by on_pick (one draw more
// taken for the forgotten step) and by max_picks.
TEST(LlamaModel, DecodeSampledEqualsFeedSampledInALoop) {
  Loaded m = load(synth_file("q8_0"), "cpu");
  const std::vector<TokenId> prompt = {1, 17, 300, 5};
  const SamplerParams params{.temperature = 1.2f, .top_k = 40, .top_p = 0.9f, .min_p = 0.02f, .seed = 3};
  auto looped = Session::create(*m.model, {.n_ctx = 64, .n_batch = 8});
  auto ahead = Session::create(*m.model, {.n_ctx = 64, .n_batch = 8});
  ASSERT_TRUE(looped.ok() && ahead.ok());
  ASSERT_TRUE((*looped)->feed(prompt).ok() && (*ahead)->feed(prompt).ok());
  for (int max_picks : {-1, 7}) {
    Sampler loop_sampler(params), ahead_sampler(params);
    std::vector<TokenId> looped_picks, ahead_picks;
    const int wanted = max_picks < 0 ? 10 : max_picks;
    TokenId id = 9;
    for (int i = 0; i < wanted; ++i) {
      auto next = (*looped)->feed_sampled(id, top_k_draw(params, loop_sampler.next_uniform()));
      ASSERT_TRUE(next.ok()) << next.status().message();
      looped_picks.push_back(id = *next);
    }
    const Status s = (*ahead)->decode_sampled(
        9, max_picks, [&] { return top_k_draw(params, ahead_sampler.next_uniform()); },
        [&](TokenId t) {
          ahead_picks.push_back(t);
          return static_cast<int>(ahead_picks.size()) < wanted;
        });
    ASSERT_TRUE(s.ok()) << s.message();
    EXPECT_EQ(ahead_picks, looped_picks) << "max_picks " << max_picks;
    EXPECT_EQ((*ahead)->n_past(), (*looped)->n_past());
    EXPECT_GT(std::set<TokenId>(looped_picks.begin(), looped_picks.end()).size(), 3u);
  }
}

// Session::decode_greedy (each step queued before the host reads the pick before it, fed from
// where the backend picked it) gives the picks of feed_greedy in a loop, and leaves the session
// where that loop does: stopped by on_pick, by max_picks, and by a full context, then fed on.
TEST(LlamaModel, DecodeGreedyEqualsFeedGreedyInALoop) {
  Loaded m = load(synth_file("q8_0"), "cpu");
  const std::vector<TokenId> prompt = {1, 17, 300, 5};
  const int n_ctx = 32;
  auto looped = Session::create(*m.model, {.n_ctx = n_ctx, .n_batch = 8});
  auto ahead = Session::create(*m.model, {.n_ctx = n_ctx, .n_batch = 8});
  ASSERT_TRUE(looped.ok() && ahead.ok());
  ASSERT_TRUE((*looped)->feed(prompt).ok() && (*ahead)->feed(prompt).ok());
  // feed_greedy from id, `picks` times or until the context is full.
  auto loop = [&](TokenId id, int picks) {
    std::vector<TokenId> out;
    for (int i = 0; i < picks && (*looped)->n_past() < n_ctx; ++i) {
      auto next = (*looped)->feed_greedy(id);
      EXPECT_TRUE(next.ok()) << next.status().message();
      out.push_back(id = *next);
    }
    return out;
  };
  // decode_greedy from id, on_pick declining the pick after `stop_after` of them.
  auto decode = [&](TokenId id, int max_picks, int stop_after) {
    std::vector<TokenId> out;
    const int n_before = (*ahead)->n_past();
    Status s = (*ahead)->decode_greedy(id, max_picks, [&](TokenId t) {
      out.push_back(t);
      EXPECT_EQ((*ahead)->n_past(), n_before + static_cast<int>(out.size()))
          << "n_past during on_pick counts the tokens fed up to the pick";
      return static_cast<int>(out.size()) < stop_after;
    });
    EXPECT_TRUE(s.ok()) << s.message();
    return out;
  };
  // Stopped by on_pick after 5 picks (a sixth step was queued and is forgotten).
  std::vector<TokenId> a = decode(7, -1, 5), b = loop(7, 5);
  EXPECT_EQ(a, b);
  EXPECT_EQ((*ahead)->n_past(), (*looped)->n_past());
  // Stopped by max_picks, from the last pick on.
  a = decode(a.back(), 4, 100), b = loop(b.back(), 4);
  EXPECT_EQ(a, b);
  EXPECT_EQ((*ahead)->n_past(), (*looped)->n_past());
  // Stopped by the full context.
  a = decode(a.back(), -1, 1000), b = loop(b.back(), 1000);
  EXPECT_EQ(a, b);
  EXPECT_EQ((*ahead)->n_past(), n_ctx);
  EXPECT_EQ((*looped)->n_past(), n_ctx);
  EXPECT_GT(std::set<TokenId>(b.begin(), b.end()).size(), 3u) << "the picks should not all be one token";
  // Both go on alike after a truncation (the forgotten steps' cache slots are overwritten).
  (*ahead)->truncate(12), (*looped)->truncate(12);
  a = decode(3, 6, 100), b = loop(3, 6);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 6u);
  EXPECT_EQ((*ahead)->decode_greedy(5000, -1, [](TokenId) { return true; }).code(), StatusCode::invalid_argument);
}

// A SequenceBatch of three sequences (prompts of different lengths) decoded together gives
// each sequence the logits it gets alone in a Session: on the reference backend exactly the
// same arithmetic per token, on the CPU backend the same kernels at another token count.
TEST(LlamaModel, BatchOfSequencesMatchesEachAlone) {
  const std::string path = synth_file("q8_0");
  const std::vector<std::vector<TokenId>> prompts = {{1, 17, 300}, {5, 6, 7, 8, 9, 10, 11}, {42}};
  for (const char* device : {"ref", "cpu"}) {
    SCOPED_TRACE(device);
    Loaded m = load(path, device);
    auto batch = SequenceBatch::create(*m.model, {.n_seq = 3, .n_ctx = 64, .n_batch = 4});
    ASSERT_TRUE(batch.ok()) << batch.status().message();
    std::vector<std::unique_ptr<Session>> alone;
    for (int q = 0; q < 3; ++q) {
      ASSERT_TRUE((*batch)->feed(q, prompts[static_cast<size_t>(q)]).ok());
      auto session = Session::create(*m.model, {.n_ctx = 64, .n_batch = 4});
      ASSERT_TRUE(session.ok());
      ASSERT_TRUE((*session)->feed(prompts[static_cast<size_t>(q)]).ok());
      alone.push_back(std::move(session).value());
    }
    std::vector<TokenId> next = {3, 4, 5};
    double worst = 0;
    for (int step = 0; step < 6; ++step) {
      ASSERT_TRUE((*batch)->step(next).ok());
      for (int q = 0; q < 3; ++q) {
        const TokenId one[1] = {next[static_cast<size_t>(q)]};
        ASSERT_TRUE(alone[static_cast<size_t>(q)]->feed(one).ok());
        const auto got = (*batch)->logits(q);
        const auto span = alone[static_cast<size_t>(q)]->last_logits();
        const std::vector<float> want(span.begin(), span.end());
        worst = std::max(worst, relative_max_error(got, want));
        // Continue with the token alone's logits pick, so both follow the same text.
        next[static_cast<size_t>(q)] = static_cast<TokenId>(std::max_element(want.begin(), want.end()) - want.begin());
        EXPECT_EQ((*batch)->n_past(q), alone[static_cast<size_t>(q)]->n_past());
      }
    }
    EXPECT_LE(worst, std::string(device) == "ref" ? 1e-6 : 1e-3);
    // Greedy steps pick on the backend: the argmax of the logits each sequence gets.
    auto picked = (*batch)->step_greedy(next);
    ASSERT_TRUE(picked.ok()) << picked.status().message();
    for (int q = 0; q < 3; ++q) {
      const auto l = (*batch)->logits(q);
      EXPECT_EQ((*picked)[static_cast<size_t>(q)], std::max_element(l.begin(), l.end()) - l.begin()) << "sequence " << q;
    }
    // Drawn on the backend: each sequence's own draw from its own row (top_k 1 is the argmax).
    const cpu::TopKDraw draws[3] = {{.temperature = 0.7f, .top_k = 40, .top_p = 0.9f, .min_p = 0.0f, .u = 0.31},
                                    {.temperature = 1.0f, .top_k = 1, .top_p = 1.0f, .min_p = 0.0f, .u = 0.0},
                                    {.temperature = 1.3f, .top_k = 0, .top_p = 1.0f, .min_p = 0.05f, .u = 0.87}};
    auto drawn = (*batch)->step_sampled(*picked, draws);
    ASSERT_TRUE(drawn.ok()) << drawn.status().message();
    for (int q = 0; q < 3; ++q) {
      const auto l = (*batch)->logits(q);
      EXPECT_EQ((*drawn)[static_cast<size_t>(q)], cpu::draw_from_top_k(l, draws[q])) << "sequence " << q;
    }
    const cpu::TopKDraw no_temperature[3] = {draws[0], {.temperature = 0.0f, .top_k = 1, .top_p = 1.0f, .min_p = 0.0f, .u = 0.0}, draws[2]};
    EXPECT_EQ((*batch)->step_sampled(*drawn, no_temperature).status().code(), StatusCode::invalid_argument);
    EXPECT_EQ((*batch)->step_sampled(*drawn, std::span(draws, 2)).status().code(), StatusCode::invalid_argument);
  }
  Loaded m = load(path, "cpu");
  auto batch = SequenceBatch::create(*m.model, {.n_seq = 2, .n_ctx = 8, .n_batch = 4});
  ASSERT_TRUE(batch.ok());
  const TokenId three[3] = {1, 2, 3};
  EXPECT_EQ((*batch)->step(three).code(), StatusCode::invalid_argument) << "one token per sequence";
  EXPECT_EQ((*batch)->feed(2, three).code(), StatusCode::invalid_argument) << "sequence out of range";
  const std::vector<TokenId> nine(9, 1);
  EXPECT_EQ((*batch)->feed(0, nine).code(), StatusCode::invalid_argument) << "context full";
  EXPECT_EQ((*batch)->n_past(0), 0) << "nothing fed on an error";
  EXPECT_EQ((*batch)->truncate(0, 1).code(), StatusCode::invalid_argument) << "keeps more than it holds";
  EXPECT_EQ((*batch)->truncate(2, 0).code(), StatusCode::invalid_argument) << "sequence out of range";
}

// What the server's continuous batching does: a sequence takes a placeholder token in a step
// and gives it back (truncate), or keeps a prefix and goes on with another text; its logits are
// then those of a Session that was fed only the kept tokens and the new ones.
TEST(LlamaModel, BatchSequenceTruncatedGoesOnAsIfFedOnlyWhatItKept) {
  const std::string path = synth_file("q8_0");
  Loaded m = load(path, "cpu");
  auto batch = SequenceBatch::create(*m.model, {.n_seq = 2, .n_ctx = 32, .n_batch = 8});
  ASSERT_TRUE(batch.ok()) << batch.status().message();
  const std::vector<TokenId> prompt = {1, 17, 300, 4, 9};
  ASSERT_TRUE((*batch)->feed(0, prompt).ok());
  ASSERT_TRUE((*batch)->feed(1, std::vector<TokenId>{2, 3}).ok());
  // Sequence 1 generates; sequence 0 rides along with a placeholder and gives it back.
  const TokenId step_ids[2] = {0, 5};
  ASSERT_TRUE((*batch)->step(step_ids).ok());
  ASSERT_TRUE((*batch)->truncate(0, 5).ok());
  // Sequence 0 keeps 3 of its tokens and goes on with two others, then a step of its own.
  ASSERT_TRUE((*batch)->truncate(0, 3).ok());
  ASSERT_TRUE((*batch)->feed(0, std::vector<TokenId>{40, 41}).ok());
  const std::vector<float> fed = (*batch)->fed_logits();
  const TokenId next[2] = {42, 6};
  ASSERT_TRUE((*batch)->step(next).ok());
  const std::vector<float> stepped = (*batch)->logits(0);

  auto session = Session::create(*m.model, {.n_ctx = 32, .n_batch = 8});
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->feed(std::vector<TokenId>{1, 17, 300, 40, 41}).ok());
  const auto want_fed = (*session)->last_logits();
  EXPECT_LE(relative_max_error(fed, std::vector<float>(want_fed.begin(), want_fed.end())), 1e-3);
  const TokenId one[1] = {42};
  ASSERT_TRUE((*session)->feed(one).ok());
  const auto want_stepped = (*session)->last_logits();
  EXPECT_LE(relative_max_error(stepped, std::vector<float>(want_stepped.begin(), want_stepped.end())), 1e-3);
  EXPECT_EQ((*batch)->n_past(0), 6);
  EXPECT_EQ((*batch)->n_past(1), 4);
}

TEST(LlamaModel, MissingOrMisshapenTensorsAreNamed) {
  auto file = ModelFile::open(synth_file("f32"));
  ASSERT_TRUE(file.ok());
  auto backend = make_reference_backend();

  auto more_layers = ModelFile::open(rewrite_with(**file, "llama.block_count", 3, "bl_model_test_3_layers.gguf"));
  ASSERT_TRUE(more_layers.ok());
  auto model = LlamaModel::load(**more_layers, *backend);
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), StatusCode::not_found);
  EXPECT_NE(model.status().message().find("blk.2.attn_norm.weight"), std::string::npos) << model.status().message();

  auto wider_ffn = ModelFile::open(rewrite_with(**file, "llama.feed_forward_length", 1024, "bl_model_test_ffn.gguf"));
  ASSERT_TRUE(wider_ffn.ok());
  model = LlamaModel::load(**wider_ffn, *backend);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("blk.0.ffn_gate.weight"), std::string::npos) << model.status().message();
  EXPECT_NE(model.status().message().find("[256, 1024]"), std::string::npos) << model.status().message();

  auto model_ok = LlamaModel::load(**file, *backend);
  EXPECT_TRUE(model_ok.ok()) << model_ok.status().message();
}

}  // namespace
}  // namespace bl
