// Watches for module calls that do not return: each call into a module that
// runs longer than `host.call_warn_ms` is logged once, by the module's
// logger, with what it is and how many calls wait behind it; and once more
// if it returns after all. What is running now is always visible without
// this (ModuleSlot::stats().gate.oldest: moltctl status, /-/metrics); this
// is for the log an operator reads afterwards.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "molt/host/runtime/module_table.hpp"

namespace molt::host {

class CallWatch {
 public:
  /// Looks at `table`'s modules every quarter of `warn_after` (at most every
  /// second); `warn_after` 0: does nothing.
  CallWatch(const ModuleTable& table, std::chrono::milliseconds warn_after);
  ~CallWatch();
  CallWatch(const CallWatch&) = delete;
  CallWatch& operator=(const CallWatch&) = delete;

  /// One look, now (the thread calls it; tests too).
  void look();

 private:
  struct Warned {
    std::uint64_t id = 0;  ///< CallGate::Busy::id of the call warned about
    std::string what;
    CallGate::Clock::time_point since;
  };

  const ModuleTable& table_;
  const std::chrono::milliseconds warn_after_;
  std::map<std::string, Warned, std::less<>> warned_;  ///< per module; only look() touches it
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace molt::host
