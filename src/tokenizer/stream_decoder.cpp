#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace bl {

namespace {

// Moves the longest prefix of `pending` that is settled (complete characters and invalid
// bytes, the latter as U+FFFD) into the result. A truncated sequence at the end stays in
// `pending` unless `final`, when it becomes U+FFFD too.
std::string take_settled(std::string& pending, bool final) {
  std::string out;
  size_t pos = 0;
  while (pos < pending.size()) {
    const std::string_view rest = std::string_view(pending).substr(pos);
    const utf8::Seq seq = utf8::next_sequence(rest);
    if (seq.kind == utf8::SeqKind::truncated && !final) break;
    if (seq.kind == utf8::SeqKind::complete) {
      out.append(rest.substr(0, seq.length));
    } else {
      out.append(utf8::kReplacement);
    }
    pos += seq.length;
  }
  pending.erase(0, pos);
  return out;
}

}  // namespace

std::string StreamDecoder::push(TokenId id) {
  pending_ += tokenizer_.token_bytes(id);
  return take_settled(pending_, /*final=*/false);
}

std::string StreamDecoder::flush() { return take_settled(pending_, /*final=*/true); }

}  // namespace bl
