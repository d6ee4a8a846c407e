// What a log line is about, beyond its logger (the module): the module version
// and the upgrade phase the current thread is in. Set in scopes by the slot
// (around each call into a module: its version) and by the upgrade
// transaction (each phase); read by the JSON log format (--log-format json),
// so log shippers get them as fields instead of parsing them out of text.
// Thread-local: spdlog formats on the thread that logs.
#pragma once

#include <cstdint>
#include <string_view>

namespace molt::host {

struct LogContext {
  std::uint32_t version = 0;  ///< 0: none
  std::string_view phase;     ///< a string literal ("prepare", "save", ...), or empty
};

namespace detail {
/// This thread's context. Initial-exec and constinit, as in module_site.hpp:
/// one load relative to %fs, inlined into every call through a slot.
extern constinit thread_local LogContext log_context __attribute__((tls_model("initial-exec")));
}  // namespace detail

/// This thread's context.
[[nodiscard]] inline LogContext& log_context() noexcept { return detail::log_context; }

/// Sets this thread's context for its lifetime, then restores the one before.
class LogScope {
 public:
  explicit LogScope(std::uint32_t version, std::string_view phase = {}) noexcept : saved_(log_context()) {
    log_context() = LogContext{version, phase.empty() ? saved_.phase : phase};
  }
  ~LogScope() { log_context() = saved_; }
  LogScope(const LogScope&) = delete;
  LogScope& operator=(const LogScope&) = delete;

 private:
  LogContext saved_;
};

}  // namespace molt::host
