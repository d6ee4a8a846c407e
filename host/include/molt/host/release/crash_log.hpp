// The crashes of the last runs, and when an image is to blame often enough to
// be quarantined.
//
// The boot appends each crash record it reads (common/crash_record.hpp) to
// <run dir>/crashes.json, which keeps the last kMaxCrashLogEntries, written
// atomically. A crash loop (an image that crashes moltd, systemd restarts
// it, the image is loaded again and crashes it again) shows there as the
// same sha256 again and again; quarantine_reason turns that, or a crash of an
// image on probation, into the reason the image is quarantined
// (quarantine.hpp). Without it the loop ends only when systemd gives up
// (StartLimitBurst=) and takes every other module down with it.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "molt/host/common/crash_record.hpp"
#include "molt/host/common/error.hpp"
#include "molt/host/release/quarantine.hpp"
#include "molt/types.hpp"

namespace molt::host {

[[nodiscard]] inline std::filesystem::path crash_log_path(const std::filesystem::path& run_dir) {
  return run_dir / "crashes.json";
}

/// How many crashes the log keeps; the oldest go first.
inline constexpr std::size_t kMaxCrashLogEntries = 100;

/// One crash, as the log keeps it. Module fields are empty when host code
/// was running on the crashing thread.
struct CrashLogEntry {
  std::int64_t at_ms = 0;  ///< the crash record's time_ms
  std::string module;
  api::ModuleVersion version;
  std::string file;
  std::string sha256;
  std::string hook;
  std::string cause;  ///< CrashRecord::cause_text(): "SIGSEGV", "exit(1)"
  /// Set when another process sent the signal (kill -SEGV): logged, but not
  /// counted against the image (count_recent).
  std::optional<std::int64_t> sender;
};

/// The entry a crash record makes.
[[nodiscard]] CrashLogEntry crash_log_entry(const CrashRecord& record);

/// When crashes make a crash loop: `crashes` crashes of one image within
/// `window`. The defaults are issue 14's.
struct CrashLoopPolicy {
  std::size_t crashes = 3;
  std::chrono::milliseconds window = std::chrono::minutes(10);
};

class CrashLog {
 public:
  /// The log recorded at `path` (crash_log_path(run dir)); empty when there is
  /// no file. An Error when it cannot be read: not a regular file (a link or
  /// FIFO is refused, without blocking), too large, or not valid.
  [[nodiscard]] static Result<std::unique_ptr<CrashLog>> open(std::filesystem::path path);

  /// Appends `entry`, dropping the oldest beyond kMaxCrashLogEntries. Written
  /// before it returns; on a failed write nothing changes.
  [[nodiscard]] Result<void> append(CrashLogEntry entry);

  /// How many crashes of the image with this sha256 happened in the `window`
  /// up to `now_ms` (at_ms in (now_ms - window, now_ms]); signals another
  /// process sent do not count.
  [[nodiscard]] std::size_t count_recent(std::string_view sha256, std::chrono::milliseconds window,
                                         std::int64_t now_ms) const;

  /// Every entry, oldest first.
  [[nodiscard]] std::vector<CrashLogEntry> entries() const;

 private:
  explicit CrashLog(std::filesystem::path path) : path_(std::move(path)) {}

  const std::filesystem::path path_;
  mutable std::mutex mutex_;
  std::vector<CrashLogEntry> entries_;  ///< what the file holds, oldest first (guarded by mutex_)
};

/// Whether the crashed image's release was still on probation.
enum class ReleaseStatus { OnProbation, Permanent };

/// Why the image `record` names is to be quarantined, or nothing:
///   "crashed moltd in load_state (SIGSEGV) before it was ever permanent"
///   "crashed moltd 3 times within 10 minutes (the last in handle, SIGABRT)"
/// Nothing for a crash in host code or one another process sent. `log` must
/// already hold `record` (append it first); `now_ms` is the boot's time.
[[nodiscard]] std::optional<std::string> quarantine_reason(const CrashRecord& record, ReleaseStatus release,
                                                           const CrashLog& log, const CrashLoopPolicy& policy,
                                                           std::int64_t now_ms);

/// The quarantine entry for the image `record` names (which must name one),
/// quarantined at `now_ms` for `reason`.
[[nodiscard]] QuarantineEntry quarantine_entry(const CrashRecord& record, std::string reason, std::int64_t now_ms);

}  // namespace molt::host
