// Tokenizer::from_model_file: reads the tokenizer.ggml.* keys (kept in a file of its own so
// code that builds tokenizers from vectors does not link the model-file reader).
#include "io/model_file.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_config.h"

namespace bl {

namespace {

Status read_id(const ModelFile& file, const char* key, TokenId& id) {
  BL_ASSIGN_OR_RETURN(const int64_t value, file.get_int_or(key, -1));
  if (value < -1 || value > INT32_MAX)
    return invalid_file(std::string(key) + " = " + std::to_string(value) + " is not a token id");
  id = static_cast<TokenId>(value);
  return Status::Ok();
}

Status read_flag(const ModelFile& file, const char* key, std::optional<bool>& flag) {
  if (!file.has(key)) return Status::Ok();
  BL_ASSIGN_OR_RETURN(flag, file.get_bool(key));
  return Status::Ok();
}

Expected<TokenizerConfig> read_config(const ModelFile& file) {
  TokenizerConfig config;
  BL_ASSIGN_OR_RETURN(config.model, file.get_string("tokenizer.ggml.model"));
  BL_ASSIGN_OR_RETURN(config.pre, file.get_string_or("tokenizer.ggml.pre", "default"));
  BL_ASSIGN_OR_RETURN(config.tokens, file.get_string_array("tokenizer.ggml.tokens"));
  if (file.has("tokenizer.ggml.scores")) {
    BL_ASSIGN_OR_RETURN(config.scores, file.get_float_array("tokenizer.ggml.scores"));
  }
  if (file.has("tokenizer.ggml.token_type")) {
    BL_ASSIGN_OR_RETURN(const std::vector<int64_t> types, file.get_int_array("tokenizer.ggml.token_type"));
    config.token_types.reserve(types.size());
    for (int64_t t : types) config.token_types.push_back(t >= 0 && t <= 6 ? static_cast<int32_t>(t) : 0);
  }
  if (file.has("tokenizer.ggml.merges")) {
    BL_ASSIGN_OR_RETURN(config.merges, file.get_string_array("tokenizer.ggml.merges"));
  }
  BL_RETURN_IF_ERROR(read_id(file, "tokenizer.ggml.bos_token_id", config.bos_id));
  BL_RETURN_IF_ERROR(read_id(file, "tokenizer.ggml.eos_token_id", config.eos_id));
  BL_RETURN_IF_ERROR(read_id(file, "tokenizer.ggml.eot_token_id", config.eot_id));
  BL_RETURN_IF_ERROR(read_id(file, "tokenizer.ggml.eom_token_id", config.eom_id));
  BL_RETURN_IF_ERROR(read_id(file, "tokenizer.ggml.unknown_token_id", config.unknown_id));
  BL_RETURN_IF_ERROR(read_id(file, "tokenizer.ggml.padding_token_id", config.padding_id));
  BL_RETURN_IF_ERROR(read_flag(file, "tokenizer.ggml.add_bos_token", config.add_bos));
  BL_RETURN_IF_ERROR(read_flag(file, "tokenizer.ggml.add_eos_token", config.add_eos));
  BL_RETURN_IF_ERROR(read_flag(file, "tokenizer.ggml.add_space_prefix", config.add_space_prefix));
  return config;
}

}  // namespace

Expected<std::unique_ptr<Tokenizer>> Tokenizer::from_model_file(const ModelFile& file) {
  auto config = read_config(file);
  if (!config.ok()) return config.status().with_context(file.path() + ": tokenizer");
  auto tokenizer = make_tokenizer(*config);
  if (!tokenizer.ok()) return tokenizer.status().with_context(file.path() + ": tokenizer");
  return tokenizer;
}

}  // namespace bl
