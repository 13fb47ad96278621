// bitlight tokenize: the token ids of a text under a model's tokenizer, one "id<TAB>'piece'"
// line per token, or one JSON list with --ids.
#include <cstdio>
#include <memory>
#include <string>

#include "app/commands.h"
#include "app/file_io.h"
#include "io/model_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace bl::app {
namespace {

struct TokenizeOptions {
  std::string model_path = kDefaultModelPath;
  std::string text;
  std::string file;
  bool ids_only = false;
  bool no_bos = false;
  bool special = false;
};

// A token's bytes on one line: complete UTF-8 characters as they are, quotes, backslashes and
// control characters escaped, bytes of partial or invalid sequences as \xNN.
std::string printable_piece(std::string_view bytes) {
  std::string out;
  size_t pos = 0;
  while (pos < bytes.size()) {
    const std::string_view rest = bytes.substr(pos);
    const utf8::Seq seq = utf8::next_sequence(rest);
    const auto c = static_cast<unsigned char>(rest[0]);
    if (seq.kind != utf8::SeqKind::complete || c < 0x20 || c == 0x7F) {
      const size_t n = seq.kind == utf8::SeqKind::complete ? 1 : seq.length;
      for (size_t i = 0; i < n; ++i) {
        const auto b = static_cast<unsigned char>(rest[i]);
        char buf[8];
        if (b == '\n') {
          out += "\\n";
        } else if (b == '\t') {
          out += "\\t";
        } else if (b == '\r') {
          out += "\\r";
        } else {
          std::snprintf(buf, sizeof(buf), "\\x%02X", b);
          out += buf;
        }
      }
      pos += n;
      continue;
    }
    if (c == '\'' || c == '\\') out += '\\';
    out.append(rest.substr(0, seq.length));
    pos += seq.length;
  }
  return out;
}

Status tokenize(const TokenizeOptions& o) {
  std::string text = o.text;
  if (!o.file.empty()) {
    BL_ASSIGN_OR_RETURN(text, read_text_file(o.file));
  }
  std::unique_ptr<ModelFile> file;
  BL_ASSIGN_OR_RETURN(file, ModelFile::open(o.model_path));
  std::unique_ptr<Tokenizer> tokenizer;
  BL_ASSIGN_OR_RETURN(tokenizer, Tokenizer::from_model_file(*file));

  EncodeOptions options;
  options.add_bos = !o.no_bos;
  options.parse_special = o.special;
  const std::vector<TokenId> ids = tokenizer->encode(text, options);

  std::string out;
  if (o.ids_only) {
    out += '[';
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i > 0) out += ", ";
      out += std::to_string(ids[i]);
    }
    out += "]\n";
  } else {
    for (TokenId id : ids) {
      out += std::to_string(id) + "\t'" + printable_piece(tokenizer->token_bytes(id)) + "'\n";
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return Status::Ok();
}

}  // namespace

void add_tokenize_command(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<TokenizeOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "print the token ids of a text");
  cmd->add_option("-m,--model", o->model_path, "model file (.gguf) or Hugging Face folder")
      ->capture_default_str();
  auto* text = cmd->add_option("--text", o->text, "the text to tokenize");
  auto* file = cmd->add_option("--file", o->file, "read the text from this file");
  text->excludes(file);
  cmd->add_flag("--ids", o->ids_only, "print only the ids, as one JSON list");
  cmd->add_flag("--no-bos", o->no_bos, "do not prepend BOS even when the model asks for it");
  cmd->add_flag("--special", o->special, "turn special-token text such as <|im_start|> into its id");
  cmd->callback([o, text, file, &exit_code] {
    Status s = Status::Ok();
    if (text->count() + file->count() != 1) {
      s = invalid_argument("give the text with exactly one of --text or --file");
    } else {
      s = tokenize(*o);
    }
    if (!s.ok()) std::fprintf(stderr, "error: %s\n", s.message().c_str());
    exit_code = s.ok() ? 0 : 1;
  });
}

}  // namespace bl::app
