// Chat templates: the model's own template (tokenizer.chat_template) recognised by its text
// and rendered by a built-in formatter for its style. Jinja is not interpreted.
//
// BOS: the rendered text never starts with the BOS string. Encode it with
// EncodeOptions{.add_bos = true, .parse_special = true}: the tokenizer prepends the BOS id when
// the model asks for it (tokenizer.ggml.add_bos_token), as the template's leading
// {{ bos_token }} would. Markers inside the conversation (ChatML's <|im_start|>, Llama 2's
// "</s><s>" between turns) are in the text and need parse_special to become their ids.
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace bl {

class ModelFile;

struct ChatMessage {
  std::string role;  // "system", "user", "assistant"
  std::string content;
};

// chatml: SmolLM2, Qwen2; llama3: Llama 3.x; llama2: Llama 2 chat (<<SYS>>);
// gemma: Gemma 1-3; mistral: Mistral Instruct v0.1/v0.2 ([INST] without <<SYS>>).
enum class ChatStyle { chatml, llama3, llama2, gemma, mistral };

const char* chat_style_name(ChatStyle style);

// Detects the style from the template text; an error names the template's first line when no
// style matches.
Expected<ChatStyle> detect_chat_style(const std::string& template_text);
// The style of tokenizer.chat_template. Models without a template default to chatml only when
// `allow_default`; otherwise that is a not_found error.
Expected<ChatStyle> chat_style_of(const ModelFile& file, bool allow_default = false);

// The system prompt a template writes by itself when the conversation does not start with a
// system message, read from the template text ("" when it writes none). SmolLM2's template
// gives "You are a helpful AI assistant named SmolLM, trained by Hugging Face". Only constant
// ChatML system turns are recognised (not dates or other computed text).
std::string default_system_prompt(ChatStyle style, const std::string& template_text);

// The prompt text for `messages`, ending with the assistant header when add_generation_prompt
// (Llama 2 and Mistral have none: their prompt ends with " [/INST]"). When the conversation is
// not empty and does not start with a system message, `default_system` (if not empty) is
// written as one, as SmolLM2's template does. Styles whose templates take no system turn
// (gemma, mistral) put the system text in front of the first user message, separated by a
// blank line.
std::string apply_chat_template(ChatStyle style, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const std::string& default_system = "");

// A model's template: its style and default system prompt, read once.
struct ChatTemplate {
  ChatStyle style = ChatStyle::chatml;
  std::string default_system;

  static Expected<ChatTemplate> from_text(const std::string& template_text);
  static Expected<ChatTemplate> from_model_file(const ModelFile& file, bool allow_default = false);

  std::string apply(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
    return apply_chat_template(style, messages, add_generation_prompt, default_system);
  }
};

}  // namespace bl
