#include "molt/host/runtime/call_watch.hpp"
#include "molt/host/common/threads.hpp"

#include <algorithm>

namespace molt::host {
namespace {
std::int64_t ms_since(CallGate::Clock::time_point since) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(CallGate::Clock::now() - since).count();
}
}  // namespace

CallWatch::CallWatch(const ModuleTable& table, std::chrono::milliseconds warn_after)
    : table_(table), warn_after_(warn_after) {
  if (warn_after_.count() <= 0) return;
  const auto period = std::clamp<std::chrono::milliseconds>(warn_after_ / 4, std::chrono::milliseconds(10),
                                                            std::chrono::seconds(1));
  thread_ = std::thread([this, period] {
    name_this_thread("molt-callwatch");
    std::unique_lock lock(mutex_);
    while (!wake_.wait_for(lock, period, [this] { return stopping_; })) {
      lock.unlock();
      look();
      lock.lock();
    }
  });
}

CallWatch::~CallWatch() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CallWatch::look() {
  for (const auto& slot : table_.slots()) {
    const SlotStats stats = slot->stats();
    const auto& oldest = stats.gate.oldest;
    auto warned = warned_.find(slot->name());
    if (warned != warned_.end() && (!oldest || oldest->id != warned->second.id)) {
      slot->log().warn("{} returned after {} ms (host.call_warn_ms = {})", warned->second.what,
                       ms_since(warned->second.since), warn_after_.count());
      warned_.erase(warned);
      warned = warned_.end();
    }
    if (!oldest || warned != warned_.end() || CallGate::Clock::now() - oldest->since < warn_after_) continue;
    slot->log().warn("{} has run for {} ms (host.call_warn_ms = {}); {} call(s) waiting for their turn", oldest->what,
                     ms_since(oldest->since), warn_after_.count(), stats.gate.waiting);
    warned_[slot->name()] = Warned{oldest->id, oldest->what, oldest->since};
  }
}

}  // namespace molt::host
