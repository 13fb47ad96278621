// Splits text into the words that byte-level BPE merges within, with the regexes of the
// model family named by tokenizer.ggml.pre (the same table llama.cpp keeps). Each stage's
// regex splits every piece of the previous stage into matches and the gaps between them
// (Hugging Face's "Isolated" split), so no byte of the text is lost.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace bl {

class PcreRegex;

class PreTokenizer {
 public:
  // pre: the tokenizer.ggml.pre value; "" and "default" mean GPT-2. Unknown names are an
  // error (a wrong split silently changes every id).
  static Expected<PreTokenizer> for_name(std::string_view pre);

  // Appends the words of `text` (views into it) to `words`, in order; their concatenation
  // is `text`. Invalid UTF-8 bytes never match a regex and so end up in gap pieces.
  void split(std::string_view text, std::vector<std::string_view>& words) const;

  // Llama 3's tokenizer looks a whole word up in the vocabulary before merging
  // (Hugging Face's BPE ignore_merges).
  bool ignore_merges() const { return ignore_merges_; }

 private:
  std::vector<std::shared_ptr<const PcreRegex>> stages_;
  bool ignore_merges_ = false;
};

}  // namespace bl
