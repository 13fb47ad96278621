// Errors as values. Every API boundary that can fail on user input (a model file, a request,
// an option) returns Status or Expected<T> with a message a user can act on.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace bl {

enum class StatusCode {
  ok = 0,
  invalid_argument,  // a bad option or request
  invalid_file,      // a malformed or truncated model file
  unsupported,       // valid input that this build cannot handle (a format, an architecture)
  not_found,         // a file, key or tensor that is missing
  out_of_memory,     // an allocation (host or device) failed
  io_error,          // the OS refused a read, write or map
  internal,          // a bug: an invariant did not hold
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }
  bool ok() const { return code_ == StatusCode::ok; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prefixes context, e.g. "blk.3.attn_q.weight: " + "shape overflows".
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return {code_, context + ": " + message_};
  }

 private:
  StatusCode code_ = StatusCode::ok;
  std::string message_;
};

inline Status invalid_argument(std::string m) { return {StatusCode::invalid_argument, std::move(m)}; }
inline Status invalid_file(std::string m) { return {StatusCode::invalid_file, std::move(m)}; }
inline Status unsupported(std::string m) { return {StatusCode::unsupported, std::move(m)}; }
inline Status not_found(std::string m) { return {StatusCode::not_found, std::move(m)}; }
inline Status out_of_memory(std::string m) { return {StatusCode::out_of_memory, std::move(m)}; }
inline Status io_error(std::string m) { return {StatusCode::io_error, std::move(m)}; }
inline Status internal_error(std::string m) { return {StatusCode::internal, std::move(m)}; }

// A value or the Status that says why there is none (std::expected is C++23).
template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::move(value)) {}
  Expected(Status status) : v_(std::move(status)) { assert(!std::get<Status>(v_).ok()); }

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  const Status& status() const {
    static const Status ok_status;
    return ok() ? ok_status : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace bl

// Early return of a failed Status / Expected from a function returning Status or Expected<U>.
#define BL_CONCAT_INNER(a, b) a##b
#define BL_CONCAT(a, b) BL_CONCAT_INNER(a, b)
#define BL_RETURN_IF_ERROR(expr)              \
  do {                                        \
    ::bl::Status bl_status_ = (expr);         \
    if (!bl_status_.ok()) return bl_status_;  \
  } while (0)
#define BL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(tmp).value()
#define BL_ASSIGN_OR_RETURN(lhs, expr) BL_ASSIGN_OR_RETURN_IMPL(BL_CONCAT(bl_expected_, __LINE__), lhs, expr)
