#include "molt/host/slot/host_part.hpp"

#include <algorithm>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "molt/host/common/json_text.hpp"

namespace molt::host {

std::string encode_host_part(const HostPart& part) {
  if (part.jobs.empty() && part.timers.empty()) return {};
  nlohmann::json text{{"jobs", nlohmann::json::array()}, {"timers", nlohmann::json::array()}};
  for (const auto& record : part.jobs) text["jobs"].push_back(record);
  for (const auto& timer : part.timers)
    text["timers"].push_back({{"name", timer.name},
                              {"period_ms", timer.kind == TimerKind::Once ? 0 : timer.period.count()},
                              {"due_in_ms", std::max<std::int64_t>(timer.due_in.count(), 0)}});
  return json_text(text);
}

Result<HostPart> decode_host_part(std::string_view text, const std::string& module) {
  HostPart part;
  if (text.empty()) return part;
  try {
    const auto parsed = nlohmann::json::parse(text);
    for (const auto& job : parsed.at("jobs")) part.jobs.push_back(job.get<JobRecord>());
    for (const auto& timer : parsed.at("timers")) {
      const std::chrono::milliseconds period(timer.at("period_ms").get<std::int64_t>());
      part.timers.push_back({timer.at("name").get<std::string>(),
                             period.count() <= 0 ? TimerKind::Once : TimerKind::Periodic,
                             period.count() <= 0 ? std::chrono::milliseconds(0) : period,
                             std::chrono::milliseconds(timer.at("due_in_ms").get<std::int64_t>())});
    }
  } catch (const nlohmann::json::exception& e) {
    return Error{module, {}, {}, Phase::Snapshot, std::string("jobs and timers not restored: ") + e.what()};
  }
  return part;
}

}  // namespace molt::host
