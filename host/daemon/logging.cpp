#include "molt/host/daemon/logging.hpp"

#include <ctime>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/stdout_sinks.h>

#include "molt/host/common/json_text.hpp"
#include "molt/host/common/log_context.hpp"

namespace molt::host {

Logging::Logging(const std::filesystem::path& file, const std::string& level, LogFormat format)
    : level_(spdlog::level::from_str(level)) {
  if (format == LogFormat::Json) {
    sinks_.push_back(std::make_shared<spdlog::sinks::stderr_sink_mt>());  // no colour codes in JSON
  } else {
    sinks_.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  }
  sinks_.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(file.string(), 16u << 20, 4));
  for (auto& sink : sinks_) {
    if (format == LogFormat::Json) sink->set_formatter(std::make_unique<JsonLogFormatter>());
    else sink->set_pattern("%Y-%m-%d %H:%M:%S.%e %^%-5l%$ [%n] %v");
  }
}

void JsonLogFormatter::format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) {
  const auto since_epoch = msg.time.time_since_epoch();
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(since_epoch);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(since_epoch - seconds).count();
  const std::time_t t = seconds.count();
  std::tm tm{};
  gmtime_r(&t, &tm);
  char time[40];
  const std::size_t n = std::strftime(time, sizeof time, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(time + n, sizeof time - n, ".%03dZ", static_cast<int>(millis));

  nlohmann::ordered_json line{{"time", time},
                              {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                                                    spdlog::level::to_string_view(msg.level).size())},
                              {"module", std::string(msg.logger_name.data(), msg.logger_name.size())}};
  const LogContext& context = log_context();
  if (context.version != 0) line["version"] = context.version;
  if (!context.phase.empty()) line["phase"] = std::string(context.phase);
  line["msg"] = std::string(msg.payload.data(), msg.payload.size());
  // Invalid UTF-8 (a module's message, a file name) must not make the line
  // unwritable: each bad byte is written as \xNN, as everywhere else.
  const std::string text = json_text(line);
  dest.append(text.data(), text.data() + text.size());
  dest.push_back('\n');
}

std::unique_ptr<spdlog::formatter> JsonLogFormatter::clone() const { return std::make_unique<JsonLogFormatter>(); }

std::shared_ptr<spdlog::logger> Logging::make(const std::string& name) const {
  auto logger = std::make_shared<spdlog::logger>(name, sinks_.begin(), sinks_.end());
  logger->set_level(level_);
  logger->flush_on(spdlog::level::info);  // operators tail the file; lines must be there
  return logger;
}

}  // namespace molt::host
