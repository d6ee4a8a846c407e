// Jobs: long work a module does in steps, run by the host (see molt/job.hpp
// for the module's side).
//
// Who owns what:
//   - the module's state holds each job's checkpoint (where it is, what it
//     has produced), so it migrates with the state;
//   - the slot holds each job's record (JobRecord: running or not, progress,
//     times), which is the host's, like its timers: it outlives upgrades, and
//     is saved with the state, in the same pause, so a snapshot never holds a
//     checkpoint and a record that disagree;
//   - the JobRunner holds none of it: it only knows which (module, job) pairs
//     to step next and when, and finds the slot by name at each step, so a
//     module removed meanwhile simply stops being stepped.
// A step runs like a call: it waits for the module's turn, so an upgrade or a
// snapshot happens only between two steps (the step boundary).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "molt/host/common/bounded_call.hpp"

namespace molt::host {

class ModuleSlot;

enum class JobState { Running, Finished, Failed, Cancelled };

[[nodiscard]] std::string_view to_string(JobState state) noexcept;

/// The host's record of one job of one module.
struct JobRecord {
  std::string name;
  JobState state = JobState::Running;
  std::uint64_t done = 0;   ///< progress as the last step reported it
  std::uint64_t total = 0;  ///< 0: unknown
  std::uint64_t steps = 0;  ///< steps run since the job was started (a restart continues the count)
  std::string note;         ///< why it failed or was cancelled, or the finished job's summary
  std::int64_t started_ms = 0;  ///< wall clock, ms since the epoch
  std::int64_t updated_ms = 0;
};

void to_json(nlohmann::json& out, const JobRecord& record);
/// Throws nlohmann::json::exception on a malformed record.
void from_json(const nlohmann::json& in, JobRecord& record);

/// What the runner does after a step.
struct JobNext {
  bool again = false;                    ///< step it again (else the job is no longer running)
  std::chrono::milliseconds pause{0};    ///< after this long
};

struct JobRunnerOptions {
  unsigned threads = 2;
  /// The slot serving `module` now, or null when there is none.
  std::function<std::shared_ptr<ModuleSlot>(std::string_view module)> find_slot;
};

/// Worker threads that step the running jobs of every module, round robin:
/// after each step a job goes to the back of the queue (or waits out the
/// pause it asked for), so one long job does not starve the others.
class JobRunner {
 public:
  using Clock = std::chrono::steady_clock;

  explicit JobRunner(JobRunnerOptions options);
  ~JobRunner();  ///< stop()
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  /// Steps `job` of `module` after `delay`. Scheduling a job that is queued
  /// already changes nothing; one that is being stepped right now is stepped
  /// again afterwards even if that step ends it (it was restarted meanwhile).
  void schedule(const std::string& module, const std::string& job, std::chrono::milliseconds delay = {});

  /// Stops the workers after the steps in progress; queued steps are dropped
  /// (the jobs stay running in their records, and continue after a restart).
  /// False when a step was still running after `wait`: its worker is left
  /// running (detached), so the runner must then never be destroyed.
  bool stop(std::chrono::milliseconds wait = std::chrono::milliseconds::max());

 private:
  using Key = std::pair<std::string, std::string>;  // module, job
  struct Entry {
    bool queued = false;   ///< in due_
    bool stepping = false; ///< a worker runs a step of it now
    bool again = false;    ///< scheduled while stepping
  };
  void work();

  const JobRunnerOptions options_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<Key, Entry> entries_;
  std::multimap<Clock::time_point, Key> due_;
  bool stopping_ = false;
  std::vector<DeadlineThread> workers_;  ///< last: started once the rest is initialised
};

}  // namespace molt::host
