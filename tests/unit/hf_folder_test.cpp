// Hugging Face folders written by the test (config.json, safetensors, tokenizer files) opened
// through ModelFile::open: GGUF keys, tensor names and shapes, tokenizer translation, shards.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "io/hf_folder.h"
#include "io/hf_tensor_names.h"
#include "io/model_file.h"
#include "gguf_test_util.h"

namespace bl {
namespace {

using nlohmann::json;

void write_json(const std::string& path, const json& j) { test::write_bytes(path, j.dump(1)); }

// A safetensors file of F32 tensors, each filled with `index + element / 1000`.
struct StTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::string dtype = "F32";
};

void write_safetensors(const std::string& path, const std::vector<StTensor>& tensors) {
  json header = json::object();
  std::string data;
  for (size_t i = 0; i < tensors.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : tensors[i].shape) n *= d;
    size_t begin = data.size();
    if (tensors[i].dtype == "F32") {
      for (int64_t e = 0; e < n; ++e) {
        float v = static_cast<float>(i) + static_cast<float>(e) / 1000.0f;
        data.append(reinterpret_cast<const char*>(&v), 4);
      }
    } else {  // F16 / BF16: 2 bytes of zeros are fine for shape checks
      data.append(static_cast<size_t>(n) * 2, '\0');
    }
    header[tensors[i].name] = {{"dtype", tensors[i].dtype}, {"shape", tensors[i].shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  uint64_t len = h.size();
  test::write_bytes(path, std::string(reinterpret_cast<const char*>(&len), 8) + h + data);
}

json llama_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", 64},
          {"intermediate_size", 96},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"num_hidden_layers", 2},
          {"max_position_embeddings", 256},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"vocab_size", 8},
          {"tie_word_embeddings", true},
          {"bos_token_id", 5},
          {"eos_token_id", 5}};
}

std::vector<StTensor> llama_tensors(int layers, bool with_bias, bool with_lm_head) {
  std::vector<StTensor> t = {{"model.embed_tokens.weight", {8, 64}}, {"model.norm.weight", {64}}};
  if (with_lm_head) t.push_back({"lm_head.weight", {8, 64}});
  for (int l = 0; l < layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "self_attn.q_proj.weight", {64, 64}});
    t.push_back({p + "self_attn.k_proj.weight", {32, 64}});
    t.push_back({p + "self_attn.v_proj.weight", {32, 64}});
    t.push_back({p + "self_attn.o_proj.weight", {64, 64}});
    if (with_bias) {
      t.push_back({p + "self_attn.q_proj.bias", {64}});
      t.push_back({p + "self_attn.k_proj.bias", {32}});
      t.push_back({p + "self_attn.v_proj.bias", {32}});
    }
    t.push_back({p + "mlp.gate_proj.weight", {96, 64}, "BF16"});
    t.push_back({p + "mlp.up_proj.weight", {96, 64}, "F16"});
    t.push_back({p + "mlp.down_proj.weight", {64, 96}});
    t.push_back({p + "input_layernorm.weight", {64}});
    t.push_back({p + "post_attention_layernorm.weight", {64}});
    t.push_back({p + "self_attn.rotary_emb.inv_freq", {8}});
  }
  return t;
}

// Byte-level BPE in the SmolLM style (Digits + ByteLevel), merges in both stored forms.
json bpe_tokenizer() {
  return {{"version", "1.0"},
          {"added_tokens",
           {{{"id", 5}, {"content", "<|endoftext|>"}, {"special", true}},
            {{"id", 6}, {"content", "<extra>"}, {"special", false}}}},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers",
             {{{"type", "Digits"}, {"individual_digits", true}},
              {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}}}}},
          {"model",
           {{"type", "BPE"},
            {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}, {"\xc4\xa0", 3}, {"\xc4\xa0" "a", 4}}},
            {"merges", {"a b", {"\xc4\xa0", "a"}}}}}};
}

class HfFolderTest : public ::testing::Test {
 protected:
  void write_folder(const json& config, const std::vector<StTensor>& tensors, bool with_tokenizer = true) {
    write_json(dir_.file("config.json"), config);
    write_safetensors(dir_.file("model.safetensors"), tensors);
    if (with_tokenizer) {
      write_json(dir_.file("tokenizer.json"), bpe_tokenizer());
      write_json(dir_.file("tokenizer_config.json"),
                 {{"bos_token", "<|endoftext|>"}, {"eos_token", {{"content", "<|endoftext|>"}}},
                  {"chat_template", "{% for m in messages %}{{ m.content }}{% endfor %}"}});
    }
  }
  std::unique_ptr<ModelFile> open_ok() {
    auto f = ModelFile::open(dir_.path());
    EXPECT_TRUE(f.ok()) << f.status().message();
    return f.ok() ? std::move(*f) : nullptr;
  }
  Status open_error() {
    auto f = ModelFile::open(dir_.path());
    EXPECT_FALSE(f.ok());
    return f.ok() ? Status::Ok() : f.status();
  }
  test::TempDir dir_;
};

TEST_F(HfFolderTest, LlamaHyperParametersAsGgufKeys) {
  write_folder(llama_config(), llama_tensors(2, false, false));
  auto f = open_ok();
  ASSERT_TRUE(f);
  EXPECT_NE(dynamic_cast<HfFolder*>(f.get()), nullptr);
  EXPECT_EQ(f->get_string("general.architecture").value(), "llama");
  EXPECT_EQ(f->get_int("llama.block_count").value(), 2);
  EXPECT_EQ(f->get_int("llama.context_length").value(), 256);
  EXPECT_EQ(f->get_int("llama.embedding_length").value(), 64);
  EXPECT_EQ(f->get_int("llama.feed_forward_length").value(), 96);
  EXPECT_EQ(f->get_int("llama.attention.head_count").value(), 4);
  EXPECT_EQ(f->get_int("llama.attention.head_count_kv").value(), 2);
  EXPECT_FLOAT_EQ(static_cast<float>(f->get_float("llama.attention.layer_norm_rms_epsilon").value()), 1e-5f);
  EXPECT_EQ(f->get_float("llama.rope.freq_base").value(), 10000.0);
  EXPECT_EQ(f->get_int("llama.rope.dimension_count").value(), 16);
  EXPECT_EQ(f->get_int("llama.vocab_size").value(), 8);
  EXPECT_TRUE(f->get_bool("bitlight.rope.neox").value());
  EXPECT_TRUE(f->get_bool("bitlight.tie_word_embeddings").value());
  EXPECT_FALSE(f->has("llama.rope.scaling.type"));
  EXPECT_FALSE(f->has("llama.attention.key_length"));
  EXPECT_EQ(f->find("llama.block_count")->type, GgufType::u32);  // as llama.cpp writes them
  EXPECT_EQ(f->find("llama.rope.freq_base")->type, GgufType::f32);
}

TEST_F(HfFolderTest, TensorNamesShapesAndData) {
  write_folder(llama_config(), llama_tensors(2, false, true));
  auto f = open_ok();
  ASSERT_TRUE(f);
  // Tied embeddings: lm_head is dropped; inv_freq is dropped.
  EXPECT_EQ(f->find_tensor("output.weight"), nullptr);
  EXPECT_EQ(f->tensors().size(), 2u + 2u * 9u);
  const TensorInfo* embd = f->find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->ne, (std::vector<int64_t>{64, 8}));  // HF [vocab, hidden] -> GGUF ne {hidden, vocab}
  EXPECT_EQ(embd->dtype, DType::F32);
  EXPECT_EQ(static_cast<const float*>(embd->data)[3], 0.003f);
  Tensor v = embd->view();
  EXPECT_EQ(v.ne, (std::array<int64_t, 4>{64, 8, 1, 1}));
  EXPECT_EQ(v.bytes(), embd->bytes);
  const TensorInfo* k = f->find_tensor("blk.1.attn_k.weight");
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(k->ne, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(f->find_tensor("blk.1.ffn_gate.weight")->dtype, DType::BF16);
  EXPECT_EQ(f->find_tensor("blk.1.ffn_up.weight")->dtype, DType::F16);
  EXPECT_EQ(f->find_tensor("blk.0.ffn_down.weight")->ne, (std::vector<int64_t>{96, 64}));
  for (const char* name : {"blk.0.attn_q.weight", "blk.0.attn_v.weight", "blk.0.attn_output.weight", "blk.0.attn_norm.weight",
                           "blk.0.ffn_norm.weight", "output_norm.weight"})
    EXPECT_NE(f->find_tensor(name), nullptr) << name;
}

TEST_F(HfFolderTest, UntiedKeepsOutput) {
  json config = llama_config();
  config["tie_word_embeddings"] = false;
  write_folder(config, llama_tensors(1, false, true));
  auto f = open_ok();
  ASSERT_TRUE(f);
  ASSERT_NE(f->find_tensor("output.weight"), nullptr);
  EXPECT_EQ(f->find_tensor("output.weight")->ne, (std::vector<int64_t>{64, 8}));
}

TEST_F(HfFolderTest, ByteLevelTokenizer) {
  write_folder(llama_config(), llama_tensors(1, false, false));
  auto f = open_ok();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->get_string("tokenizer.ggml.model").value(), "gpt2");
  EXPECT_EQ(f->get_string("tokenizer.ggml.pre").value(), "smollm");
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").value(),
            (std::vector<std::string>{"a", "b", "ab", "\xc4\xa0", "\xc4\xa0" "a", "<|endoftext|>", "<extra>", "[PAD7]"}));
  EXPECT_EQ(f->get_int_array("tokenizer.ggml.token_type").value(), (std::vector<int64_t>{1, 1, 1, 1, 1, 3, 4, 5}));
  EXPECT_EQ(f->get_string_array("tokenizer.ggml.merges").value(), (std::vector<std::string>{"a b", "\xc4\xa0 a"}));
  EXPECT_EQ(f->get_int("tokenizer.ggml.bos_token_id").value(), 5);
  EXPECT_EQ(f->get_int("tokenizer.ggml.eos_token_id").value(), 5);
  EXPECT_FALSE(f->get_bool("tokenizer.ggml.add_bos_token").value());
  EXPECT_EQ(f->get_string("tokenizer.chat_template").value(), "{% for m in messages %}{{ m.content }}{% endfor %}");
}

TEST_F(HfFolderTest, PreTokenizerGuesses) {
  const std::string llama3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
      "\\s+(?!\\S)|\\s+";
  const std::string qwen2 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
      "\\s+(?!\\S)|\\s+";
  auto with_pre = [](const json& pre) {
    json t = bpe_tokenizer();
    t["pre_tokenizer"] = pre;
    return t;
  };
  auto split_then_bytelevel = [](const std::string& regex) {
    return json{{"type", "Sequence"},
                {"pretokenizers",
                 {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                  {{"type", "ByteLevel"}, {"use_regex", false}}}}};
  };
  const std::vector<std::pair<json, std::string>> cases = {
      {split_then_bytelevel(llama3), "llama-bpe"},
      {split_then_bytelevel(qwen2), "qwen2"},
      {split_then_bytelevel("\\s+|\\w+"), "gpt2"},
      {{{"type", "ByteLevel"}, {"use_regex", true}}, "gpt2"},
  };
  write_folder(llama_config(), llama_tensors(1, false, false));
  for (const auto& [pre, expected] : cases) {
    write_json(dir_.file("tokenizer.json"), with_pre(pre));
    auto f = open_ok();
    ASSERT_TRUE(f);
    EXPECT_EQ(f->get_string("tokenizer.ggml.pre").value(), expected) << pre.dump();
    if (pre.contains("pretokenizers")) {
      EXPECT_EQ(f->get_string_array("bitlight.tokenizer.pre_regexes").value(),
                (std::vector<std::string>{pre["pretokenizers"][0]["pattern"]["Regex"].get<std::string>()}));
    }
  }
}

TEST_F(HfFolderTest, AddBosFromPostProcessorAndIdsFromConfig) {
  write_folder(llama_config(), llama_tensors(1, false, false));
  json t = bpe_tokenizer();
  t["post_processor"] = {{"type", "Sequence"},
                         {"processors",
                          {{{"type", "ByteLevel"}},
                           {{"type", "TemplateProcessing"},
                            {"single", {{{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}},
                                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}}}}}};
  write_json(dir_.file("tokenizer.json"), t);
  write_json(dir_.file("tokenizer_config.json"), {{"bos_token", "<|endoftext|>"}});
  json config = llama_config();
  config["eos_token_id"] = {2, 3};  // a list: the first is taken
  write_json(dir_.file("config.json"), config);
  test::write_bytes(dir_.file("chat_template.jinja"), "{{ bos_token }}");
  auto f = open_ok();
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->get_bool("tokenizer.ggml.add_bos_token").value());
  EXPECT_EQ(f->get_int("tokenizer.ggml.bos_token_id").value(), 5);
  EXPECT_EQ(f->get_int("tokenizer.ggml.eos_token_id").value(), 2);
  EXPECT_EQ(f->get_string("tokenizer.chat_template").value(), "{{ bos_token }}");
}

TEST_F(HfFolderTest, SentencePieceStyleBpe) {
  write_folder(llama_config(), llama_tensors(1, false, false));
  json t = {{"added_tokens", {{{"id", 0}, {"content", "<unk>"}, {"special", true}}, {{"id", 1}, {"content", "<s>"}, {"special", true}}}},
            {"normalizer",
             {{"type", "Sequence"},
              {"normalizers", {{{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}}, {{"type", "Replace"}}}}}},
            {"model",
             {{"type", "BPE"},
              {"byte_fallback", true},
              {"unk_token", "<unk>"},
              {"vocab", {{"<unk>", 0}, {"<s>", 1}, {"<0x0A>", 2}, {"\xe2\x96\x81", 3}, {"t", 4}, {"\xe2\x96\x81t", 5}, {"h", 6}, {"\xe2\x96\x81th", 7}}},
              {"merges", {"\xe2\x96\x81 t", "\xe2\x96\x81t h"}}}}};
  write_json(dir_.file("tokenizer.json"), t);
  write_json(dir_.file("tokenizer_config.json"), {{"bos_token", "<s>"}, {"unk_token", "<unk>"}, {"add_bos_token", true}});
  auto f = open_ok();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->get_string("tokenizer.ggml.model").value(), "llama");
  EXPECT_FALSE(f->has("tokenizer.ggml.merges"));
  EXPECT_EQ(f->get_int_array("tokenizer.ggml.token_type").value(), (std::vector<int64_t>{3, 3, 6, 1, 1, 1, 1, 1}));
  EXPECT_EQ(f->get_float_array("tokenizer.ggml.scores").value(), (std::vector<float>{0, 0, 0, 0, 0, -0.0f, 0, -1}));
  EXPECT_TRUE(f->get_bool("tokenizer.ggml.add_space_prefix").value());
  EXPECT_TRUE(f->get_bool("tokenizer.ggml.add_bos_token").value());
  EXPECT_EQ(f->get_int("tokenizer.ggml.bos_token_id").value(), 1);
  EXPECT_EQ(f->get_int("tokenizer.ggml.unknown_token_id").value(), 0);
}

TEST_F(HfFolderTest, Qwen2WithBiasesAndLlama3RopeScaling) {
  json config = llama_config();
  config["architectures"] = {"Qwen2ForCausalLM"};
  config["head_dim"] = 16;
  config["rope_theta"] = 500000.0;
  config["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  write_folder(config, llama_tensors(1, true, false), false);
  auto f = open_ok();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->get_string("general.architecture").value(), "qwen2");
  EXPECT_EQ(f->get_int("qwen2.block_count").value(), 2);
  EXPECT_EQ(f->get_int("qwen2.attention.key_length").value(), 16);
  EXPECT_EQ(f->get_string("qwen2.rope.scaling.type").value(), "llama3");
  EXPECT_EQ(f->get_float("qwen2.rope.scaling.factor").value(), 8.0);
  EXPECT_EQ(f->get_int("qwen2.rope.scaling.original_context_length").value(), 64);
  ASSERT_NE(f->find_tensor("blk.0.attn_q.bias"), nullptr);
  EXPECT_EQ(f->find_tensor("blk.0.attn_k.bias")->ne, (std::vector<int64_t>{32}));
  EXPECT_FALSE(f->has("tokenizer.ggml.tokens"));  // no tokenizer.json in this folder
  // llama.cpp's formula, evaluated independently here: wavelen = 2*pi*theta^(i/d);
  // high-frequency dims keep 1, low-frequency ones get `factor`, the band between is smoothed.
  auto factors = f->get_float_array("bitlight.rope_freqs").value();
  ASSERT_EQ(factors.size(), 8u);
  for (size_t j = 0; j < factors.size(); ++j) {
    double wavelen = 2 * M_PI * std::pow(500000.0, 2.0 * static_cast<double>(j) / 16.0);
    double expected;
    if (wavelen < 64.0 / 4.0)
      expected = 1.0;
    else if (wavelen > 64.0 / 1.0)
      expected = 8.0;
    else {
      double smooth = (64.0 / wavelen - 1.0) / (4.0 - 1.0);
      expected = 1.0 / ((1 - smooth) / 8.0 + smooth);
    }
    EXPECT_NEAR(factors[j], expected, 1e-4 * expected) << j;
  }
  EXPECT_EQ(factors[0], 1.0f);
  EXPECT_EQ(factors[7], 8.0f);
}

TEST_F(HfFolderTest, ShardedCheckpoint) {
  write_json(dir_.file("config.json"), llama_config());
  auto all = llama_tensors(1, false, false);
  std::vector<StTensor> first(all.begin(), all.begin() + 4), second(all.begin() + 4, all.end());
  write_safetensors(dir_.file("model-00001-of-00002.safetensors"), first);
  write_safetensors(dir_.file("model-00002-of-00002.safetensors"), second);
  json map = json::object();
  for (const auto& t : first) map[t.name] = "model-00001-of-00002.safetensors";
  for (const auto& t : second) map[t.name] = "model-00002-of-00002.safetensors";
  write_json(dir_.file("model.safetensors.index.json"), {{"metadata", {{"total_size", 0}}}, {"weight_map", map}});
  {
    auto f = open_ok();
    ASSERT_TRUE(f);
    EXPECT_EQ(f->tensors().size(), all.size() - 1);  // inv_freq dropped
    EXPECT_NE(f->find_tensor("blk.0.ffn_down.weight"), nullptr);
    EXPECT_NE(f->find_tensor("token_embd.weight"), nullptr);
  }
  // The index naming a tensor in the wrong shard, or a shard outside the folder, is an error.
  map["model.norm.weight"] = "model-00002-of-00002.safetensors";
  write_json(dir_.file("model.safetensors.index.json"), {{"weight_map", map}});
  EXPECT_NE(open_error().message().find("'model.norm.weight' is listed in shard"), std::string::npos);
  map["model.norm.weight"] = "../model-00001-of-00002.safetensors";
  write_json(dir_.file("model.safetensors.index.json"), {{"weight_map", map}});
  EXPECT_NE(open_error().message().find("not a plain file name"), std::string::npos);
  map["model.norm.weight"] = "model-00001-of-00002.safetensors";
  map["model.extra.weight"] = "model-00001-of-00002.safetensors";
  write_json(dir_.file("model.safetensors.index.json"), {{"weight_map", map}});
  EXPECT_NE(open_error().message().find("'model.extra.weight'"), std::string::npos);
}

TEST_F(HfFolderTest, ErrorsNameTheProblem) {
  // No config.json.
  Status s = open_error();
  EXPECT_EQ(s.code(), StatusCode::not_found);
  EXPECT_NE(s.message().find("config.json"), std::string::npos);
  // Unsupported architecture.
  json config = llama_config();
  config["architectures"] = {"GemmaForCausalLM"};
  write_folder(config, llama_tensors(1, false, false));
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::unsupported);
  EXPECT_NE(s.message().find("GemmaForCausalLM"), std::string::npos);
  // Missing / mistyped hyper-parameters.
  config = llama_config();
  config.erase("hidden_size");
  write_json(dir_.file("config.json"), config);
  EXPECT_NE(open_error().message().find("missing 'hidden_size'"), std::string::npos);
  config = llama_config();
  config["num_attention_heads"] = "four";
  write_json(dir_.file("config.json"), config);
  EXPECT_NE(open_error().message().find("'num_attention_heads' should be a non-negative integer"), std::string::npos);
  config = llama_config();
  config["num_key_value_heads"] = 3;
  write_json(dir_.file("config.json"), config);
  EXPECT_NE(open_error().message().find("not a multiple of num_key_value_heads (3)"), std::string::npos);
  // Broken JSON and a broken safetensors file.
  test::write_bytes(dir_.file("config.json"), "{\"hidden_size\": ");
  EXPECT_NE(open_error().message().find("not valid JSON"), std::string::npos);
  write_json(dir_.file("config.json"), llama_config());
  test::write_bytes(dir_.file("model.safetensors"), "short");
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::invalid_file);
  EXPECT_NE(s.message().find("model.safetensors"), std::string::npos);
  // A safetensors file given instead of its folder.
  auto direct = ModelFile::open(dir_.file("model.safetensors"));
  ASSERT_FALSE(direct.ok());
  EXPECT_EQ(direct.status().code(), StatusCode::invalid_argument);
  EXPECT_NE(direct.status().message().find("open the Hugging Face folder"), std::string::npos);
  // No weights at all.
  std::filesystem::remove(dir_.file("model.safetensors"));
  EXPECT_NE(open_error().message().find("neither model.safetensors nor model.safetensors.index.json"), std::string::npos);
  // Tokenizer with an id past the vocabulary, and a Unigram tokenizer.
  write_safetensors(dir_.file("model.safetensors"), llama_tensors(1, false, false));
  json t = bpe_tokenizer();
  t["model"]["vocab"]["zz"] = 1000000;
  write_json(dir_.file("tokenizer.json"), t);
  EXPECT_NE(open_error().message().find("token 'zz' has id 1000000, past the vocabulary size"), std::string::npos);
  t = bpe_tokenizer();
  t["model"]["vocab"]["zz"] = 0;
  write_json(dir_.file("tokenizer.json"), t);
  EXPECT_NE(open_error().message().find("share id 0"), std::string::npos);
  config = llama_config();
  config["vocab_size"] = 1u << 20;
  write_json(dir_.file("config.json"), config);
  write_json(dir_.file("tokenizer.json"), bpe_tokenizer());
  EXPECT_NE(open_error().message().find("vocab_size 1048576 is far above the 7 tokens"), std::string::npos);
  write_json(dir_.file("config.json"), llama_config());
  t = bpe_tokenizer();
  t["model"] = {{"type", "Unigram"}, {"vocab", json::array()}};
  write_json(dir_.file("tokenizer.json"), t);
  s = open_error();
  EXPECT_EQ(s.code(), StatusCode::unsupported);
  EXPECT_NE(s.message().find("'Unigram'"), std::string::npos);
}

// Optional tokenizer settings of the wrong JSON type fall back to their defaults (nlohmann's
// json::value would throw on them).
TEST_F(HfFolderTest, WrongTypesInOptionalTokenizerFieldsDoNotThrow) {
  write_folder(llama_config(), llama_tensors(1, false, false));
  json t = bpe_tokenizer();
  t["pre_tokenizer"] = {{"type", 5}, {"pretokenizers", "x"}};
  t["added_tokens"][0]["special"] = "yes";
  t["model"]["byte_fallback"] = "no";
  t["post_processor"] = {{"type", {1, 2}}, {"single", 3}};
  t["normalizer"] = {{"type", nullptr}};
  write_json(dir_.file("tokenizer.json"), t);
  write_json(dir_.file("tokenizer_config.json"), {{"chat_template", {{{"name", 7}, {"template", "T"}}}}, {"add_bos_token", "maybe"}});
  auto f = open_ok();
  ASSERT_TRUE(f);
  EXPECT_EQ(f->get_string("tokenizer.ggml.model").value(), "gpt2");
  EXPECT_EQ(f->get_string("tokenizer.ggml.pre").value(), "gpt2");
  EXPECT_EQ(f->get_int_array("tokenizer.ggml.token_type").value()[5], 4);  // "special": "yes" is not true
  EXPECT_EQ(f->get_string("tokenizer.chat_template").value(), "T");
  EXPECT_FALSE(f->get_bool("tokenizer.ggml.add_bos_token").value());
}

TEST(HfTensorNames, Mapping) {
  EXPECT_EQ(gguf_tensor_name("model.embed_tokens.weight"), "token_embd.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.17.self_attn.o_proj.weight"), "blk.17.attn_output.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.3.self_attn.v_proj.bias"), "blk.3.attn_v.bias");
  EXPECT_EQ(gguf_tensor_name("model.layers.0.mlp.down_proj.weight"), "blk.0.ffn_down.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.0.post_attention_layernorm.weight"), "blk.0.ffn_norm.weight");
  EXPECT_EQ(gguf_tensor_name("lm_head.weight"), "output.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.0.self_attn.rotary_emb.inv_freq"), std::nullopt);
  EXPECT_EQ(gguf_tensor_name("model.layers.x.mlp.up_proj.weight"), "model.layers.x.mlp.up_proj.weight");
  EXPECT_EQ(gguf_tensor_name("model.layers.1.self_attn.q_proj_extra.weight"), "model.layers.1.self_attn.q_proj_extra.weight");
  EXPECT_EQ(gguf_tensor_name("vision.something"), "vision.something");
}

}  // namespace
}  // namespace bl
