// Chat templates: style detection from template text, default system prompt extraction, and
// rendering of each style as its reference Jinja template would (BOS left to the tokenizer).
#include <gtest/gtest.h>

#include "tokenizer/chat_template.h"

namespace bl {
namespace {

// SmolLM2-135M-Instruct's tokenizer.chat_template, verbatim (newlines inside the literals are
// real newline characters in the GGUF).
const std::string kSmolLM2Template =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif "
    "%}";

// Qwen2.5-style: the escape "\n" spelled out, and a first system literal that is not constant.
const std::string kQwenLikeTemplate =
    "{%- if tools %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You "
    "are a helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- endif %}";

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", " Hi "}, {"assistant", "Hello!"}, {"user", "Bye"}};

TEST(ChatTemplate, DetectsStyles) {
  EXPECT_EQ(*detect_chat_style(kSmolLM2Template), ChatStyle::chatml);
  EXPECT_EQ(*detect_chat_style("{{ '<|start_header_id|>' + message['role'] }}"), ChatStyle::llama3);
  EXPECT_EQ(*detect_chat_style("{{ '<start_of_turn>' + role }}"), ChatStyle::gemma);
  EXPECT_EQ(*detect_chat_style("{{ '[INST] <<SYS>>\\n' }}"), ChatStyle::llama2);
  EXPECT_EQ(*detect_chat_style("{{ '[INST] ' + message['content'] + ' [/INST]' }}"), ChatStyle::mistral);
  auto unknown = detect_chat_style("{% for m in messages %}\n<|user|>{{ m }}");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("{% for m in messages %}"), std::string::npos);
  EXPECT_FALSE(detect_chat_style("").ok());
}

TEST(ChatTemplate, ExtractsDefaultSystemPrompt) {
  EXPECT_EQ(default_system_prompt(ChatStyle::chatml, kSmolLM2Template),
            "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  EXPECT_EQ(default_system_prompt(ChatStyle::chatml, kQwenLikeTemplate),
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
  EXPECT_EQ(default_system_prompt(ChatStyle::chatml, "{{'<|im_start|>' + message['role'] + '\\n'}}"), "");
  auto t = ChatTemplate::from_text(kSmolLM2Template);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->style, ChatStyle::chatml);
  EXPECT_EQ(t->default_system, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
}

TEST(ChatTemplate, ChatmlSmolLM2InjectsDefaultSystemWhenNoneGiven) {
  auto t = ChatTemplate::from_text(kSmolLM2Template);
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(
      t->apply({{"user", "What is 2+2?"}}, /*add_generation_prompt=*/true),
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
      "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n");
  // A system message of the caller's replaces the default; content is not trimmed in ChatML.
  EXPECT_EQ(t->apply(kConversation, false),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi <|im_end|>\n"
            "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n");
  EXPECT_EQ(t->apply({}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplate, Llama3TrimsContentAndAddsHeader) {
  EXPECT_EQ(apply_chat_template(ChatStyle::llama3, kConversation, true),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(apply_chat_template(ChatStyle::llama3, {{"user", "x"}}, false),
            "<|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>");
}

TEST(ChatTemplate, Llama2WrapsSystemInFirstInstAndSeparatesTurns) {
  // strip() applies to the system block and the content as a whole: " Hi" keeps its space.
  EXPECT_EQ(apply_chat_template(ChatStyle::llama2, kConversation, true),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n Hi [/INST] Hello! </s><s>[INST] Bye [/INST]");
  EXPECT_EQ(apply_chat_template(ChatStyle::llama2, {{"user", "Hi"}}, true), "[INST] Hi [/INST]");
}

TEST(ChatTemplate, MistralFoldsSystemIntoFirstUserMessage) {
  EXPECT_EQ(apply_chat_template(ChatStyle::mistral, kConversation, true),
            "[INST] Be brief.\n\n Hi  [/INST]Hello!</s>[INST] Bye [/INST]");
}

TEST(ChatTemplate, GemmaUsesModelRoleAndGenerationPrompt) {
  EXPECT_EQ(apply_chat_template(ChatStyle::gemma, kConversation, true),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
            "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n");
  EXPECT_EQ(apply_chat_template(ChatStyle::gemma, {{"user", "x"}}, false),
            "<start_of_turn>user\nx<end_of_turn>\n");
}

}  // namespace
}  // namespace bl
