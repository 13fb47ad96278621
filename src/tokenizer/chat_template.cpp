// Built-in renderers for the chat template styles, each written after the reference Jinja
// template of its family (quoted in the comment above each renderer, BOS left out: see
// chat_template.h).
#include "tokenizer/chat_template.h"

#include <algorithm>
#include <string_view>

namespace bl {

namespace {

// Python's str.strip() / Jinja's |trim on ASCII whitespace.
std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\v\f";
  const size_t begin = s.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  const size_t end = s.find_last_not_of(kSpace);
  return s.substr(begin, end - begin + 1);
}

// The conversation with the default system message in front when it has none.
std::vector<ChatMessage> with_default_system(const std::vector<ChatMessage>& messages,
                                             const std::string& default_system) {
  if (messages.empty() || default_system.empty() || messages[0].role == "system") return messages;
  std::vector<ChatMessage> out;
  out.reserve(messages.size() + 1);
  out.push_back({"system", default_system});
  out.insert(out.end(), messages.begin(), messages.end());
  return out;
}

// For templates without a system turn: the system text goes in front of the first user
// message, separated by a blank line (Gemma 3's first_user_prefix).
std::vector<ChatMessage> fold_system_into_first_user(const std::vector<ChatMessage>& messages) {
  if (messages.empty() || messages[0].role != "system") return messages;
  std::vector<ChatMessage> out(messages.begin() + 1, messages.end());
  for (ChatMessage& m : out) {
    if (m.role == "user") {
      m.content = messages[0].content + "\n\n" + m.content;
      return out;
    }
  }
  out.insert(out.begin(), ChatMessage{"user", messages[0].content});
  return out;
}

// {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}} ...
// {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
std::string render_chatml(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  for (const ChatMessage& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

// '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim
// + '<|eot_id|>' ... {{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
std::string render_llama3(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  for (const ChatMessage& m : messages) {
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n";
    out += trim(m.content);
    out += "<|eot_id|>";
  }
  if (add_generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

// Meta's Llama 2 chat template: a leading system message becomes
// '<<SYS>>\n' + system + '\n<</SYS>>\n\n' in front of the first user message; user turns are
// bos_token + '[INST] ' + content.strip() + ' [/INST]', assistant turns
// ' ' + content.strip() + ' ' + eos_token. No generation prompt.
std::string render_llama2(const std::vector<ChatMessage>& messages) {
  std::string out;
  size_t first = 0;
  std::string system;
  if (!messages.empty() && messages[0].role == "system") {
    system = messages[0].content;
    first = 1;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    std::string content = m.content;
    if (i == first && first == 1) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
    if (m.role == "assistant") {
      out += " ";
      out += trim(content);
      out += " </s>";
    } else {
      if (i != first) out += "<s>";  // the first BOS is the tokenizer's (chat_template.h)
      out += "[INST] ";
      out += trim(content);
      out += " [/INST]";
    }
  }
  return out;
}

// Mistral Instruct v0.1/v0.2: {{ bos_token }} then user turns '[INST] ' + content + ' [/INST]'
// and assistant turns content + eos_token. No generation prompt.
std::string render_mistral(const std::vector<ChatMessage>& messages) {
  std::string out;
  for (const ChatMessage& m : fold_system_into_first_user(messages)) {
    if (m.role == "assistant") {
      out += m.content + "</s>";
    } else {
      out += "[INST] " + m.content + " [/INST]";
    }
  }
  return out;
}

// '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first) + content | trim +
// '<end_of_turn>\n', role "assistant" written as "model";
// {{'<start_of_turn>model\n'}} as generation prompt.
std::string render_gemma(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  std::string out;
  std::string prefix;  // the system text, in front of the first turn's content
  size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    prefix = messages[0].content + "\n\n";
    first = 1;
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    out += "<start_of_turn>" + (m.role == "assistant" ? std::string("model") : m.role) + "\n";
    if (i == first) out += prefix;
    out += trim(m.content);
    out += "<end_of_turn>\n";
  }
  if (add_generation_prompt) out += "<start_of_turn>model\n";
  return out;
}

}  // namespace

const char* chat_style_name(ChatStyle style) {
  switch (style) {
    case ChatStyle::chatml:
      return "chatml";
    case ChatStyle::llama3:
      return "llama3";
    case ChatStyle::llama2:
      return "llama2";
    case ChatStyle::gemma:
      return "gemma";
    case ChatStyle::mistral:
      return "mistral";
  }
  return "unknown";
}

Expected<ChatStyle> detect_chat_style(const std::string& template_text) {
  if (template_text.find("<|im_start|>") != std::string::npos) return ChatStyle::chatml;
  if (template_text.find("<|start_header_id|>") != std::string::npos) return ChatStyle::llama3;
  if (template_text.find("<start_of_turn>") != std::string::npos) return ChatStyle::gemma;
  if (template_text.find("[INST]") != std::string::npos) {
    return template_text.find("<<SYS>>") != std::string::npos ? ChatStyle::llama2 : ChatStyle::mistral;
  }
  const std::string first_line = template_text.substr(0, std::min(template_text.find('\n'), size_t{120}));
  return unsupported(
      "chat template not recognised (known: ChatML <|im_start|>, Llama 3 <|start_header_id|>, "
      "Gemma <start_of_turn>, Llama 2 / Mistral [INST]); it begins: " +
      (first_line.empty() ? std::string("(empty)") : first_line));
}

std::string apply_chat_template(ChatStyle style, const std::vector<ChatMessage>& messages,
                                bool add_generation_prompt, const std::string& default_system) {
  const std::vector<ChatMessage> conversation = with_default_system(messages, default_system);
  switch (style) {
    case ChatStyle::chatml:
      return render_chatml(conversation, add_generation_prompt);
    case ChatStyle::llama3:
      return render_llama3(conversation, add_generation_prompt);
    case ChatStyle::llama2:
      return render_llama2(conversation);
    case ChatStyle::gemma:
      return render_gemma(conversation, add_generation_prompt);
    case ChatStyle::mistral:
      return render_mistral(conversation);
  }
  return {};
}

Expected<ChatTemplate> ChatTemplate::from_text(const std::string& template_text) {
  BL_ASSIGN_OR_RETURN(const ChatStyle style, detect_chat_style(template_text));
  return ChatTemplate{style, default_system_prompt(style, template_text)};
}

}  // namespace bl
