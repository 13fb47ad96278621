// libFuzzer target for the Hugging Face JSON translation: the input is parsed as JSON and
// given both to translate_hf_config (as config.json) and to translate_hf_tokenizer (as
// tokenizer.json, and as tokenizer_config.json). Any crash or uncaught exception is a bug:
// a wrong type or a bogus id must come back as a Status.
#include <cstddef>
#include <cstdint>

#include "io/hf_config.h"
#include "io/hf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const char* text = reinterpret_cast<const char*>(data);
  bl::Json j = bl::Json::parse(text, text + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  auto config = bl::translate_hf_config(j);
  bl::HfTokenizerFiles files;
  files.tokenizer = &j;
  files.tokenizer_config = &j;
  files.config = &j;
  bl::ParseLimits limits;
  limits.max_array_elems = 1u << 16;  // keeps each run fast; the bound itself is what is tested
  auto tokens = bl::translate_hf_tokenizer(files, config.ok() ? config->vocab_size : 64, limits);
  return 0;
}
