// Reading the real SmolLM2 Q4_1 GGUF, and the typed metadata getters.
#include <gtest/gtest.h>

#include <cstring>

#include "io/gguf_reader.h"
#include "io/gguf_writer.h"
#include "io/model_file.h"
#include "gguf_test_util.h"

namespace bl {
namespace {

TEST(GgufReaderRealFile, ReadsSmolLM2) {
  std::string path = test::real_model_path();
  if (path.empty()) GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf not found (set BITLIGHT_TEST_MODEL)";
  auto file = ModelFile::open(path);
  ASSERT_TRUE(file.ok()) << file.status().message();
  const ModelFile& m = **file;
  EXPECT_EQ(m.metadata().size(), 33u);  // gguf-py counts 36 fields: its 3 extra are the header
  EXPECT_EQ(m.tensors().size(), 272u);
  EXPECT_EQ(m.get_string("general.architecture").value(), "llama");
  EXPECT_EQ(m.get_int("llama.block_count").value(), 30);
  EXPECT_EQ(m.get_int("llama.embedding_length").value(), 576);
  EXPECT_EQ(m.get_int("llama.attention.head_count_kv").value(), 3);
  EXPECT_FLOAT_EQ(static_cast<float>(m.get_float("llama.rope.freq_base").value()), 100000.0f);
  EXPECT_FLOAT_EQ(static_cast<float>(m.get_float("llama.attention.layer_norm_rms_epsilon").value()), 1e-5f);
  EXPECT_EQ(m.get_string("tokenizer.ggml.pre").value(), "smollm");
  EXPECT_FALSE(m.get_bool("tokenizer.ggml.add_bos_token").value());
  auto tokens = m.get_string_array("tokenizer.ggml.tokens");
  ASSERT_TRUE(tokens.ok());
  EXPECT_EQ(tokens->size(), 49152u);
  EXPECT_EQ(m.get_int_array("tokenizer.ggml.token_type")->size(), 49152u);
  EXPECT_EQ(m.get_string_array("tokenizer.ggml.merges")->size(), 48900u);
  EXPECT_EQ(m.get_string_array("general.languages").value(), std::vector<std::string>{"en"});

  // Offsets and sizes as gguf-py reports them (data section starts at 1785664).
  auto* gg = dynamic_cast<const GgufFile*>(&m);
  ASSERT_NE(gg, nullptr);
  EXPECT_EQ(gg->version(), 3u);
  EXPECT_EQ(gg->data_offset(), 1785664u);
  const TensorInfo* embd = m.find_tensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->dtype, DType::Q8_0);
  EXPECT_EQ(embd->ne, (std::vector<int64_t>{576, 49152}));
  EXPECT_EQ(embd->offset, 0u);
  EXPECT_EQ(embd->bytes, 30081024u);
  const TensorInfo* norm = m.find_tensor("blk.0.attn_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->dtype, DType::F32);
  EXPECT_EQ(norm->offset + gg->data_offset(), 31866688u);
  const TensorInfo* down = m.find_tensor("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->dtype, DType::Q4_1);
  EXPECT_EQ(down->ne, (std::vector<int64_t>{1536, 576}));
  EXPECT_EQ(down->bytes, 552960u);
  Tensor v = down->view();
  EXPECT_EQ(v.ne, (std::array<int64_t, 4>{1536, 576, 1, 1}));
  EXPECT_EQ(v.bytes(), down->bytes);
  // Values as gguf-py reads them: the first elements exactly, the sum to f32 rounding.
  Tensor nv = norm->view();
  ASSERT_EQ(nv.elements(), 576);
  EXPECT_EQ(nv.as<float>()[0], 0.01397705078125f);
  EXPECT_EQ(nv.as<float>()[3], -0.0302734375f);
  double norm_sum = 0;
  for (int64_t i = 0; i < nv.elements(); ++i) norm_sum += nv.as<float>()[i];
  EXPECT_NEAR(norm_sum, 0.6129436492919922, 1e-9);
  uint64_t sum = 0;
  for (const TensorInfo& t : m.tensors()) sum += t.bytes;
  EXPECT_EQ(m.total_tensor_bytes(), sum);
}

// A small file with one key of each kind, read back through the getters.
class GgufGetters : public ::testing::Test {
 protected:
  void SetUp() override {
    GgufWriter w;
    w.set_u8("k.u8", 200);
    w.set_i16("k.i16", -300);
    w.set_u32("k.u32", 4000000000u);
    w.set_u64("k.u64.big", 18446744073709551615ull);
    w.set_i64("k.i64", -5);
    w.set_f32("k.f32", 0.5f);
    w.set_f64("k.f64", 1e-300);
    w.set_bool("k.bool", true);
    w.set_string("k.str", "hello");
    w.set_int_array("k.ints", GgufType::i32, {1, -2, 3});
    w.set_int_array("k.u64s.big", GgufType::u64, {});
    w.set("k.u64s.big", [] {
      GgufValue v;
      v.type = GgufType::array;
      v.elem_type = GgufType::u64;
      v.value = std::vector<uint64_t>{1, 18446744073709551615ull};
      return v;
    }());
    w.set_float_array("k.floats", GgufType::f32, {0.25, -1.5});
    w.set_string_array("k.strs", {"a", "", "c"});
    w.set_bool_array("k.bools", {true, false});
    ASSERT_TRUE(w.write(dir_.file("g.gguf")).ok());
    auto f = ModelFile::open(dir_.file("g.gguf"));
    ASSERT_TRUE(f.ok()) << f.status().message();
    file_ = std::move(*f);
  }
  test::TempDir dir_;
  std::unique_ptr<ModelFile> file_;
};

TEST_F(GgufGetters, IntegersOfEveryWidth) {
  EXPECT_EQ(file_->get_int("k.u8").value(), 200);
  EXPECT_EQ(file_->get_int("k.i16").value(), -300);
  EXPECT_EQ(file_->get_int("k.u32").value(), 4000000000ll);
  EXPECT_EQ(file_->get_int("k.i64").value(), -5);
  auto big = file_->get_int("k.u64.big");
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), StatusCode::invalid_file);
  EXPECT_NE(big.status().message().find("k.u64.big"), std::string::npos);
  EXPECT_EQ(std::get<uint64_t>(file_->find("k.u64.big")->value), 18446744073709551615ull);
}

TEST_F(GgufGetters, FloatsAcceptIntegers) {
  EXPECT_DOUBLE_EQ(file_->get_float("k.f32").value(), 0.5);
  EXPECT_DOUBLE_EQ(file_->get_float("k.f64").value(), 1e-300);
  EXPECT_DOUBLE_EQ(file_->get_float("k.u8").value(), 200.0);
  EXPECT_FALSE(file_->get_int("k.f32").ok());
}

TEST_F(GgufGetters, MissingKeyIsNotFoundAndNamesIt) {
  auto r = file_->get_int("no.such.key");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::not_found);
  EXPECT_NE(r.status().message().find("no.such.key"), std::string::npos);
  EXPECT_EQ(file_->get_int_or("no.such.key", 7).value(), 7);
  EXPECT_DOUBLE_EQ(file_->get_float_or("no.such.key", 2.5).value(), 2.5);
  EXPECT_TRUE(file_->get_bool_or("no.such.key", true).value());
  EXPECT_EQ(file_->get_string_or("no.such.key", "x").value(), "x");
  EXPECT_FALSE(file_->has("no.such.key"));
  EXPECT_TRUE(file_->has("k.str"));
}

TEST_F(GgufGetters, WrongTypeNamesKeyAndBothTypes) {
  auto r = file_->get_string("k.u32");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::invalid_file);
  EXPECT_NE(r.status().message().find("'k.u32' is u32, expected string"), std::string::npos) << r.status().message();
  auto b = file_->get_bool("k.strs");
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("array of string"), std::string::npos);
  // The _or forms still fail on a present key of the wrong type.
  EXPECT_FALSE(file_->get_int_or("k.str", 1).ok());
  EXPECT_FALSE(file_->get_int_array("k.floats").ok());
  EXPECT_FALSE(file_->get_string_array("k.ints").ok());
}

TEST_F(GgufGetters, Arrays) {
  EXPECT_EQ(file_->get_int_array("k.ints").value(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(file_->get_float_array("k.floats").value(), (std::vector<float>{0.25f, -1.5f}));
  EXPECT_EQ(file_->get_float_array("k.ints").value(), (std::vector<float>{1.f, -2.f, 3.f}));
  EXPECT_EQ(file_->get_string_array("k.strs").value(), (std::vector<std::string>{"a", "", "c"}));
  EXPECT_EQ(std::get<std::vector<bool>>(file_->find("k.bools")->value), (std::vector<bool>{true, false}));
  auto big = file_->get_int_array("k.u64s.big");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("k.u64s.big"), std::string::npos);
  EXPECT_EQ(std::get<std::vector<uint64_t>>(file_->find("k.u64s.big")->value),
            (std::vector<uint64_t>{1, 18446744073709551615ull}));
}

TEST(GgufOpen, MissingFileIsNotFound) {
  auto r = ModelFile::open("/nonexistent/dir/model.gguf");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::not_found);
  EXPECT_NE(r.status().message().find("/nonexistent/dir/model.gguf"), std::string::npos);
}

}  // namespace
}  // namespace bl
