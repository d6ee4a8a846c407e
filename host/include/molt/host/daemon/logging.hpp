// moltd's logging: one set of sinks (stderr and <run dir>/moltd.log), one
// logger per module named after it, and "moltd" for the host itself. The
// pattern prints the logger's name, so every line says which module it is about.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/formatter.h>
#include <spdlog/logger.h>

namespace molt::host {

enum class LogFormat {
  Text,  ///< "2026-11-23 14:10:01.186 info  [counter] v2 started ..."
  Json,  ///< one object per line: time, level, module, version, phase, msg
};

class Logging {
 public:
  /// `level`: trace, debug, info, warn, error, critical or off.
  Logging(const std::filesystem::path& file, const std::string& level, LogFormat format = LogFormat::Text);

  /// A logger named `name` on the shared sinks. Not registered globally:
  /// modules get theirs from the host and keep no reference past stop().
  [[nodiscard]] std::shared_ptr<spdlog::logger> make(const std::string& name) const;

 private:
  std::vector<spdlog::sink_ptr> sinks_;
  spdlog::level::level_enum level_;
};

/// The JSON line format: {"time":"2026-11-23T14:10:01.186Z","level":"info",
/// "module":"counter","version":2,"phase":"save","msg":"..."}; "version" and
/// "phase" only when the line has them (see log_context.hpp).
class JsonLogFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override;
  [[nodiscard]] std::unique_ptr<spdlog::formatter> clone() const override;
};

}  // namespace molt::host
