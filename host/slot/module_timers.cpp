#include "molt/host/slot/module_timers.hpp"

#include <algorithm>

namespace molt::host {

ModuleTimers::ModuleTimers(std::shared_ptr<TimerService> service, Due due)
    : service_(std::move(service)), due_(std::move(due)) {}

ModuleTimers::~ModuleTimers() { cancel_all(); }

void ModuleTimers::set(std::string_view name, TimerKind kind, std::chrono::milliseconds period) {
  std::lock_guard lock(mutex_);
  set_locked(std::string(name), kind, period, period);
}

void ModuleTimers::set_locked(std::string name, TimerKind kind, std::chrono::milliseconds period,
                              std::chrono::milliseconds first) {
  if (auto it = timers_.find(name); it != timers_.end()) {
    service_->cancel(it->second.id);  // not cancel_and_wait: see the header
    timers_.erase(it);
  }
  first = std::max(first, std::chrono::milliseconds(0));
  period = kind == TimerKind::Once ? std::chrono::milliseconds(0) : std::max(period, std::chrono::milliseconds(1));
  auto fire = [this, name](TimerService::Id fired) { due_(name, fired); };
  const TimerService::Id id = kind == TimerKind::Once ? service_->after(first, std::move(fire))
                                                      : service_->every(period, first, std::move(fire));
  timers_.emplace(std::move(name), Timer{id, kind, period, std::chrono::system_clock::now() + first});
}

void ModuleTimers::cancel(std::string_view name) {
  std::lock_guard lock(mutex_);
  if (auto it = timers_.find(name); it != timers_.end()) {
    service_->cancel(it->second.id);
    timers_.erase(it);
  }
}

bool ModuleTimers::claim(const std::string& name, TimerService::Id id) {
  std::lock_guard lock(mutex_);
  const auto it = timers_.find(name);
  if (it == timers_.end() || it->second.id != id) return false;  // cancelled or replaced meanwhile
  switch (it->second.kind) {
    case TimerKind::Once: timers_.erase(it); break;
    case TimerKind::Periodic: it->second.due = std::chrono::system_clock::now() + it->second.period; break;
  }
  return true;
}

std::vector<std::string> ModuleTimers::names() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> names;
  for (const auto& [name, timer] : timers_) names.push_back(name);
  return names;
}

std::vector<SavedTimer> ModuleTimers::saved() const {
  std::lock_guard lock(mutex_);
  const auto now = std::chrono::system_clock::now();
  std::vector<SavedTimer> saved;
  for (const auto& [name, timer] : timers_) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(timer.due - now);
    saved.push_back({name, timer.kind, timer.period, std::max(left, std::chrono::milliseconds(0))});
  }
  return saved;
}

void ModuleTimers::restore(const std::vector<SavedTimer>& timers) {
  std::lock_guard lock(mutex_);
  for (const auto& timer : timers) set_locked(timer.name, timer.kind, timer.period, timer.due_in);
}

void ModuleTimers::cancel_all() {
  std::map<std::string, Timer, std::less<>> timers;
  {
    std::lock_guard lock(mutex_);
    timers.swap(timers_);
  }
  // Outside the lock: a firing in progress takes it, in claim(), to see that
  // its timer is gone.
  for (const auto& [name, timer] : timers) service_->cancel_and_wait(timer.id);
}

}  // namespace molt::host
