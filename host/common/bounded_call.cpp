#include "molt/host/common/bounded_call.hpp"

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

#include "molt/host/common/threads.hpp"

namespace molt::host {

bool run_bounded(std::chrono::steady_clock::time_point deadline, std::function<void()> work) {
  struct Done {
    std::mutex mutex;
    std::condition_variable changed;
    bool done = false;
  };
  auto done = std::make_shared<Done>();
  std::thread([done, work = std::move(work)]() mutable {
    name_this_thread("molt-hostcall");
    work();
    work = nullptr;  // what it captured goes before the caller hears it is done
    {
      std::lock_guard lock(done->mutex);
      done->done = true;
    }
    done->changed.notify_all();
  }).detach();
  std::unique_lock lock(done->mutex);
  return done->changed.wait_until(lock, deadline, [&] { return done->done; });
}

DeadlineThread::DeadlineThread(std::function<void()> body) : done_(std::make_shared<Done>()) {
  thread_ = std::thread([done = done_, body = std::move(body)]() mutable {
    body();
    body = nullptr;
    {
      std::lock_guard lock(done->mutex);
      done->done = true;
    }
    done->changed.notify_all();
  });
}

DeadlineThread::~DeadlineThread() {
  if (thread_.joinable()) thread_.join();
}

bool DeadlineThread::join_until(std::chrono::steady_clock::time_point deadline) {
  if (!thread_.joinable()) return true;
  {
    std::unique_lock lock(done_->mutex);
    if (deadline == std::chrono::steady_clock::time_point::max()) {
      done_->changed.wait(lock, [&] { return done_->done; });
    } else if (!done_->changed.wait_until(lock, deadline, [&] { return done_->done; })) {
      lock.unlock();
      thread_.detach();
      return false;
    }
  }
  thread_.join();
  return true;
}

}  // namespace molt::host
