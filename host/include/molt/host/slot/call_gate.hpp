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
#pragma once

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

  explicit CallGate(api::CallMode mode) : mode_(mode) {}
  CallGate(const CallGate&) = delete;
  CallGate& operator=(const CallGate&) = delete;

  /// Permission to be inside the module; leaving is destroying it.
  class Pass {
   public:
    Pass(Pass&& other) noexcept
        : gate_(std::exchange(other.gate_, nullptr)), ticket_(other.ticket_) {}
    Pass& operator=(Pass&&) = delete;
    ~Pass() {
      if (gate_ != nullptr) gate_->leave(ticket_);
    }

   private:
    friend class CallGate;
    Pass(CallGate* gate, std::uint64_t ticket) : gate_(gate), ticket_(ticket) {}
    CallGate* gate_;
    std::uint64_t ticket_;
  };

  /// Waits for this call's turn (and for the gate to be open). `what` names
  /// the call for counts().oldest: a string literal (it is kept, not copied).
  [[nodiscard]] Pass enter(const char* what = "call");

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
    std::uint64_t id = 0;  ///< the call's ticket; the same busy thing keeps its id
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
  void leave(std::uint64_t ticket) noexcept;
  bool admissible(std::uint64_t ticket) const;
  /// next_admit_ moves past tickets whose callers gave up. Under mutex_.
  void skip_abandoned();
  /// Lets `ticket`, admissible now, in. Under mutex_.
  Pass admit(std::uint64_t ticket, const char* what);

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  api::CallMode mode_;
  std::uint64_t next_ticket_ = 0;  ///< ticket of the next call to arrive
  std::uint64_t next_admit_ = 0;   ///< ticket of the next call to admit; every earlier one is admitted
  std::uint64_t inside_ = 0;
  bool suspended_ = false;
  std::vector<Busy> calls_inside_;           ///< one per call inside, in the order they entered
  std::vector<std::uint64_t> abandoned_;     ///< tickets not yet admitted whose callers gave up
  Busy suspended_by_;                        ///< valid while suspended_
};

}  // namespace molt::host
