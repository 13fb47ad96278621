#include "io/hf_tokenizer.h"

#include <algorithm>
#include <unordered_map>

#include "io/byte_cursor.h"

namespace bl {
namespace {

constexpr int64_t kTypeNormal = 1, kTypeUnknown = 2, kTypeControl = 3, kTypeUserDefined = 4, kTypeUnused = 5,
                  kTypeByte = 6;

// The pre-tokenizer regexes of tokenizer.json files, as written there.
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|"
    "\\s+(?!\\S)|\\s+";

const char* kFile = "tokenizer.json";

Status bad(const std::string& what) { return invalid_file(std::string(kFile) + ": " + what); }

// What the pre-tokenizer (possibly a Sequence) does.
struct PreTokenizer {
  std::vector<std::string> split_regexes;
  bool individual_digits = false;
  bool byte_level = false;
  bool byte_level_regex = false;
  bool metaspace_prepends = false;
};

void walk_pre_tokenizer(const Json& p, PreTokenizer& out, int depth = 0) {
  if (!p.is_object() || depth > 8) return;
  std::string type = json_string_or(p, "type", "");
  if (type == "Sequence") {
    if (auto it = p.find("pretokenizers"); it != p.end() && it->is_array())
      for (const Json& c : *it) walk_pre_tokenizer(c, out, depth + 1);
  } else if (type == "Split") {
    if (auto pat = p.find("pattern"); pat != p.end() && pat->is_object()) {
      if (auto r = pat->find("Regex"); r != pat->end() && r->is_string()) out.split_regexes.push_back(r->get<std::string>());
    }
  } else if (type == "Digits") {
    out.individual_digits = json_bool_or(p, "individual_digits", false);
  } else if (type == "ByteLevel") {
    out.byte_level = true;
    out.byte_level_regex = json_bool_or(p, "use_regex", true);
  } else if (type == "Metaspace") {
    std::string scheme = json_string_or(p, "prepend_scheme", "always");
    out.metaspace_prepends = json_bool_or(p, "add_prefix_space", true) && scheme != "never";
  }
}

std::string guess_pre(const PreTokenizer& p) {
  for (const std::string& r : p.split_regexes) {
    if (r == kLlama3Regex) return "llama-bpe";
    if (r == kQwen2Regex) return "qwen2";
  }
  if (p.split_regexes.empty() && p.individual_digits && p.byte_level_regex) return "smollm";
  return "gpt2";
}

bool normalizer_prepends(const Json& n, int depth = 0) {
  if (!n.is_object() || depth > 8) return false;
  std::string type = json_string_or(n, "type", "");
  if (type == "Prepend") return true;
  if (type == "Sequence")
    if (auto it = n.find("normalizers"); it != n.end() && it->is_array())
      for (const Json& c : *it)
        if (normalizer_prepends(c, depth + 1)) return true;
  return false;
}

// The first token of the post-processor's single-sequence template, when it is a special token.
std::optional<std::string> template_first_special(const Json& p, int depth = 0) {
  if (!p.is_object() || depth > 8) return std::nullopt;
  std::string type = json_string_or(p, "type", "");
  if (type == "Sequence") {
    if (auto it = p.find("processors"); it != p.end() && it->is_array())
      for (const Json& c : *it)
        if (auto s = template_first_special(c, depth + 1)) return s;
  } else if (type == "TemplateProcessing") {
    auto single = p.find("single");
    if (single != p.end() && single->is_array() && !single->empty() && (*single)[0].is_object()) {
      auto st = (*single)[0].find("SpecialToken");
      if (st != (*single)[0].end() && st->is_object()) {
        auto id = st->find("id");
        if (id != st->end() && id->is_string()) return id->get<std::string>();
      }
    }
  }
  return std::nullopt;
}

bool is_byte_token(const std::string& t) {
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'); };
  return t.size() == 6 && t.compare(0, 3, "<0x") == 0 && hex(t[3]) && hex(t[4]) && t[5] == '>';
}

// A special token named in tokenizer_config.json: "<s>" or {"content": "<s>", ...}.
std::optional<std::string> token_text(const Json* tc, const char* key) {
  if (!tc || !tc->is_object()) return std::nullopt;
  auto it = tc->find(key);
  if (it == tc->end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto c = it->find("content");
    if (c != it->end() && c->is_string()) return c->get<std::string>();
  }
  return std::nullopt;
}

// An id in config.json: 2 or [128001, 128008, 128009] (the first is taken).
std::optional<int64_t> config_id(const Json* config, const char* key) {
  if (!config || !config->is_object()) return std::nullopt;
  auto it = config->find(key);
  if (it == config->end()) return std::nullopt;
  const Json* v = &*it;
  if (v->is_array() && !v->empty()) v = &(*v)[0];
  if (v->is_number_unsigned()) return static_cast<int64_t>(v->get<uint64_t>());
  return std::nullopt;
}

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<int64_t> types;
  std::unordered_map<std::string, int64_t> added_ids;  // content -> id, added tokens only
  std::unordered_map<std::string, int64_t> ids;        // every token -> id
};

Expected<Vocab> read_vocab(const Json& model, const Json* added, uint64_t config_vocab_size, const ParseLimits& limits) {
  auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) return bad("model.vocab is missing or not an object");
  const Json& vocab = *vocab_it;
  uint64_t n_added = added && added->is_array() ? added->size() : 0;
  // Ids must be dense-ish: below the larger of config.json's vocab_size and the entry count,
  // so a bogus id cannot make the token table huge.
  uint64_t entries = vocab.size() + n_added;
  // config.json's vocab_size may pad the embedding past the tokenizer (Qwen2: 151936 rows for
  // 151665 tokens), but not by orders of magnitude: that would only fill memory with [PAD]s.
  if (config_vocab_size > 2 * entries + 65536)
    return bad("config.json vocab_size " + std::to_string(config_vocab_size) + " is far above the " +
               std::to_string(entries) + " tokens of tokenizer.json");
  uint64_t id_limit = std::max<uint64_t>(config_vocab_size, entries);
  if (id_limit > limits.max_array_elems)
    return bad("vocabulary of " + std::to_string(id_limit) + " tokens exceeds the limit of " +
               std::to_string(limits.max_array_elems));
  auto check_id = [&](const Json& v, const std::string& token) -> Expected<uint64_t> {
    if (!v.is_number_unsigned()) return bad("token " + printable_name(token) + " has a non-integer id");
    uint64_t id = v.get<uint64_t>();
    if (id >= id_limit)
      return bad("token " + printable_name(token) + " has id " + std::to_string(id) + ", past the vocabulary size " +
                 std::to_string(id_limit));
    return id;
  };

  uint64_t n = config_vocab_size;
  for (const auto& [token, v] : vocab.items()) {
    BL_ASSIGN_OR_RETURN(uint64_t id, check_id(v, token));
    n = std::max(n, id + 1);
  }
  if (n_added)
    for (const Json& a : *added)
      if (a.is_object() && a.contains("id") && a["id"].is_number_unsigned())
        n = std::max(n, std::min(a["id"].get<uint64_t>(), id_limit - 1) + 1);

  Vocab out;
  out.tokens.resize(n);
  out.types.assign(n, 0);  // 0: not filled yet
  for (const auto& [token, v] : vocab.items()) {
    uint64_t id = v.get<uint64_t>();
    if (out.types[id] != 0)
      return bad("tokens " + printable_name(out.tokens[id]) + " and " + printable_name(token) + " share id " + std::to_string(id));
    out.tokens[id] = token;
    out.types[id] = kTypeNormal;
  }
  if (n_added) {
    for (const Json& a : *added) {
      if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id"))
        return bad("added_tokens entries need 'id' and 'content'");
      std::string content = a["content"].get<std::string>();
      BL_ASSIGN_OR_RETURN(uint64_t id, check_id(a["id"], content));
      bool special = json_bool_or(a, "special", false);
      // An added token takes its id over from a vocab entry (usually the same text).
      out.tokens[id] = content;
      out.types[id] = special ? kTypeControl : kTypeUserDefined;
      out.added_ids[content] = static_cast<int64_t>(id);
    }
  }
  for (uint64_t id = 0; id < n; ++id) {
    if (out.types[id] == 0) {
      out.tokens[id] = "[PAD" + std::to_string(id) + "]";
      out.types[id] = kTypeUnused;
    }
  }
  out.ids.reserve(n);
  for (uint64_t id = n; id-- > 0;) out.ids[out.tokens[id]] = static_cast<int64_t>(id);  // lowest id wins
  return out;
}

Expected<std::vector<std::string>> read_merges(const Json& model, const ParseLimits& limits) {
  std::vector<std::string> merges;
  auto it = model.find("merges");
  if (it == model.end() || it->is_null()) return merges;
  if (!it->is_array()) return bad("model.merges is not an array");
  if (it->size() > limits.max_array_elems) return bad("model.merges has too many entries");
  merges.reserve(it->size());
  for (const Json& m : *it) {
    if (m.is_string()) {
      merges.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    } else {
      return bad("model.merges entry " + std::to_string(merges.size()) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  return merges;
}

// Score of each token for the SentencePiece tokenizer: -rank of the merge that makes it.
std::vector<double> merge_scores(const Vocab& v, const std::vector<std::string>& merges) {
  std::vector<double> scores(v.tokens.size(), 0.0);
  std::vector<bool> set(v.tokens.size(), false);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    size_t space = m.find(' ');
    if (space == std::string::npos) continue;
    auto it = v.ids.find(m.substr(0, space) + m.substr(space + 1));
    if (it == v.ids.end() || set[static_cast<size_t>(it->second)]) continue;
    scores[static_cast<size_t>(it->second)] = -static_cast<double>(rank);
    set[static_cast<size_t>(it->second)] = true;
  }
  return scores;
}

}  // namespace

Expected<std::vector<GgufKeyValue>> translate_hf_tokenizer(const HfTokenizerFiles& files, uint64_t config_vocab_size,
                                                           const ParseLimits& limits) {
  const Json& tok = *files.tokenizer;
  if (!tok.is_object()) return bad("not a JSON object");
  auto model_it = tok.find("model");
  if (model_it == tok.end() || !model_it->is_object()) return bad("missing 'model'");
  const Json& model = *model_it;
  std::string type = json_string_or(model, "type", model.contains("merges") ? "BPE" : "");
  if (type != "BPE")
    return unsupported(std::string(kFile) + ": tokenizer model '" + type +
                       "' is not supported (byte-level BPE and SentencePiece-style BPE are)");
  const Json* added = tok.contains("added_tokens") ? &tok["added_tokens"] : nullptr;
  BL_ASSIGN_OR_RETURN(Vocab vocab, read_vocab(model, added, config_vocab_size, limits));
  BL_ASSIGN_OR_RETURN(std::vector<std::string> merges, read_merges(model, limits));

  PreTokenizer pre;
  if (auto p = tok.find("pre_tokenizer"); p != tok.end()) walk_pre_tokenizer(*p, pre);
  const bool byte_fallback = json_bool_or(model, "byte_fallback", false);

  std::vector<GgufKeyValue> md;
  if (!byte_fallback) {
    md.push_back({"tokenizer.ggml.model", gguf_string("gpt2")});
    md.push_back({"tokenizer.ggml.pre", gguf_string(guess_pre(pre))});
    if (!pre.split_regexes.empty())
      md.push_back({"bitlight.tokenizer.pre_regexes", gguf_string_array(pre.split_regexes)});
    md.push_back({"tokenizer.ggml.tokens", gguf_string_array(vocab.tokens)});
    md.push_back({"tokenizer.ggml.token_type", gguf_int_array(GgufType::i32, vocab.types)});
    md.push_back({"tokenizer.ggml.merges", gguf_string_array(std::move(merges))});
  } else {
    std::optional<std::string> unk;
    if (auto u = model.find("unk_token"); u != model.end() && u->is_string()) unk = u->get<std::string>();
    for (size_t id = 0; id < vocab.tokens.size(); ++id) {
      if (vocab.types[id] != kTypeNormal) continue;
      if (unk && vocab.tokens[id] == *unk)
        vocab.types[id] = kTypeUnknown;
      else if (is_byte_token(vocab.tokens[id]))
        vocab.types[id] = kTypeByte;
    }
    bool prepend = pre.metaspace_prepends;
    if (auto n = tok.find("normalizer"); n != tok.end()) prepend = prepend || normalizer_prepends(*n);
    md.push_back({"tokenizer.ggml.model", gguf_string("llama")});
    md.push_back({"tokenizer.ggml.tokens", gguf_string_array(vocab.tokens)});
    md.push_back({"tokenizer.ggml.scores", gguf_float_array(GgufType::f32, merge_scores(vocab, merges))});
    md.push_back({"tokenizer.ggml.token_type", gguf_int_array(GgufType::i32, vocab.types)});
    md.push_back({"tokenizer.ggml.add_space_prefix", gguf_bool(prepend)});
  }

  // Special tokens: named in tokenizer_config.json, else ids from config.json.
  auto id_of = [&](const std::string& text) -> std::optional<int64_t> {
    if (auto it = vocab.added_ids.find(text); it != vocab.added_ids.end()) return it->second;
    if (auto it = vocab.ids.find(text); it != vocab.ids.end()) return it->second;
    return std::nullopt;
  };
  struct Special {
    const char* config_key;  // tokenizer_config.json
    const char* id_key;      // config.json
    const char* gguf_key;
  };
  const Special specials[] = {
      {"bos_token", "bos_token_id", "tokenizer.ggml.bos_token_id"},
      {"eos_token", "eos_token_id", "tokenizer.ggml.eos_token_id"},
      {"unk_token", "unk_token_id", "tokenizer.ggml.unknown_token_id"},
      {"pad_token", "pad_token_id", "tokenizer.ggml.padding_token_id"},
  };
  std::optional<std::string> bos_text = token_text(files.tokenizer_config, "bos_token");
  for (const Special& s : specials) {
    std::optional<int64_t> id;
    if (auto text = token_text(files.tokenizer_config, s.config_key)) id = id_of(*text);
    if (!id) id = config_id(files.config, s.id_key);
    if (id && *id >= 0 && static_cast<size_t>(*id) < vocab.tokens.size())
      md.push_back({s.gguf_key, gguf_int(GgufType::u32, *id)});
  }

  const Json* tc = files.tokenizer_config && files.tokenizer_config->is_object() ? files.tokenizer_config : nullptr;
  std::optional<bool> add_bos;
  if (tc && tc->contains("add_bos_token") && (*tc)["add_bos_token"].is_boolean()) add_bos = (*tc)["add_bos_token"].get<bool>();
  if (!add_bos) {
    auto first = tok.contains("post_processor") ? template_first_special(tok["post_processor"]) : std::nullopt;
    add_bos = first && bos_text && *first == *bos_text;
  }
  md.push_back({"tokenizer.ggml.add_bos_token", gguf_bool(*add_bos)});
  if (tc && tc->contains("add_eos_token") && (*tc)["add_eos_token"].is_boolean())
    md.push_back({"tokenizer.ggml.add_eos_token", gguf_bool((*tc)["add_eos_token"].get<bool>())});

  std::optional<std::string> chat_template;
  if (tc && tc->contains("chat_template")) {
    const Json& ct = (*tc)["chat_template"];
    if (ct.is_string()) {
      chat_template = ct.get<std::string>();
    } else if (ct.is_array()) {  // [{"name": "default", "template": "..."}, {"name": "tool_use", ...}]
      for (const Json& t : ct) {
        if (!t.is_object() || !t.contains("template") || !t["template"].is_string()) continue;
        if (!chat_template || json_string_or(t, "name", "") == "default") chat_template = t["template"].get<std::string>();
      }
    }
  }
  if (!chat_template) chat_template = files.chat_template_file;
  if (chat_template) md.push_back({"tokenizer.chat_template", gguf_string(*chat_template)});
  return md;
}

}  // namespace bl
