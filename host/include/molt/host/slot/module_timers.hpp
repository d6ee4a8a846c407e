// One module's timers, by name: what Context::set_timer, set_timer_once and
// cancel_timer change, what the status shows and what a snapshot keeps.
//
// The table is the slot's, not an instance's: a timer set by v1 keeps
// firing after an upgrade, into whichever version runs then. The shared
// TimerService does the waiting; this table knows which of its firings are
// still wanted. A firing goes to the slot's `Due` handler, which takes the
// module's turn (its call gate) and only then asks claim() whether the timer
// is still the one set under that name: set and cancel run inside module
// calls, holding the gate, so they must never wait for a firing (which waits
// for the gate), and a firing that lost the race is dropped at claim().
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "molt/host/slot/timer_service.hpp"

namespace molt::host {

/// A timer as a snapshot keeps it (the host part, host_part.hpp).
struct SavedTimer {
  std::string name;
  TimerKind kind = TimerKind::Once;
  std::chrono::milliseconds period{0};  ///< Periodic: between two firings; Once: 0
  std::chrono::milliseconds due_in{0};  ///< until it fires next, when it was saved; never negative
};

class ModuleTimers {
 public:
  /// Runs on the timer thread when timer `name`, service id `id`, is due.
  /// It must run the timer only if claim(name, id) returns true.
  using Due = std::function<void(const std::string& name, TimerService::Id id)>;

  ModuleTimers(std::shared_ptr<TimerService> service, Due due);
  /// cancel_all().
  ~ModuleTimers();
  ModuleTimers(const ModuleTimers&) = delete;
  ModuleTimers& operator=(const ModuleTimers&) = delete;

  /// Sets timer `name`, replacing one of that name: Periodic fires every
  /// `period` (at least 1 ms), first one period from now; Once fires once,
  /// `period` from now. Never waits for a firing.
  void set(std::string_view name, TimerKind kind, std::chrono::milliseconds period);
  /// Removes timer `name`, if set. Never waits for a firing.
  void cancel(std::string_view name);

  /// Whether firing `id` of `name` is to run: false when the timer was
  /// cancelled or replaced meanwhile. A one-shot is gone once claimed (the
  /// module may set it again); a periodic timer is due one period later.
  [[nodiscard]] bool claim(const std::string& name, TimerService::Id id);

  /// The names of the timers set, in order, for status output.
  [[nodiscard]] std::vector<std::string> names() const;

  /// Every timer, with the time it has left, for a snapshot.
  [[nodiscard]] std::vector<SavedTimer> saved() const;
  /// Sets each of `timers` (from a snapshot) as it was saved: it fires first
  /// after its `due_in`, a periodic one every `period` after that. Timers of
  /// other names stay as they are.
  void restore(const std::vector<SavedTimer>& timers);

  /// Removes every timer and waits for a firing in progress to return. Must
  /// not run on the timer thread, nor while holding what `Due` waits for
  /// (the gate): for the slot's destruction, when no call comes any more.
  void cancel_all();

 private:
  struct Timer {
    TimerService::Id id;
    TimerKind kind;
    std::chrono::milliseconds period;           ///< Periodic: at least 1 ms; Once: 0
    std::chrono::system_clock::time_point due;  ///< when it fires next, for saved()
  };
  /// Replaces timer `name` by one that fires first after `first`. Holds mutex_.
  void set_locked(std::string name, TimerKind kind, std::chrono::milliseconds period,
                  std::chrono::milliseconds first);

  const std::shared_ptr<TimerService> service_;
  const Due due_;
  mutable std::mutex mutex_;
  /// By name. Each entry's id is the only service timer of that name still
  /// wanted; an id not in here is a firing to drop.
  std::map<std::string, Timer, std::less<>> timers_;
};

}  // namespace molt::host
