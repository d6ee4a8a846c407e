// Host-owned timers. Modules own no threads; they ask the host (through
// Context::set_timer) and the host calls them back, one thread for all.
// This is the clock and the thread; which timers a module has, by name, is
// ModuleTimers' (module_timers.hpp).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace molt::host {

/// Whether a timer fires again and again, one period apart, or once.
enum class TimerKind { Periodic, Once };

class TimerService {
 public:
  using Clock = std::chrono::steady_clock;
  using Id = std::uint64_t;

  TimerService();
  ~TimerService();  ///< stops the thread; callbacks not yet run are dropped
  TimerService(const TimerService&) = delete;
  TimerService& operator=(const TimerService&) = delete;

  /// Runs `callback(id)` every `period` (at least 1 ms) on the timer thread,
  /// first one period from now; returns that id.
  Id every(std::chrono::milliseconds period, std::function<void(Id)> callback);

  /// every(), but the first run is `first` from now (a periodic timer
  /// restored from a snapshot resumes with the time it had left).
  Id every(std::chrono::milliseconds period, std::chrono::milliseconds first, std::function<void(Id)> callback);

  /// Runs `callback(id)` once, `delay` from now, on the timer thread.
  Id after(std::chrono::milliseconds delay, std::function<void(Id)> callback);

  /// Cancels timer `id`: it will not be started again. A callback already
  /// running (or about to) may still finish; use cancel_and_wait to be sure.
  void cancel(Id id);

  /// cancel(), then waits until the callback is not running. Must not be
  /// called from the callback, nor while holding anything it waits for.
  void cancel_and_wait(Id id);

 private:
  struct Timer {
    TimerKind kind;
    std::chrono::milliseconds period;  ///< Periodic: at least 1 ms; Once: unused
    std::function<void(Id)> callback;
    Clock::time_point due;
  };
  Id add(Timer timer);
  void run();

  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<Id, Timer> timers_;
  Id next_id_ = 1;
  Id running_ = 0;  ///< the timer whose callback is running, 0 if none
  bool stopping_ = false;
  std::thread thread_;  ///< last: started once the rest is initialised
};

}  // namespace molt::host
