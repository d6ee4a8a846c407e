// The door in front of a module instance: admits calls, and closes for an
// upgrade once the calls inside have finished.
//
// Calls are admitted in arrival order (a ticket each). In CallMode::Serial at
// most one is inside at a time, like messages to an Erlang process; in
// CallMode::Concurrent any number. While the gate is suspended, arriving
// calls wait in line; none is refused, and on resume they are admitted before
// any call that arrives later.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>

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
    Pass(Pass&& other) noexcept : gate_(std::exchange(other.gate_, nullptr)) {}
    Pass& operator=(Pass&&) = delete;
    ~Pass() {
      if (gate_ != nullptr) gate_->leave();
    }

   private:
    friend class CallGate;
    explicit Pass(CallGate* gate) : gate_(gate) {}
    CallGate* gate_;
  };

  /// Waits for this call's turn (and for the gate to be open).
  [[nodiscard]] Pass enter();

  /// Closes the gate and waits until no call is inside. Returns true when
  /// drained: the gate stays closed until resume(). Returns false when calls
  /// were still inside at `deadline`: the gate is open again, as before.
  /// Precondition: not already suspended.
  [[nodiscard]] bool suspend(Clock::time_point deadline);

  /// Reopens the gate, optionally admitting calls in another mode from now
  /// on (a new module version may declare another CallMode). Returns how many
  /// calls were waiting. Precondition: suspended.
  std::uint64_t resume(std::optional<api::CallMode> mode = std::nullopt);

  struct Counts {
    std::uint64_t inside = 0;   ///< calls running in the module
    std::uint64_t waiting = 0;  ///< calls waiting for their turn
    bool suspended = false;
  };
  [[nodiscard]] Counts counts() const;

 private:
  void leave() noexcept;
  bool admissible(std::uint64_t ticket) const;

  mutable std::mutex mutex_;
  std::condition_variable changed_;
  api::CallMode mode_;
  std::uint64_t next_ticket_ = 0;  ///< ticket of the next call to arrive
  std::uint64_t next_admit_ = 0;   ///< ticket of the next call to admit; every earlier one is admitted
  std::uint64_t inside_ = 0;
  bool suspended_ = false;
};

}  // namespace molt::host
