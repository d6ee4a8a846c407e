#include "molt/host/slot/call_gate.hpp"

#include <algorithm>
#include <cassert>

namespace molt::host {
namespace {
// Ids of the busy things apart: tickets (concurrent calls) count up from 0.
constexpr std::uint64_t kSuspensionBit = 1ull << 63;
constexpr std::uint64_t kSerialCallBit = 1ull << 62;
}  // namespace

void CallGate::stamp_serial_call(Clock::time_point now) const noexcept {
  Clock::rep unknown = 0;
  // If a call is inside with its `since` unknown; a call that has left
  // meanwhile leaves its successor stamped a little early, by the time between them.
  if (serial_seq_.load(std::memory_order_acquire) % 2 == 1)
    serial_since_.compare_exchange_strong(unknown, now.time_since_epoch().count(), std::memory_order_relaxed);
}

std::optional<CallGate::Busy> CallGate::serial_call() const noexcept {
  for (int attempt = 0; attempt < 64; ++attempt) {
    const std::uint64_t before = serial_seq_.load(std::memory_order_acquire);
    if (before % 2 == 0) return std::nullopt;  // nobody inside
    const char* what = serial_what_.load(std::memory_order_relaxed);
    const Clock::rep since = serial_since_.load(std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (serial_seq_.load(std::memory_order_relaxed) != before) continue;
    if (since == 0) {  // nobody has looked since it came in: now is the best bound there is
      stamp_serial_call(Clock::now());
      continue;
    }
    return Busy{what, Clock::time_point(Clock::duration(since)), kSerialCallBit | (before / 2)};
  }
  // Calls come and go faster than this can read one: none is stuck.
  return std::nullopt;
}

bool CallGate::admissible(std::uint64_t ticket) const {
  if (suspended_ || ticket != next_admit_) return false;
  return mode_ == api::CallMode::Concurrent || inside() == 0;
}

void CallGate::skip_abandoned() {
  for (auto it = std::find(abandoned_.begin(), abandoned_.end(), next_admit_); it != abandoned_.end();
       it = std::find(abandoned_.begin(), abandoned_.end(), next_admit_)) {
    abandoned_.erase(it);
    ++next_admit_;
  }
}

void CallGate::reopen_fast_path() {
  if (!suspended_ && next_admit_ == next_ticket_) state_.fetch_and(~kQueued, std::memory_order_relaxed);
}

CallGate::Pass CallGate::admit(std::uint64_t ticket, const char* what, Clock::time_point since) {
  ++next_admit_;
  skip_abandoned();
  state_.fetch_add(1, std::memory_order_acq_rel);
  const bool alone = mode_ == api::CallMode::Serial;
  const auto now = Clock::now();  // this call waited: what it began with is its arrival, not its admission
  if (since == Clock::time_point{}) since = now;
  if (alone)
    describe_serial_call(what, since);
  else
    calls_inside_.push_back(Busy{what, since, ticket});
  reopen_fast_path();
  // In concurrent mode the next ticket may enter at once.
  if (!alone && next_admit_ != next_ticket_) changed_.notify_all();
  return Pass(this, ticket, alone);
}

CallGate::Pass CallGate::enter_queued(const char* what, Clock::time_point since) {
  if (since == Clock::time_point{}) since = Clock::now();  // the slow path: the clock is cheap next to it
  stamp_serial_call(since);  // the call this one finds inside began before it
  std::unique_lock lock(mutex_);
  const std::uint64_t ticket = next_ticket_++;
  // From here on no call takes the fast path past this one.
  state_.fetch_or(kQueued, std::memory_order_acq_rel);
  if (!admissible(ticket)) changed_.wait(lock, [&] { return admissible(ticket); });
  return admit(ticket, what, since);
}

std::optional<CallGate::Pass> CallGate::enter_until(Clock::time_point deadline, const char* what) {
  const auto since = Clock::now();
  stamp_serial_call(since);
  std::unique_lock lock(mutex_);
  const std::uint64_t ticket = next_ticket_++;
  state_.fetch_or(kQueued, std::memory_order_acq_rel);
  if (!admissible(ticket) && !changed_.wait_until(lock, deadline, [&] { return admissible(ticket); })) {
    // Give up this place in line: the calls behind it move up.
    if (ticket == next_admit_) {
      ++next_admit_;
      skip_abandoned();
      reopen_fast_path();
      lock.unlock();
      changed_.notify_all();
    } else {
      abandoned_.push_back(ticket);
    }
    return std::nullopt;
  }
  return admit(ticket, what, since);
}

void CallGate::leave(const Pass& pass) noexcept {
  if (pass.alone_) {
    serial_seq_.store(serial_seq_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    const std::uint64_t before = state_.fetch_sub(1, std::memory_order_release);
    if ((before & kQueued) == 0) return;  // nobody waits: nobody to wake
    // Someone waits under the mutex: taking it once orders this leave before
    // their next look at state_, so the notification cannot be missed.
    { const std::lock_guard lock(mutex_); }
    changed_.notify_all();
    return;
  }
  {
    const std::lock_guard lock(mutex_);
    const auto it = std::find_if(calls_inside_.begin(), calls_inside_.end(),
                                 [&](const Busy& b) { return b.id == pass.ticket_; });
    if (it != calls_inside_.end()) calls_inside_.erase(it);
    state_.fetch_sub(1, std::memory_order_release);
  }
  changed_.notify_all();
}

bool CallGate::suspend(Clock::time_point deadline, const char* what) {
  std::unique_lock lock(mutex_);
  assert(!suspended_);
  suspended_ = true;
  state_.fetch_or(kQueued, std::memory_order_acq_rel);
  if (changed_.wait_until(lock, deadline, [&] { return inside() == 0; })) {
    suspended_by_ = Busy{what, Clock::now(), kSuspensionBit | suspensions_++};
    return true;
  }
  suspended_ = false;
  reopen_fast_path();
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
    if (mode) {
      mode_ = *mode;
      // Nobody is inside and kQueued is set: no fast path reads the mode now.
      if (mode_ == api::CallMode::Concurrent)
        state_.fetch_or(kConcurrent, std::memory_order_relaxed);
      else
        state_.fetch_and(~kConcurrent, std::memory_order_relaxed);
    }
    waiting = next_ticket_ - next_admit_ - abandoned_.size();
    reopen_fast_path();
  }
  changed_.notify_all();
  return waiting;
}

CallGate::Counts CallGate::counts() const {
  std::lock_guard lock(mutex_);
  Counts counts{inside(), next_ticket_ - next_admit_ - abandoned_.size(), suspended_, std::nullopt};
  if (mode_ == api::CallMode::Serial)
    counts.oldest = serial_call();
  else if (!calls_inside_.empty())
    counts.oldest = calls_inside_.front();  // entered first: running longest
  if (suspended_ && counts.inside == 0 && (!counts.oldest || suspended_by_.since < counts.oldest->since))
    counts.oldest = suspended_by_;
  return counts;
}

}  // namespace molt::host
