// The tokenizer and chat template of the real SmolLM2-135M-Instruct GGUF (models/, placed by
// scripts/fetch_model.sh; BITLIGHT_MODEL overrides). Expected ids come from Hugging Face
// tokenizers with SmolLM2's pre-tokenizer (tests/reference/test_tokenizer.py checks many more).
// Skipped when the model file is absent.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "io/model_file.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace bl {
namespace {

std::string model_path() {
  if (const char* env = std::getenv("BITLIGHT_MODEL")) return env;
  // tests/unit/<this file> -> <repo>/models/...
  return (std::filesystem::path(__FILE__).parent_path().parent_path().parent_path() / "models" /
          "SmolLM2-135M-Instruct.Q4_1.gguf")
      .string();
}

class SmolLM2Tokenizer : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string path = model_path();
    if (!std::filesystem::exists(path)) GTEST_SKIP() << path << " not found";
    auto file = ModelFile::open(path);
    ASSERT_TRUE(file.ok()) << file.status().message();
    file_ = std::move(file).value();
    auto tokenizer = Tokenizer::from_model_file(*file_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().message();
    tokenizer_ = std::move(tokenizer).value();
  }

  std::unique_ptr<ModelFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(SmolLM2Tokenizer, VocabularyAndSpecialIds) {
  EXPECT_EQ(tokenizer_->vocab_size(), 49152);
  EXPECT_EQ(tokenizer_->bos(), 1);
  EXPECT_EQ(tokenizer_->eos(), 2);
  EXPECT_FALSE(tokenizer_->adds_bos());  // tokenizer.ggml.add_bos_token = false
  EXPECT_EQ(tokenizer_->token_text(1), "<|im_start|>");
  EXPECT_TRUE(tokenizer_->is_end_of_generation(2));  // <|im_end|>
  EXPECT_TRUE(tokenizer_->is_end_of_generation(0));  // <|endoftext|>
  EXPECT_FALSE(tokenizer_->is_end_of_generation(1));
}

TEST_F(SmolLM2Tokenizer, MatchesHuggingFaceIds) {
  EXPECT_EQ(tokenizer_->encode("Hello world"), (std::vector<TokenId>{19556, 905}));
  EXPECT_EQ(tokenizer_->encode("Grüße, 世界! 😀 a  12\n\tdef f():"),
            (std::vector<TokenId>{27302, 7170, 34878, 85,  28, 216, 7906, 240, 178,  239, 230, 17,
                                  40303, 218,  253,   256, 33, 34,  198,  197, 1604, 275, 3734}));
  EXPECT_EQ(tokenizer_->encode("<|im_start|>user\nHi<|im_end|>", {.parse_special = true}),
            (std::vector<TokenId>{1, 4093, 198, 26843, 2}));
}

TEST_F(SmolLM2Tokenizer, DecodeRoundTrips) {
  const std::string text = "Code:\n    x = 42  # answer\nÄpfel 中文 👨‍👩‍👧 <|im_end|>";
  EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(text)), text);
  EXPECT_EQ(tokenizer_->decode(tokenizer_->encode(text, {.parse_special = true})), text);
}

TEST_F(SmolLM2Tokenizer, ChatTemplateFromTheFile) {
  auto tmpl = ChatTemplate::from_model_file(*file_);
  ASSERT_TRUE(tmpl.ok()) << tmpl.status().message();
  EXPECT_EQ(tmpl->style, ChatStyle::chatml);
  EXPECT_EQ(tmpl->default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const std::string prompt = tmpl->apply({{"user", "Hi"}}, /*add_generation_prompt=*/true);
  const std::vector<TokenId> ids =
      tokenizer_->encode(prompt, {.add_bos = tokenizer_->adds_bos(), .parse_special = true});
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1);  // <|im_start|> of the injected system turn
  EXPECT_EQ(tokenizer_->decode(ids), prompt);
  auto style = chat_style_of(*file_);
  ASSERT_TRUE(style.ok());
  EXPECT_EQ(*style, ChatStyle::chatml);
}

}  // namespace
}  // namespace bl
