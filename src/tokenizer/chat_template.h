// Chat templates: the model's own template (tokenizer.chat_template) recognised by its text
// and rendered by a built-in formatter for its style. Jinja is not interpreted.
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

enum class ChatStyle { chatml, llama3, llama2, gemma, mistral };

// Detects the style from the template text; an error names the template's first line when no
// style matches. Models without a template default to chatml only when `allow_default`.
Expected<ChatStyle> detect_chat_style(const std::string& template_text);
Expected<ChatStyle> chat_style_of(const ModelFile& file);

// The prompt text for `messages`, ending with the assistant header when add_generation_prompt.
// Models whose template injects a default system prompt (SmolLM2) get it when the
// conversation has none, as their template does.
std::string apply_chat_template(ChatStyle style, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const std::string& default_system = "");

}  // namespace bl
