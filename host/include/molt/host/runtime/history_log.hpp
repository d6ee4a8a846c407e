// The history an operator reads with `moltctl history`: every upgrade report
// and every crash, kept across restarts in <run dir>/history.jsonl (one JSON
// object per line, appended as they happen). A crash ends the process, so
// what a later run must be able to show is on disk before it matters: the
// crash itself is appended by the next boot, from its crash record.
//
// Bounded: the last `keep` entries are read at start; the file is rewritten
// with only those once it holds twice as many. A line that is not a JSON
// object (a write cut short by a crash) is skipped.
#pragma once

#include <cstddef>
#include <deque>
#include <filesystem>
#include <mutex>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace molt::host {

class HistoryLog {
 public:
  /// Reads what earlier runs left in `file`; empty `file`: in memory only.
  explicit HistoryLog(std::filesystem::path file = {}, std::size_t keep = 1000);

  /// Adds `entry` (an upgrade report, or {"kind":"crash",...}) and appends it
  /// to the file. A failed write is returned (one line), the entry kept.
  std::optional<std::string> append(const nlohmann::json& entry);

  /// Entries of `module` (all when empty), oldest first, at most the `last`
  /// most recent; earlier runs' first.
  [[nodiscard]] std::vector<nlohmann::json> entries(std::string_view module = {},
                                                    std::size_t last = static_cast<std::size_t>(-1)) const;

  /// Why the file could not be read at start, if it could not (one line).
  [[nodiscard]] const std::optional<std::string>& load_problem() const noexcept { return load_problem_; }

 private:
  const std::filesystem::path file_;
  const std::size_t keep_;
  mutable std::mutex mutex_;
  std::deque<nlohmann::json> entries_;
  std::size_t lines_in_file_ = 0;
  std::optional<std::string> load_problem_;
};

}  // namespace molt::host
