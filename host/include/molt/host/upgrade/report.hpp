// What one upgrade did: the record an operator reads afterwards.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "molt/host/common/error.hpp"
#include "molt/host/common/histogram.hpp"
#include "molt/host/slot/precopy_report.hpp"
#include "molt/types.hpp"

namespace molt::host {

enum class Outcome {
  Succeeded,   ///< the new version serves
  RolledBack,  ///< failed after the module was paused; the old version serves, state untouched
  Refused,     ///< failed before the module was paused; nothing changed
};
/// Every outcome, in the order of their values.
inline constexpr std::array<Outcome, 3> kOutcomes{Outcome::Succeeded, Outcome::RolledBack, Outcome::Refused};

[[nodiscard]] std::string_view to_string(Outcome outcome) noexcept;
[[nodiscard]] std::string_view to_string(api::Direction direction) noexcept;

/// Wall time spent in each phase of the transaction; zero for phases not reached.
struct PhaseTimes {
  std::chrono::microseconds rehearse{};  ///< the new image run in a child first (module serving, but for taking a state)
  std::chrono::microseconds prepare{};   ///< load image, create and start the new instance (module serving)
  std::chrono::microseconds precopy{};   ///< the state moved while the old version serves (upgrade/precopy.hpp)
  std::chrono::microseconds quiesce{};   ///< wait for in-flight calls (module paused from here…)
  std::chrono::microseconds save{};      ///< old version writes its state
  std::chrono::microseconds migrate{};   ///< new version reads it
  std::chrono::microseconds resume{};    ///< switch and reopen (…to here)
  std::chrono::microseconds rollback{};  ///< undo after a failure
  std::chrono::microseconds cleanup{};   ///< stop the old instance, unload its image (serving again)
};

struct UpgradeReport {
  std::string module;
  api::ModuleVersion from;  ///< version serving before
  api::ModuleVersion to;    ///< version asked for (0 when the image could not be read)
  api::SchemaVersion from_schema;
  api::SchemaVersion to_schema;
  api::Direction direction = api::Direction::Same;
  std::string from_file;
  std::string to_file;
  std::string to_sha256;
  Outcome outcome = Outcome::Refused;
  std::optional<Error> error;  ///< why, unless Succeeded
  PhaseTimes phases;
  std::chrono::microseconds pause{};  ///< calls held back: quiesce start to resume end
  std::uint64_t state_bytes = 0;      ///< size of the state handed over (0 when in memory)
  bool state_in_memory = false;       ///< code-only upgrade: the state object changed hands, not serialized
  std::uint64_t queued_calls = 0;     ///< calls that waited during the pause
  std::chrono::system_clock::time_point started_at;
  /// How the new image's rehearsal went, on which state ("passed in 183 ms
  /// on a state taken for it (2100000 B, by pre-copy in 41 ms)"); empty: not rehearsed.
  std::string rehearsal;
  /// The pre-copy rounds, when the state moved that way (else stop-and-copy,
  /// or in memory).
  std::optional<PrecopyReport> precopy;

  /// One line: "counter v1 -> v2 succeeded: pause 350 us (quiesce 4, save 31, migrate 45, resume 2), state 61 B";
  /// a code-only upgrade says "state in memory" instead of its size.
  [[nodiscard]] std::string summary() const;
};

void to_json(nlohmann::json& out, const PrecopyRound& round);
void to_json(nlohmann::json& out, const PrecopyReport& report);
void to_json(nlohmann::json& out, const UpgradeReport& report);

/// What the upgrades of one module added up to since the host started, for
/// the metrics (GET /-/metrics).
struct UpgradeTotals {
  std::array<std::uint64_t, kOutcomes.size()> outcomes{};  ///< upgrades by outcome, indexed by its value
  std::uint64_t queued_calls = 0;                          ///< calls that waited during their pauses
  /// The pauses of the upgrades that paused the module (succeeded or rolled
  /// back; a refused one never paused it).
  DurationHistogram::Counts pause;

  [[nodiscard]] std::uint64_t count(Outcome outcome) const noexcept {
    return outcomes[static_cast<std::size_t>(outcome)];
  }
  void add(const UpgradeReport& report) noexcept;
};

/// The most recent upgrade reports, oldest first, and the totals of all of
/// them. Thread-safe.
class UpgradeHistory {
 public:
  explicit UpgradeHistory(std::size_t capacity = 1000) : capacity_(capacity) {}

  /// Keeps `report` (forgetting the oldest one past the capacity) and adds it
  /// to its module's totals.
  void record(UpgradeReport report);
  /// The totals by module, of every report recorded, including those the
  /// history no longer keeps: counted as they come, never recounted.
  [[nodiscard]] std::map<std::string, UpgradeTotals, std::less<>> totals() const;
  /// Reports of `module`, or of all modules when empty, oldest first; at
  /// most the `last` most recent of them.
  [[nodiscard]] std::vector<UpgradeReport> list(std::string_view module = {},
                                                std::size_t last = std::numeric_limits<std::size_t>::max()) const;

 private:
  mutable std::mutex mutex_;
  std::size_t capacity_;
  std::deque<UpgradeReport> reports_;
  std::map<std::string, UpgradeTotals, std::less<>> totals_;  ///< one entry per module ever upgraded
};

}  // namespace molt::host
