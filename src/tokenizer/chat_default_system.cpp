// default_system_prompt: finds the system turn a template writes by itself. In SmolLM2's
// template that is the Jinja string literal
//   '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'
// (the \n a real newline or the escape "\n", depending on how the template was stored).
#include <string_view>

#include "tokenizer/chat_template.h"

namespace bl {

namespace {

// The text of a Jinja string literal body: \n, \t, \\, \' and \" escapes resolved.
std::string unescape_literal(std::string_view body) {
  std::string out;
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] != '\\' || i + 1 == body.size()) {
      out += body[i];
      continue;
    }
    const char next = body[++i];
    switch (next) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      default:
        out += next;
        break;  // \\ \' \" and anything else: the character itself
    }
  }
  return out;
}

// True when `body` contains `quote` not preceded by a backslash: the literal ended inside it,
// so what follows is template code (e.g. "' + messages[0]['content'] + '"), not constant text.
bool leaves_literal(std::string_view body, char quote) {
  for (size_t i = 0; i < body.size(); ++i) {
    if (body[i] == '\\') {
      ++i;
    } else if (body[i] == quote) {
      return true;
    }
  }
  return false;
}

std::string chatml_default_system(std::string_view text) {
  constexpr std::string_view kHeader = "<|im_start|>system";
  constexpr std::string_view kEnd = "<|im_end|>";
  for (size_t pos = text.find(kHeader); pos != std::string_view::npos; pos = text.find(kHeader, pos + 1)) {
    const char quote = pos > 0 ? text[pos - 1] : '\0';
    if (quote != '\'' && quote != '"') continue;  // not the start of a string literal
    size_t body = pos + kHeader.size();
    if (text.substr(body).starts_with("\n")) {
      body += 1;
    } else if (text.substr(body).starts_with("\\n")) {
      body += 2;
    } else {
      continue;
    }
    const size_t end = text.find(kEnd, body);
    if (end == std::string_view::npos) break;
    const std::string_view content = text.substr(body, end - body);
    if (content.empty() || leaves_literal(content, quote)) continue;
    return unescape_literal(content);
  }
  return "";
}

}  // namespace

std::string default_system_prompt(ChatStyle style, const std::string& template_text) {
  return style == ChatStyle::chatml ? chatml_default_system(template_text) : std::string();
}

}  // namespace bl
