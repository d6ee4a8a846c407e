#include "molt/host/slot/jobs.hpp"

#include "molt/host/common/threads.hpp"
#include "molt/host/slot/module_slot.hpp"

namespace molt::host {

std::string_view to_string(JobState state) noexcept {
  switch (state) {
    case JobState::Running: return "running";
    case JobState::Finished: return "finished";
    case JobState::Failed: return "failed";
    case JobState::Cancelled: return "cancelled";
  }
  return "?";
}

void to_json(nlohmann::json& out, const JobRecord& record) {
  out = {{"name", record.name},   {"state", to_string(record.state)}, {"done", record.done},
         {"total", record.total}, {"steps", record.steps},            {"note", record.note},
         {"started_ms", record.started_ms}, {"updated_ms", record.updated_ms}};
}

void from_json(const nlohmann::json& in, JobRecord& record) {
  record.name = in.at("name").get<std::string>();
  const auto state = in.at("state").get<std::string>();
  if (state == "running") record.state = JobState::Running;
  else if (state == "finished") record.state = JobState::Finished;
  else if (state == "failed") record.state = JobState::Failed;
  else if (state == "cancelled") record.state = JobState::Cancelled;
  else throw nlohmann::json::other_error::create(501, "unknown job state '" + state + "'", &in);
  record.done = in.at("done").get<std::uint64_t>();
  record.total = in.at("total").get<std::uint64_t>();
  record.steps = in.at("steps").get<std::uint64_t>();
  record.note = in.at("note").get<std::string>();
  record.started_ms = in.at("started_ms").get<std::int64_t>();
  record.updated_ms = in.at("updated_ms").get<std::int64_t>();
}

JobRunner::JobRunner(JobRunnerOptions options) : options_(std::move(options)) {
  const unsigned threads = options_.threads == 0 ? 1 : options_.threads;
  for (unsigned i = 0; i < threads; ++i) workers_.emplace_back([this] {
    name_this_thread("molt-jobs");
    work();
  });
}

JobRunner::~JobRunner() { stop(); }

bool JobRunner::stop(std::chrono::milliseconds wait) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && workers_.empty()) return true;
    stopping_ = true;
  }
  changed_.notify_all();
  const auto deadline = wait == std::chrono::milliseconds::max() ? std::chrono::steady_clock::time_point::max()
                                                                  : std::chrono::steady_clock::now() + wait;
  bool all = true;
  for (auto& worker : workers_) all = worker.join_until(deadline) && all;
  workers_.clear();
  return all;
}

void JobRunner::schedule(const std::string& module, const std::string& job, std::chrono::milliseconds delay) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    Entry& entry = entries_[Key{module, job}];
    if (entry.stepping) {
      entry.again = true;
      return;
    }
    if (entry.queued) return;
    entry.queued = true;
    due_.emplace(Clock::now() + delay, Key{module, job});
  }
  changed_.notify_one();
}

void JobRunner::work() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (due_.empty()) {
      changed_.wait(lock);
      continue;
    }
    if (const auto when = due_.begin()->first; Clock::now() < when) {
      changed_.wait_until(lock, when);
      continue;  // the queue may have changed meanwhile
    }
    const Key key = due_.begin()->second;
    due_.erase(due_.begin());
    Entry& entry = entries_[key];
    entry.queued = false;
    entry.stepping = true;
    lock.unlock();

    JobNext next;
    if (const auto slot = options_.find_slot(key.first)) next = slot->run_job_step(key.second);

    lock.lock();
    Entry& after = entries_[key];  // still there: only this worker erases it while it is stepping
    after.stepping = false;
    const bool again = next.again || after.again;
    after.again = false;
    if (again && !stopping_) {
      after.queued = true;
      due_.emplace(Clock::now() + (next.again ? next.pause : std::chrono::milliseconds(0)), key);
      changed_.notify_one();
    } else {
      entries_.erase(key);
    }
  }
}

}  // namespace molt::host
