// Host-owned timers. Modules own no threads; they ask the host (through
// Context::set_timer) and the host calls them back, one thread for all.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

namespace molt::host {

class TimerService {
 public:
  using Clock = std::chrono::steady_clock;
  using Id = std::uint64_t;

  TimerService();
  ~TimerService();  ///< stops the thread; callbacks not yet run are dropped
  TimerService(const TimerService&) = delete;
  TimerService& operator=(const TimerService&) = delete;

  /// Runs `callback(id)` every `period` on the timer thread, first one period
  /// from now; returns that id.
  Id every(std::chrono::milliseconds period, std::function<void(Id)> callback);

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
    std::chrono::milliseconds period;  ///< 0: once
    std::function<void(Id)> callback;
    Clock::time_point due;
  };
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
