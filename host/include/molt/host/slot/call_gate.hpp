// The door in front of a module instance: admits calls, and closes for an
// upgrade once the calls inside have finished.
//
// Calls are admitted in arrival order (a ticket each). In CallMode::Serial at
// most one is inside at a time, like messages to an Erlang process; in
// CallMode::Concurrent any number. While the gate is suspended, arriving
// calls wait in line; none is refused, and on resume they are admitted before
// any call that arrives later.
//
// The gate also knows what is inside: each call's name and since when, and
// while suspended, what the host is doing in the module (a snapshot, an
// upgrade). counts().oldest is the longest-running of those: a module stuck
// in a call shows there (moltctl status, /-/metrics, host.call_warn_ms).
// A caller that must not wait forever for its turn (the host's own calls:
// health checks) asks with a deadline; if it gives up, its place in line is
// skipped and the calls behind it keep their order.
//
// The fast path. Every call through a module pays for this gate, so the
// common case, a serial module that is open with nobody inside and nobody
// waiting, costs one compare-and-swap to come in and one atomic subtraction
// to leave: no mutex, no condition variable, no system call. It is decided
// by one word, state_, which holds the number of calls inside and two
// flags: kConcurrent (the mode) and kQueued, set under the mutex whenever
// the ticket line decides (someone waits, the gate is suspended or closing).
// A call that finds the word 0 comes straight in; any other value sends it to
// the ticketed path under the mutex, which is the gate described above. The
// order of arrival is kept because the fast path is only taken when nobody
// is in line. A call leaving sees in the same atomic operation whether
// anyone waits, and only then takes the mutex to wake them.
//
// The call inside a serial module is described by one record (its name, an
// id, and since when), written by that call without a lock and read by
// counts() as a seqlock. Reading the clock for `since` would cost a call
// more than the rest of the fast path, so a caller that has read it anyway
// (the slot, when it times the call for its histogram) hands it in, and one
// that has not leaves it unknown: then the first to look stamps it with the
// time it looked, a call arriving behind it (which reads the clock anyway,
// queuing) or counts() (moltctl status, the call watch). A call stuck in a
// busy module is stamped within microseconds, by the next call; in an idle
// one, by the call watch within its period (host.call_warn_ms / 4).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "molt/module.hpp"

namespace molt::host {

class CallGate {
 public:
  using Clock = std::chrono::steady_clock;

  explicit CallGate(api::CallMode mode) : state_(mode == api::CallMode::Concurrent ? kConcurrent : 0), mode_(mode) {}
  CallGate(const CallGate&) = delete;
  CallGate& operator=(const CallGate&) = delete;

  /// Permission to be inside the module; leaving is destroying it.
  class Pass {
   public:
    Pass(Pass&& other) noexcept
        : gate_(std::exchange(other.gate_, nullptr)), ticket_(other.ticket_), alone_(other.alone_) {}
    Pass& operator=(Pass&&) = delete;
    ~Pass() {
      if (gate_ != nullptr) gate_->leave(*this);
    }
    /// Whether this call is alone in the module until it leaves (a serial
    /// gate): what it updates for the host needs no atomic read-modify-write.
    [[nodiscard]] bool alone() const noexcept { return alone_; }

   private:
    friend class CallGate;
    Pass(CallGate* gate, std::uint64_t ticket, bool alone) : gate_(gate), ticket_(ticket), alone_(alone) {}
    CallGate* gate_;
    std::uint64_t ticket_;  ///< in a concurrent gate; unused in a serial one
    bool alone_;
  };

  /// Waits for this call's turn (and for the gate to be open). `what` names
  /// the call for counts().oldest: a string literal (it is kept, not copied).
  /// `since`: when the call began, if the caller read the clock; else
  /// Clock::time_point{}, and the gate finds out (header comment).
  [[nodiscard]] Pass enter(const char* what = "call", Clock::time_point since = {}) {
    std::uint64_t open = 0;  // serial, open, nobody inside, nobody waiting
    if (state_.compare_exchange_strong(open, 1, std::memory_order_acquire, std::memory_order_relaxed)) {
      describe_serial_call(what, since);
      return Pass(this, 0, true);
    }
    return enter_queued(what, since);
  }

  /// enter(), giving up at `deadline`: then nothing, and the calls that
  /// arrived after this one are admitted as if it had never come.
  [[nodiscard]] std::optional<Pass> enter_until(Clock::time_point deadline, const char* what = "call");

  /// Closes the gate and waits until no call is inside. Returns true when
  /// drained: the gate stays closed until resume(), and counts().oldest
  /// shows `what` (a string literal) from now. Returns false when calls
  /// were still inside at `deadline`: the gate is open again, as before.
  /// Precondition: not already suspended.
  [[nodiscard]] bool suspend(Clock::time_point deadline, const char* what = "upgrade");

  /// Reopens the gate, optionally admitting calls in another mode from now
  /// on (a new module version may declare another CallMode). Returns how many
  /// calls were waiting. Precondition: suspended.
  std::uint64_t resume(std::optional<api::CallMode> mode = std::nullopt);

  /// Something in the module: a call, or the host while suspended.
  struct Busy {
    const char* what = "";
    Clock::time_point since;
    std::uint64_t id = 0;  ///< the same busy thing keeps its id; another one has another
  };

  struct Counts {
    std::uint64_t inside = 0;   ///< calls running in the module
    std::uint64_t waiting = 0;  ///< calls waiting for their turn
    bool suspended = false;
    /// The longest-running call inside, or what holds the gate suspended if
    /// that began earlier; none when the module is idle.
    std::optional<Busy> oldest;
  };
  [[nodiscard]] Counts counts() const;

 private:
  static constexpr std::uint64_t kInsideMask = (1ull << 32) - 1;
  static constexpr std::uint64_t kConcurrent = 1ull << 61;  ///< mode_ == Concurrent: no fast path
  static constexpr std::uint64_t kQueued = 1ull << 62;      ///< the ticket line decides: no fast path

  /// The slow path: a ticket, and waiting for its turn under mutex_.
  Pass enter_queued(const char* what, Clock::time_point since);
  /// Stamps the serial call inside with `now` if its `since` is unknown.
  void stamp_serial_call(Clock::time_point now) const noexcept;
  void leave(const Pass& pass) noexcept;
  bool admissible(std::uint64_t ticket) const;
  /// next_admit_ moves past tickets whose callers gave up. Under mutex_.
  void skip_abandoned();
  /// Lets `ticket`, admissible now, in. Under mutex_.
  Pass admit(std::uint64_t ticket, const char* what, Clock::time_point since);
  /// Clears kQueued when nobody waits and the gate is open. Under mutex_.
  void reopen_fast_path();
  [[nodiscard]] std::uint64_t inside() const noexcept { return state_.load(std::memory_order_acquire) & kInsideMask; }

  /// The serial call's record: written only by the call inside (alone).
  void describe_serial_call(const char* what, Clock::time_point since) noexcept {
    const std::uint64_t seq = serial_seq_.load(std::memory_order_relaxed) + 1;  // odd: a call is inside
    serial_seq_.store(seq, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    serial_what_.store(what, std::memory_order_relaxed);
    serial_since_.store(since.time_since_epoch().count(), std::memory_order_relaxed);
  }
  /// The serial call's record, if a call is inside: read as a seqlock.
  [[nodiscard]] std::optional<Busy> serial_call() const noexcept;

  std::atomic<std::uint64_t> state_;  ///< calls inside | kConcurrent | kQueued

  // The serial call inside (seqlock): serial_seq_ is odd while it is inside,
  // and its id is derived from it, so every serial call has another.
  std::atomic<std::uint64_t> serial_seq_{0};
  std::atomic<const char*> serial_what_{""};
  mutable std::atomic<Clock::rep> serial_since_{0};  ///< 0: not known yet (stamp_serial_call)

  // The ticket line, under mutex_.
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  api::CallMode mode_;
  std::uint64_t next_ticket_ = 0;  ///< ticket of the next call to arrive
  std::uint64_t next_admit_ = 0;   ///< ticket of the next call to admit; every earlier one is admitted
  bool suspended_ = false;
  std::vector<Busy> calls_inside_;        ///< concurrent gate: one per call inside, in the order they entered
  std::vector<std::uint64_t> abandoned_;  ///< tickets not yet admitted whose callers gave up
  Busy suspended_by_;                     ///< valid while suspended_
  std::uint64_t suspensions_ = 0;         ///< so far: each suspension's id
};

}  // namespace molt::host
