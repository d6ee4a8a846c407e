// moltd's logging: one set of sinks (stderr and <run dir>/moltd.log), one
// logger per module named after it, and "moltd" for the host itself. The
// pattern prints the logger's name, so every line says which module it is about.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/logger.h>

namespace molt::host {

class Logging {
 public:
  /// `level`: trace, debug, info, warn, error, critical or off.
  Logging(const std::filesystem::path& file, const std::string& level);

  /// A logger named `name` on the shared sinks. Not registered globally:
  /// modules get theirs from the host and keep no reference past stop().
  [[nodiscard]] std::shared_ptr<spdlog::logger> make(const std::string& name) const;

 private:
  std::vector<spdlog::sink_ptr> sinks_;
  spdlog::level::level_enum level_;
};

}  // namespace molt::host
