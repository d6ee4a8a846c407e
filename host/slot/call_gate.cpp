#include "molt/host/slot/call_gate.hpp"

#include <cassert>

namespace molt::host {

bool CallGate::admissible(std::uint64_t ticket) const {
  if (suspended_ || ticket != next_admit_) return false;
  return mode_ == api::CallMode::Concurrent || inside_ == 0;
}

CallGate::Pass CallGate::enter() {
  std::unique_lock lock(mutex_);
  const std::uint64_t ticket = next_ticket_++;
  if (!admissible(ticket)) changed_.wait(lock, [&] { return admissible(ticket); });
  ++next_admit_;
  ++inside_;
  // In concurrent mode the next ticket may enter at once.
  if (mode_ == api::CallMode::Concurrent && next_admit_ != next_ticket_) changed_.notify_all();
  return Pass(this);
}

void CallGate::leave() noexcept {
  {
    std::lock_guard lock(mutex_);
    --inside_;
  }
  changed_.notify_all();
}

bool CallGate::suspend(Clock::time_point deadline) {
  std::unique_lock lock(mutex_);
  assert(!suspended_);
  suspended_ = true;
  if (changed_.wait_until(lock, deadline, [&] { return inside_ == 0; })) return true;
  suspended_ = false;
  lock.unlock();
  changed_.notify_all();
  return false;
}

std::uint64_t CallGate::resume(std::optional<api::CallMode> mode) {
  std::uint64_t waiting = 0;
  {
    std::lock_guard lock(mutex_);
    assert(suspended_);
    suspended_ = false;
    if (mode) mode_ = *mode;
    waiting = next_ticket_ - next_admit_;
  }
  changed_.notify_all();
  return waiting;
}

CallGate::Counts CallGate::counts() const {
  std::lock_guard lock(mutex_);
  return Counts{inside_, next_ticket_ - next_admit_, suspended_};
}

}  // namespace molt::host
