#include "molt/host/slot/module_jobs.hpp"

#include <algorithm>
#include <chrono>
#include <stdexcept>

namespace molt::host {
namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

ModuleJobs::ModuleJobs(std::string module, std::shared_ptr<spdlog::logger> logger, std::shared_ptr<JobRunner> runner)
    : module_(std::move(module)), logger_(std::move(logger)), runner_(std::move(runner)) {}

// Runs inside a module call (the module holds the gate): records only, and
// leaves the stepping to the runner, which waits for the gate like any call.
bool ModuleJobs::start(std::string_view name) {
  {
    std::lock_guard lock(mutex_);
    if (auto it = records_.find(name); it != records_.end()) {
      if (it->second.state == JobState::Running) return false;
      records_.erase(it);
    }
    if (records_.size() >= kMaxJobs) {  // forget the job that ended longest ago
      auto oldest = records_.end();
      for (auto it = records_.begin(); it != records_.end(); ++it)
        if (it->second.state != JobState::Running &&
            (oldest == records_.end() || it->second.updated_ms < oldest->second.updated_ms))
          oldest = it;
      if (oldest == records_.end())
        throw std::length_error("job '" + std::string(name) + "' not started: " + std::to_string(kMaxJobs) +
                                " jobs are running already, the most a module may have");
      records_.erase(oldest);
    }
    JobRecord record;
    record.name = std::string(name);
    record.started_ms = record.updated_ms = now_ms();
    records_.emplace(record.name, record);
  }
  logger_->info("job '{}' started", name);
  if (runner_) runner_->schedule(module_, std::string(name));
  return true;
}

bool ModuleJobs::running(std::string_view name) const {
  std::lock_guard lock(mutex_);
  const auto it = records_.find(name);
  return it != records_.end() && it->second.state == JobState::Running;
}

JobNext ModuleJobs::record_step(std::string_view job, api::ModuleVersion version,
                                const std::optional<std::string>& failure, const api::JobStep& step) {
  std::lock_guard lock(mutex_);
  const auto it = records_.find(job);
  if (it == records_.end()) return {};
  JobRecord& record = it->second;
  ++record.steps;
  record.updated_ms = now_ms();
  if (failure) {
    if (record.state == JobState::Running) {
      record.state = JobState::Failed;
      record.note = "step " + std::to_string(record.steps) + " on v" + std::to_string(version.value) + ": " + *failure;
      logger_->error("job '{}' failed at step {} on v{}: {} (the module keeps serving; moltctl jobs restart {} {} "
                     "continues it from its checkpoint)",
                     job, record.steps, version.value, *failure, module_, job);
    }
    return {};
  }
  record.done = step.done;
  record.total = step.total;
  if (step.finished) {
    if (record.state == JobState::Running) {
      record.state = JobState::Finished;
      record.note = step.summary.substr(0, 200);
      logger_->info("job '{}' finished after {} step(s), {} s: {}", job, record.steps,
                    (record.updated_ms - record.started_ms) / 1000, record.note);
    }
    return {};
  }
  if (record.state != JobState::Running) return {};  // cancelled during the step: it keeps its progress
  return JobNext{true, std::max(step.pause, std::chrono::milliseconds(0))};
}

std::vector<JobRecord> ModuleJobs::records() const {
  std::lock_guard lock(mutex_);
  std::vector<JobRecord> records;
  for (const auto& [name, record] : records_) records.push_back(record);
  return records;
}

Result<void> ModuleJobs::cancel(std::string_view job) {
  std::lock_guard lock(mutex_);
  const auto it = records_.find(job);
  if (it == records_.end()) return Error{module_, {}, {}, Phase::Call, "no job '" + std::string(job) + "'"};
  JobRecord& record = it->second;
  if (record.state != JobState::Running)
    return Error{module_, {}, {}, Phase::Call,
                 "job '" + std::string(job) + "' is " + std::string(to_string(record.state)) + ", not running"};
  record.state = JobState::Cancelled;
  record.note = "cancelled by the operator at " + std::to_string(record.done) + "/" + std::to_string(record.total);
  record.updated_ms = now_ms();
  logger_->info("job '{}' cancelled after {} step(s); its checkpoint stays in the state", job, record.steps);
  return {};
}

Result<void> ModuleJobs::restart(std::string_view job) {
  {
    std::lock_guard lock(mutex_);
    const auto it = records_.find(job);
    if (it == records_.end()) return Error{module_, {}, {}, Phase::Call, "no job '" + std::string(job) + "'"};
    JobRecord& record = it->second;
    if (record.state == JobState::Running || record.state == JobState::Finished)
      return Error{module_, {}, {}, Phase::Call,
                   "job '" + std::string(job) + "' is " + std::string(to_string(record.state)) +
                       "; only a failed or cancelled job restarts"};
    record.state = JobState::Running;
    record.note.clear();
    record.updated_ms = now_ms();
  }
  logger_->info("job '{}' restarted from its checkpoint", job);
  if (runner_) runner_->schedule(module_, std::string(job));
  return {};
}

void ModuleJobs::replace(std::vector<JobRecord> records) {
  std::map<std::string, JobRecord, std::less<>> by_name;
  for (auto& record : records)
    if (by_name.size() < kMaxJobs) by_name.emplace(record.name, std::move(record));
  std::vector<std::string> running;
  {
    std::lock_guard lock(mutex_);
    records_ = std::move(by_name);
    for (const auto& [name, record] : records_)
      if (record.state == JobState::Running) running.push_back(name);
  }
  for (const auto& job : running) {
    logger_->info("job '{}' continues from its checkpoint", job);
    if (runner_) runner_->schedule(module_, job);
  }
}

}  // namespace molt::host
