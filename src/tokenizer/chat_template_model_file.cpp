// The chat template of a model file (tokenizer.chat_template); in a file of its own so the
// renderers do not link the model-file reader.
#include "io/model_file.h"
#include "tokenizer/chat_template.h"

namespace bl {

namespace {

constexpr const char* kTemplateKey = "tokenizer.chat_template";

// The template text; "" when the file has none and `allow_default`.
Expected<std::string> template_text_of(const ModelFile& file, bool allow_default) {
  if (!file.has(kTemplateKey)) {
    if (allow_default) return std::string();
    return not_found(file.path() + ": no " + kTemplateKey + " in the model file (a chat needs one)");
  }
  auto text = file.get_string(kTemplateKey);
  if (!text.ok()) return text.status().with_context(file.path());
  return text;
}

}  // namespace

Expected<ChatStyle> chat_style_of(const ModelFile& file, bool allow_default) {
  BL_ASSIGN_OR_RETURN(const std::string text, template_text_of(file, allow_default));
  if (text.empty() && allow_default) return ChatStyle::chatml;
  auto style = detect_chat_style(text);
  if (!style.ok()) return style.status().with_context(file.path());
  return style;
}

Expected<ChatTemplate> ChatTemplate::from_model_file(const ModelFile& file, bool allow_default) {
  BL_ASSIGN_OR_RETURN(const std::string text, template_text_of(file, allow_default));
  if (text.empty() && allow_default) return ChatTemplate{};
  auto tmpl = from_text(text);
  if (!tmpl.ok()) return tmpl.status().with_context(file.path());
  return tmpl;
}

}  // namespace bl
