#include "molt/host/slot/timer_service.hpp"

#include <algorithm>

namespace molt::host {

TimerService::TimerService() : thread_([this] { run(); }) {}

TimerService::~TimerService() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  changed_.notify_all();
  thread_.join();
}

TimerService::Id TimerService::every(std::chrono::milliseconds period, std::function<void(Id)> callback) {
  period = std::max(period, std::chrono::milliseconds(1));
  return every(period, period, std::move(callback));
}

TimerService::Id TimerService::every(std::chrono::milliseconds period, std::chrono::milliseconds first,
                                     std::function<void(Id)> callback) {
  period = std::max(period, std::chrono::milliseconds(1));
  first = std::max(first, std::chrono::milliseconds(0));
  return add(Timer{TimerKind::Periodic, period, std::move(callback), Clock::now() + first});
}

TimerService::Id TimerService::after(std::chrono::milliseconds delay, std::function<void(Id)> callback) {
  delay = std::max(delay, std::chrono::milliseconds(0));
  return add(Timer{TimerKind::Once, std::chrono::milliseconds(0), std::move(callback), Clock::now() + delay});
}

TimerService::Id TimerService::add(Timer timer) {
  Id id;
  {
    std::lock_guard lock(mutex_);
    id = next_id_++;
    timers_.emplace(id, std::move(timer));
  }
  changed_.notify_all();
  return id;
}

void TimerService::cancel(Id id) {
  std::lock_guard lock(mutex_);
  timers_.erase(id);
}

void TimerService::cancel_and_wait(Id id) {
  std::unique_lock lock(mutex_);
  timers_.erase(id);
  if (std::this_thread::get_id() != thread_.get_id()) changed_.wait(lock, [&] { return running_ != id; });
}

void TimerService::run() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    auto next = timers_.end();
    for (auto it = timers_.begin(); it != timers_.end(); ++it)
      if (next == timers_.end() || it->second.due < next->second.due) next = it;
    if (next == timers_.end()) {
      changed_.wait(lock);
      continue;
    }
    if (const Clock::time_point due = next->second.due; Clock::now() < due) {
      // A copy: cancel() may erase the timer while we wait, and wait_until
      // reads its deadline again after waking.
      changed_.wait_until(lock, due);
      continue;  // the set may have changed meanwhile
    }
    const Id id = next->first;
    const auto callback = next->second.callback;  // a copy: cancel() may erase the timer meanwhile
    if (next->second.kind == TimerKind::Once) {
      timers_.erase(next);
    } else {
      // Next due time from the schedule, not from now, so the period does not
      // drift; but never in the past (no burst after a slow callback).
      next->second.due = std::max(next->second.due + next->second.period, Clock::now());
    }
    running_ = id;
    lock.unlock();
    callback(id);
    lock.lock();
    running_ = 0;
    changed_.notify_all();
  }
}

}  // namespace molt::host
