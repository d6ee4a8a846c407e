#include "molt/host/release/crash_log.hpp"

#include <algorithm>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/json_text.hpp"

namespace molt::host {
namespace {

using Json = nlohmann::ordered_json;
constexpr std::string_view kFormat = "molt-crashes/1";
constexpr std::uint64_t kMaxCrashLogBytes = 4u << 20;

Json to_json(const CrashLogEntry& e) {
  Json j{{"at_ms", e.at_ms}, {"module", e.module}, {"version", e.version.value}, {"file", e.file},
         {"sha256", e.sha256}, {"hook", e.hook}, {"cause", e.cause}};
  j["sender"] = e.sender ? Json(*e.sender) : Json(nullptr);
  return j;
}

CrashLogEntry entry_from(const Json& j) {
  CrashLogEntry e{j.at("at_ms").get<std::int64_t>(),
                  j.at("module").get<std::string>(),
                  api::ModuleVersion{j.at("version").get<std::uint32_t>()},
                  j.at("file").get<std::string>(),
                  j.at("sha256").get<std::string>(),
                  j.at("hook").get<std::string>(),
                  j.at("cause").get<std::string>(),
                  std::nullopt};
  if (j.contains("sender") && !j["sender"].is_null()) e.sender = j["sender"].get<std::int64_t>();
  return e;
}

/// "10 minutes", "90 seconds", "1500 ms": the window as the policy gives it.
std::string duration_text(std::chrono::milliseconds window) {
  using namespace std::chrono;
  const auto count = window.count();
  if (count % 60'000 == 0) return std::to_string(count / 60'000) + (count == 60'000 ? " minute" : " minutes");
  if (count % 1000 == 0) return std::to_string(count / 1000) + (count == 1000 ? " second" : " seconds");
  return std::to_string(count) + " ms";
}

}  // namespace

CrashLogEntry crash_log_entry(const CrashRecord& record) {
  CrashLogEntry entry;
  entry.at_ms = record.time_ms;
  entry.cause = record.cause_text();
  if (record.module) {
    entry.module = record.module->module;
    entry.version = record.module->version;
    entry.file = record.module->file;
    entry.sha256 = record.module->sha256;
    entry.hook = record.module->hook;
  }
  if (record.cause == CrashCause::Signal && record.sent_by_another_process()) entry.sender = record.sender;
  return entry;
}

Result<std::unique_ptr<CrashLog>> CrashLog::open(std::filesystem::path path) {
  std::unique_ptr<CrashLog> log(new CrashLog(std::move(path)));
  const auto& at = log->path_;
  std::error_code ec;
  // A dangling link is not "no log": read_file refuses it, like a FIFO.
  if (!std::filesystem::exists(std::filesystem::symlink_status(at, ec))) return log;
  auto fail = [&](std::string reason) { return Error{{}, {}, at.string(), Phase::Start, "crash log: " + reason}; };
  std::string contents;
  if (auto why = read_file(at, kMaxCrashLogBytes, contents, Symlinks::Refuse)) return fail(*why);
  const Json j = Json::parse(contents, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return fail("not valid JSON");
  try {
    if (j.at("format").get<std::string>() != kFormat)
      return fail("format " + json_text(j.at("format")) + " unknown, this moltd reads \"" + std::string(kFormat) + "\"");
    for (const auto& e : j.at("crashes")) log->entries_.push_back(entry_from(e));
  } catch (const std::exception& e) {
    return fail(std::string("malformed: ") + e.what());
  }
  if (log->entries_.size() > kMaxCrashLogEntries)
    log->entries_.erase(log->entries_.begin(),
                        log->entries_.end() - static_cast<std::ptrdiff_t>(kMaxCrashLogEntries));
  return log;
}

Result<void> CrashLog::append(CrashLogEntry entry) {
  const std::lock_guard lock(mutex_);
  auto next = entries_;
  next.push_back(std::move(entry));
  if (next.size() > kMaxCrashLogEntries)
    next.erase(next.begin(), next.end() - static_cast<std::ptrdiff_t>(kMaxCrashLogEntries));
  Json crashes = Json::array();
  for (const auto& e : next) crashes.push_back(to_json(e));
  const Json j{{"format", kFormat}, {"crashes", crashes}};
  if (auto why = write_file_atomically(path_, json_text(j, 2) + '\n'))
    return Error{{}, {}, path_.string(), Phase::Release, "crash log: " + *why};
  entries_ = std::move(next);
  return {};
}

std::size_t CrashLog::count_recent(std::string_view sha256, std::chrono::milliseconds window,
                                   std::int64_t now_ms) const {
  const std::lock_guard lock(mutex_);
  return static_cast<std::size_t>(std::count_if(entries_.begin(), entries_.end(), [&](const CrashLogEntry& e) {
    return !sha256.empty() && e.sha256 == sha256 && !e.sender && e.at_ms > now_ms - window.count() && e.at_ms <= now_ms;
  }));
}

std::vector<CrashLogEntry> CrashLog::entries() const {
  const std::lock_guard lock(mutex_);
  return entries_;
}

std::optional<std::string> quarantine_reason(const CrashRecord& record, ReleaseStatus release, const CrashLog& log,
                                             const CrashLoopPolicy& policy, std::int64_t now_ms) {
  if (!record.module || (record.cause == CrashCause::Signal && record.sent_by_another_process())) return std::nullopt;
  const CrashedModule& m = *record.module;
  if (release == ReleaseStatus::OnProbation)
    return "crashed moltd in " + m.hook + " (" + record.cause_text() + ") before it was ever permanent";
  const std::size_t crashes = log.count_recent(m.sha256, policy.window, now_ms);
  if (policy.crashes > 0 && crashes >= policy.crashes)
    return "crashed moltd " + std::to_string(crashes) + " times within " + duration_text(policy.window) + " (the last in " +
           m.hook + ", " + record.cause_text() + ")";
  return std::nullopt;
}

QuarantineEntry quarantine_entry(const CrashRecord& record, std::string reason, std::int64_t now_ms) {
  if (!record.module) throw std::logic_error("quarantine_entry: the crash record names no module");
  const CrashedModule& m = *record.module;
  return QuarantineEntry{m.file, m.sha256, m.module, m.version, std::move(reason), now_ms};
}

}  // namespace molt::host
