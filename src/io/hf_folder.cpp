#include "io/hf_folder.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <unordered_set>

#include "io/byte_cursor.h"
#include "io/hf_config.h"
#include "io/hf_tensor_names.h"
#include "io/hf_tokenizer.h"
#include "io/json_file.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace bl {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMaxConfigBytes = 16ull << 20;
constexpr uint64_t kMaxTokenizerBytes = 512ull << 20;

// The safetensors files of the folder: model.safetensors, or the shards that
// model.safetensors.index.json names (then `weight_map` maps tensor name -> shard file).
Status find_shards(const fs::path& dir, std::vector<std::string>& shards, std::map<std::string, std::string>& weight_map) {
  std::error_code ec;
  if (fs::is_regular_file(dir / "model.safetensors", ec)) {
    shards.push_back("model.safetensors");
    return Status::Ok();
  }
  const fs::path index_path = dir / "model.safetensors.index.json";
  if (!fs::is_regular_file(index_path, ec))
    return not_found("the folder has neither model.safetensors nor model.safetensors.index.json");
  BL_ASSIGN_OR_RETURN(Json index, read_json_file(index_path.string(), kMaxConfigBytes));
  auto map_it = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || map_it == index.end() || !map_it->is_object())
    return invalid_file(index_path.string() + ": missing object 'weight_map'");
  std::set<std::string> files;
  for (const auto& [tensor, file] : map_it->items()) {
    if (!file.is_string()) return invalid_file(index_path.string() + ": weight_map entry for " + printable_name(tensor) + " is not a file name");
    std::string name = file.get<std::string>();
    // Shards must be plain files inside the folder (no paths, no "..").
    if (name.empty() || name.find('/') != std::string::npos || name.find('\\') != std::string::npos || name[0] == '.')
      return invalid_file(index_path.string() + ": shard name " + printable_name(name) + " is not a plain file name");
    files.insert(name);
    weight_map[tensor] = name;
  }
  if (files.empty()) return invalid_file(index_path.string() + ": weight_map is empty");
  shards.assign(files.begin(), files.end());
  return Status::Ok();
}

std::optional<std::string> read_text_file(const fs::path& path, uint64_t max_bytes) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  auto file = MappedFile::open(path.string());
  if (!file.ok() || (*file)->size() > max_bytes) return std::nullopt;
  return std::string(reinterpret_cast<const char*>((*file)->data()), (*file)->size());
}

}  // namespace

HfFolder::HfFolder() = default;
HfFolder::~HfFolder() = default;

Expected<std::unique_ptr<HfFolder>> HfFolder::open(const std::string& folder, const ParseLimits& limits) {
  // The translation checks every JSON type it reads; this is the backstop that keeps a missed
  // check on an untrusted file an error rather than a crash.
  try {
    return open_checked(folder, limits);
  } catch (const Json::exception& e) {
    return invalid_file(folder + ": unexpected JSON content: " + e.what());
  } catch (const std::bad_alloc&) {
    return out_of_memory(folder + ": out of memory while reading the folder");
  }
}

Expected<std::unique_ptr<HfFolder>> HfFolder::open_checked(const std::string& folder, const ParseLimits& limits) {
  const fs::path dir(folder);
  std::error_code ec;
  if (!fs::is_regular_file(dir / "config.json", ec))
    return not_found("'" + folder + "' is a folder without config.json (expected a Hugging Face model folder)");
  BL_ASSIGN_OR_RETURN(Json config, read_json_file((dir / "config.json").string(), kMaxConfigBytes));
  auto translated = translate_hf_config(config);
  if (!translated.ok()) return translated.status().with_context(folder);
  HfConfig cfg = std::move(translated).value();

  std::unique_ptr<HfFolder> out(new HfFolder());
  out->path_ = folder;
  std::string name = dir.filename().string();
  if (name.empty()) name = dir.parent_path().filename().string();  // "folder/"
  out->metadata_.push_back({"general.name", gguf_string(name)});
  for (GgufKeyValue& kv : cfg.metadata) out->metadata_.push_back(std::move(kv));

  // Tensors from every shard, renamed to GGUF names, ne in GGUF order.
  std::vector<std::string> shards;
  std::map<std::string, std::string> weight_map;
  BL_RETURN_IF_ERROR(find_shards(dir, shards, weight_map).with_context(folder));
  std::unordered_set<std::string> seen;
  std::set<std::string> found_in_index;
  for (const std::string& shard : shards) {
    const std::string shard_path = (dir / shard).string();
    BL_ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapping, MappedFile::open(shard_path));
    auto parsed = parse_safetensors(mapping->data(), mapping->size(), limits);
    if (!parsed.ok()) return parsed.status().with_context(shard_path);
    for (SafetensorsTensor& t : parsed->tensors) {
      if (!weight_map.empty()) {
        auto it = weight_map.find(t.name);
        if (it != weight_map.end() && it->second != shard)
          return invalid_file(shard_path + ": tensor " + printable_name(t.name) + " is listed in shard '" + it->second +
                              "' by model.safetensors.index.json");
        if (it != weight_map.end()) found_in_index.insert(t.name);
      }
      std::optional<std::string> gguf_name = gguf_tensor_name(t.name);
      if (!gguf_name) continue;
      if (cfg.tie_word_embeddings && *gguf_name == "output.weight") continue;  // tied to token_embd
      if (!seen.insert(*gguf_name).second)
        return invalid_file(shard_path + ": tensor " + printable_name(t.name) + " appears twice in the folder");
      if (out->tensors_.size() >= limits.max_tensors)
        return invalid_file(folder + ": more than " + std::to_string(limits.max_tensors) + " tensors");
      TensorInfo info;
      info.name = std::move(*gguf_name);
      info.dtype = t.dtype;
      info.ne.assign(t.shape.rbegin(), t.shape.rend());
      if (info.ne.empty()) info.ne.push_back(1);  // a scalar
      for (int64_t n : info.ne)
        if (n == 0) return unsupported(shard_path + ": tensor " + printable_name(t.name) + " has a zero-sized dimension");
      info.offset = t.file_offset;
      info.bytes = t.bytes;
      info.data = t.data;
      out->tensors_.push_back(std::move(info));
    }
    out->shards_.push_back(std::move(mapping));
  }
  for (const auto& [tensor, shard] : weight_map)
    if (!found_in_index.count(tensor))
      return invalid_file(folder + ": model.safetensors.index.json lists tensor " + printable_name(tensor) +
                          " in shard '" + shard + "', which does not contain it");

  // The tokenizer, when the folder has one.
  if (fs::is_regular_file(dir / "tokenizer.json", ec)) {
    BL_ASSIGN_OR_RETURN(Json tokenizer, read_json_file((dir / "tokenizer.json").string(),
                                                       std::min(limits.max_metadata_bytes, kMaxTokenizerBytes)));
    std::optional<Json> tokenizer_config;
    if (fs::is_regular_file(dir / "tokenizer_config.json", ec)) {
      BL_ASSIGN_OR_RETURN(tokenizer_config, read_json_file((dir / "tokenizer_config.json").string(), kMaxTokenizerBytes));
    }
    HfTokenizerFiles files;
    files.tokenizer = &tokenizer;
    files.tokenizer_config = tokenizer_config ? &*tokenizer_config : nullptr;
    files.config = &config;
    files.chat_template_file = read_text_file(dir / "chat_template.jinja", kMaxConfigBytes);
    auto md = translate_hf_tokenizer(files, cfg.vocab_size, limits);
    if (!md.ok()) return md.status().with_context(folder);
    for (GgufKeyValue& kv : *md) out->metadata_.push_back(std::move(kv));
  }
  return out;
}

}  // namespace bl
