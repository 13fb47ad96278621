#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/pcre_regex.h"

#include <pcre2.h>

#include <memory>

namespace bl {

Expected<std::unique_ptr<PcreRegex>> PcreRegex::compile(const std::string& pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    return internal_error("pre-tokenizer regex does not compile at offset " + std::to_string(error_offset) +
                          ": " + reinterpret_cast<const char*>(message));
  }
  // JIT is an optimisation only: without it (e.g. a build lacking JIT) matching still works.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  return std::unique_ptr<PcreRegex>(new PcreRegex(code));
}

PcreRegex::~PcreRegex() { pcre2_code_free(static_cast<pcre2_code*>(code_)); }

void* PcreRegex::new_match_state() const {
  return pcre2_match_data_create_from_pattern(static_cast<pcre2_code*>(code_), nullptr);
}

void PcreRegex::free_match_state(void* state) {
  pcre2_match_data_free(static_cast<pcre2_match_data*>(state));
}

bool PcreRegex::next_match(void* state, std::string_view text, size_t offset, size_t& begin,
                           size_t& end) const {
  auto* md = static_cast<pcre2_match_data*>(state);
  const int rc = pcre2_match(static_cast<pcre2_code*>(code_), reinterpret_cast<PCRE2_SPTR>(text.data()),
                             text.size(), offset, 0, md, nullptr);
  if (rc < 0) return false;  // no match, or a matching limit hit: the rest becomes one gap piece
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(md);
  begin = ovector[0];
  end = ovector[1];
  return true;
}

}  // namespace bl
