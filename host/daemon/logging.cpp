#include "molt/host/daemon/logging.hpp"

#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace molt::host {

Logging::Logging(const std::filesystem::path& file, const std::string& level)
    : level_(spdlog::level::from_str(level)) {
  sinks_.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  sinks_.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(file.string(), 16u << 20, 4));
  for (auto& sink : sinks_) sink->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [%n] %v");
}

std::shared_ptr<spdlog::logger> Logging::make(const std::string& name) const {
  auto logger = std::make_shared<spdlog::logger>(name, sinks_.begin(), sinks_.end());
  logger->set_level(level_);
  logger->flush_on(spdlog::level::info);  // operators tail the file; lines must be there
  return logger;
}

}  // namespace molt::host
