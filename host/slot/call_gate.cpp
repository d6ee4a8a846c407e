#include "molt/host/slot/call_gate.hpp"

#include <algorithm>
#include <cassert>

namespace molt::host {
namespace {
/// Ids of suspensions, apart from tickets (which count up from 0).
constexpr std::uint64_t kSuspensionBit = 1ull << 63;
}  // namespace

bool CallGate::admissible(std::uint64_t ticket) const {
  if (suspended_ || ticket != next_admit_) return false;
  return mode_ == api::CallMode::Concurrent || inside_ == 0;
}

void CallGate::skip_abandoned() {
  for (auto it = std::find(abandoned_.begin(), abandoned_.end(), next_admit_); it != abandoned_.end();
       it = std::find(abandoned_.begin(), abandoned_.end(), next_admit_)) {
    abandoned_.erase(it);
    ++next_admit_;
  }
}

CallGate::Pass CallGate::admit(std::uint64_t ticket, const char* what) {
  ++next_admit_;
  skip_abandoned();
  ++inside_;
  calls_inside_.push_back(Busy{what, Clock::now(), ticket});
  // In concurrent mode the next ticket may enter at once.
  if (mode_ == api::CallMode::Concurrent && next_admit_ != next_ticket_) changed_.notify_all();
  return Pass(this, ticket);
}

CallGate::Pass CallGate::enter(const char* what) {
  std::unique_lock lock(mutex_);
  const std::uint64_t ticket = next_ticket_++;
  if (!admissible(ticket)) changed_.wait(lock, [&] { return admissible(ticket); });
  return admit(ticket, what);
}

std::optional<CallGate::Pass> CallGate::enter_until(Clock::time_point deadline, const char* what) {
  std::unique_lock lock(mutex_);
  const std::uint64_t ticket = next_ticket_++;
  if (!admissible(ticket) && !changed_.wait_until(lock, deadline, [&] { return admissible(ticket); })) {
    // Give up this place in line: the calls behind it move up.
    if (ticket == next_admit_) {
      ++next_admit_;
      skip_abandoned();
      lock.unlock();
      changed_.notify_all();
    } else {
      abandoned_.push_back(ticket);
    }
    return std::nullopt;
  }
  return admit(ticket, what);
}

void CallGate::leave(std::uint64_t ticket) noexcept {
  {
    std::lock_guard lock(mutex_);
    --inside_;
    const auto it = std::find_if(calls_inside_.begin(), calls_inside_.end(), [&](const Busy& b) { return b.id == ticket; });
    if (it != calls_inside_.end()) calls_inside_.erase(it);
  }
  changed_.notify_all();
}

bool CallGate::suspend(Clock::time_point deadline, const char* what) {
  std::unique_lock lock(mutex_);
  assert(!suspended_);
  suspended_ = true;
  if (changed_.wait_until(lock, deadline, [&] { return inside_ == 0; })) {
    suspended_by_ = Busy{what, Clock::now(), kSuspensionBit | next_ticket_};
    return true;
  }
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
    waiting = next_ticket_ - next_admit_ - abandoned_.size();
  }
  changed_.notify_all();
  return waiting;
}

CallGate::Counts CallGate::counts() const {
  std::lock_guard lock(mutex_);
  Counts counts{inside_, next_ticket_ - next_admit_ - abandoned_.size(), suspended_, std::nullopt};
  if (!calls_inside_.empty()) counts.oldest = calls_inside_.front();  // entered first: running longest
  if (suspended_ && inside_ == 0 && (!counts.oldest || suspended_by_.since < counts.oldest->since))
    counts.oldest = suspended_by_;
  return counts;
}

}  // namespace molt::host
