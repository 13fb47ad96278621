// Tokenizer::from_model_file and the chat template of a model file, on small GGUF files
// written here: what the tokenizer.ggml.* keys turn into, and errors that name the bad key.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>

#include "io/gguf_writer.h"
#include "io/model_file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace bl {
namespace {

// A byte-level vocabulary: the 256 byte tokens (id = byte), "ab" (256), "<|im_start|>" (257,
// control), "<|im_end|>" (258, control); merge "a b".
GgufWriter byte_level_gguf() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", "gpt2");
  w.set_string("tokenizer.ggml.pre", "smollm");
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(byte_level::encode(std::string(1, static_cast<char>(b))));
  tokens.insert(tokens.end(), {"ab", "<|im_start|>", "<|im_end|>"});
  std::vector<int64_t> types(tokens.size(), 1);
  types[257] = types[258] = 3;
  w.set_string_array("tokenizer.ggml.tokens", tokens);
  w.set_int_array("tokenizer.ggml.token_type", GgufType::i32, types);
  w.set_string_array("tokenizer.ggml.merges", {"a b"});
  w.set_u32("tokenizer.ggml.bos_token_id", 257);
  w.set_u32("tokenizer.ggml.eos_token_id", 258);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  return w;
}

class TokenizerModelFile : public ::testing::Test {
 protected:
  std::string write(const GgufWriter& w) {
    const std::string path =
        (std::filesystem::temp_directory_path() /
         ("bl_tokenizer_" + std::to_string(::getpid()) + "_" + std::to_string(n_++) + ".gguf"))
            .string();
    const Status s = w.write(path);
    EXPECT_TRUE(s.ok()) << s.message();
    paths_.push_back(path);
    return path;
  }
  std::unique_ptr<ModelFile> open(const GgufWriter& w) {
    auto file = ModelFile::open(write(w));
    EXPECT_TRUE(file.ok()) << file.status().message();
    return file.ok() ? std::move(file).value() : nullptr;
  }
  void TearDown() override {
    for (const std::string& p : paths_) std::filesystem::remove(p);
  }

 private:
  std::vector<std::string> paths_;
  int n_ = 0;
};

TEST_F(TokenizerModelFile, ByteLevelKeysBecomeATokenizer) {
  auto file = open(byte_level_gguf());
  ASSERT_TRUE(file);
  auto t = Tokenizer::from_model_file(*file);
  ASSERT_TRUE(t.ok()) << t.status().message();
  EXPECT_EQ((*t)->vocab_size(), 259);
  EXPECT_TRUE((*t)->adds_bos());
  EXPECT_EQ((*t)->encode("ab a1", {.parse_special = false}), (std::vector<TokenId>{257, 256, ' ', 'a', '1'}));
  EXPECT_EQ((*t)->encode("<|im_start|>ab<|im_end|>", {.add_bos = false, .parse_special = true}),
            (std::vector<TokenId>{257, 256, 258}));
  EXPECT_TRUE((*t)->is_end_of_generation(258));
}

TEST_F(TokenizerModelFile, SentencePieceKeysBecomeATokenizer) {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("tokenizer.ggml.model", "llama");
  // "▁hi" is reached through "▁h"; "!" only through its byte token.
  w.set_string_array("tokenizer.ggml.tokens",
                     {"<unk>", "<s>", "</s>", "\xE2\x96\x81hi", "<0x21>", "\xE2\x96\x81h"});
  w.set_float_array("tokenizer.ggml.scores", GgufType::f32, {0, 0, 0, -1, 0, -2});
  w.set_int_array("tokenizer.ggml.token_type", GgufType::i32, {2, 3, 3, 1, 6, 1});
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  auto file = open(w);
  ASSERT_TRUE(file);
  auto t = Tokenizer::from_model_file(*file);
  ASSERT_TRUE(t.ok()) << t.status().message();
  // add_bos_token and add_space_prefix absent: SentencePiece defaults (both on).
  EXPECT_EQ((*t)->encode("hi!"), (std::vector<TokenId>{1, 3, 4}));
  EXPECT_EQ((*t)->decode({3, 4}), "hi!");
}

TEST_F(TokenizerModelFile, ErrorsNameTheKey) {
  GgufWriter no_model = byte_level_gguf();
  no_model.remove("tokenizer.ggml.model");
  auto file = open(no_model);
  ASSERT_TRUE(file);
  auto t = Tokenizer::from_model_file(*file);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("tokenizer.ggml.model"), std::string::npos) << t.status().message();

  GgufWriter bad_bos = byte_level_gguf();
  bad_bos.set_u32("tokenizer.ggml.bos_token_id", 5000);
  file = open(bad_bos);
  ASSERT_TRUE(file);
  t = Tokenizer::from_model_file(*file);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("bos_token_id"), std::string::npos) << t.status().message();

  GgufWriter bad_type = byte_level_gguf();
  bad_type.set_u32("tokenizer.ggml.add_bos_token", 1);  // a number where a bool belongs
  file = open(bad_type);
  ASSERT_TRUE(file);
  t = Tokenizer::from_model_file(*file);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("add_bos_token"), std::string::npos) << t.status().message();
}

TEST_F(TokenizerModelFile, ChatTemplateKey) {
  GgufWriter w = byte_level_gguf();
  auto file = open(w);
  ASSERT_TRUE(file);
  auto missing = chat_style_of(*file);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::not_found);
  EXPECT_NE(missing.status().message().find("tokenizer.chat_template"), std::string::npos);
  auto fallback = chat_style_of(*file, /*allow_default=*/true);
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ(*fallback, ChatStyle::chatml);

  w.set_string("tokenizer.chat_template",
               "{{ bos_token }}{% for m in messages %}{{ '<start_of_turn>' + m['role'] }}{% endfor %}");
  file = open(w);
  ASSERT_TRUE(file);
  auto tmpl = ChatTemplate::from_model_file(*file);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().message();
  EXPECT_EQ(tmpl->style, ChatStyle::gemma);
  EXPECT_EQ(tmpl->default_system, "");
}

}  // namespace
}  // namespace bl
