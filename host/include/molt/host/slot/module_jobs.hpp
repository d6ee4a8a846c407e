// One module's job records, by name (see jobs.hpp for who owns what).
//
// The records are the slot's, like its timers: they outlive upgrades and go
// into snapshots (the host part). This class keeps them and tells the
// JobRunner which jobs to step; the slot runs each step as a module call and
// hands the outcome back to record_step().
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"
#include "molt/host/slot/jobs.hpp"
#include "molt/job.hpp"
#include "molt/types.hpp"

namespace molt::host {

class ModuleJobs {
 public:
  /// The most records a module has: the oldest ended ones go first.
  static constexpr std::size_t kMaxJobs = 256;

  /// The jobs of `module`, logged to `logger`, stepped by `runner` (when
  /// null, jobs are recorded but not run).
  ModuleJobs(std::string module, std::shared_ptr<spdlog::logger> logger, std::shared_ptr<JobRunner> runner);

  /// Records job `name` as running and schedules its first step (for
  /// Context::start_job, inside a module call: it never waits for a step).
  /// False, and nothing changes, when a job of that name is running. A job
  /// that ended starts anew. Throws std::length_error when kMaxJobs are running.
  bool start(std::string_view name);

  /// Whether job `name` is running, i.e. its next step is wanted.
  [[nodiscard]] bool running(std::string_view name) const;

  /// Records the step of `job` that version `version` just ran: `failure`
  /// (why it threw) fails the job, else `step` is its progress. Whether and
  /// when to step it again (not if it ended, or was cancelled meanwhile).
  JobNext record_step(std::string_view job, api::ModuleVersion version, const std::optional<std::string>& failure,
                      const api::JobStep& step);

  /// Every record, by name.
  [[nodiscard]] std::vector<JobRecord> records() const;

  /// Stops stepping a running job after the step in progress, if any.
  Result<void> cancel(std::string_view job);
  /// A failed or cancelled job runs again, from the checkpoint in the state.
  Result<void> restart(std::string_view job);

  /// Replaces every record with `records` (from a snapshot: the first
  /// kMaxJobs names, the first record of a name) and schedules the running
  /// ones, which continue from the checkpoints in the state.
  void replace(std::vector<JobRecord> records);

 private:
  const std::string module_;
  const std::shared_ptr<spdlog::logger> logger_;
  const std::shared_ptr<JobRunner> runner_;
  mutable std::mutex mutex_;
  /// By name; at most kMaxJobs.
  std::map<std::string, JobRecord, std::less<>> records_;
};

}  // namespace molt::host
