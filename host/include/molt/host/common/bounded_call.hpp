// Calls the host makes into module code on its own behalf (a health check, a
// snapshot's save_state, stop) run with a deadline: a module stuck in one
// must cost that module, not the thread that asked (the release watcher, a
// shutdown, the control socket).
//
// No thread can be stopped from outside, so run_bounded runs the work on a
// thread of its own and stops waiting at the deadline; the work goes on
// running there until it returns, if it ever does. It must therefore own
// everything it touches (capture shared_ptrs, not references), and leave
// nothing to the caller after the deadline but what it captured.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

namespace molt::host {

/// Runs `work` on a new thread and waits for it until `deadline`. True: it
/// returned in time (and everything it captured is destroyed). False: it is
/// still running and is left to finish on its own.
[[nodiscard]] bool run_bounded(std::chrono::steady_clock::time_point deadline, std::function<void()> work);

/// A thread that can be waited for until a deadline, which std::thread
/// cannot: the servers' threads, which a module stuck in a call may never
/// give back. Joined on destruction unless it was given up on.
class DeadlineThread {
 public:
  DeadlineThread() = default;
  explicit DeadlineThread(std::function<void()> body);
  DeadlineThread(DeadlineThread&&) noexcept = default;
  DeadlineThread& operator=(DeadlineThread&&) noexcept = default;
  ~DeadlineThread();

  /// Joins the thread if it ends by `deadline`: true. False: it is still
  /// running (in module code that does not return) and is detached; what
  /// it uses must then outlive the process's last orderly step.
  bool join_until(std::chrono::steady_clock::time_point deadline);
  [[nodiscard]] bool joinable() const noexcept { return thread_.joinable(); }

 private:
  struct Done {
    std::mutex mutex;
    std::condition_variable changed;
    bool done = false;
  };
  std::shared_ptr<Done> done_;
  std::thread thread_;
};

}  // namespace molt::host
