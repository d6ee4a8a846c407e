#include "molt/host/slot/precopy.hpp"

#include <algorithm>
#include <thread>

#include "molt/host/common/elapsed.hpp"
#include "molt/host/common/module_site.hpp"
#include "molt/host/common/threads.hpp"
#include "molt/host/slot/state_hooks.hpp"
#include "molt/host/slot/upgrade_access.hpp"
#include "molt/host/state/buffers.hpp"

namespace molt::host {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;


/// No part is larger than this: a module that ignores its byte budget is
/// refused rather than allowed to take the host's memory.
constexpr std::uint64_t kMaxPartBytes = 256ull << 20;

}  // namespace

// --- PartReceiver ------------------------------------------------------------

PartReceiver::PartReceiver(Apply apply, std::uint64_t max_queued_bytes)
    : apply_(std::move(apply)), max_queued_bytes_(max_queued_bytes) {
  thread_ = std::thread([this] { run(); });
}

PartReceiver::PartReceiver(const ModuleSlot::Live& to, api::Migration migration, std::uint64_t max_queued_bytes)
    : PartReceiver(
          [&to, migration = std::move(migration)](std::string_view bytes, api::TransferPart part) {
            return receive_part_from_bytes(to.hooks(), bytes, migration, part);
          },
          max_queued_bytes) {}

PartReceiver::~PartReceiver() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    queue_.clear();
    queued_bytes_ = 0;
  }
  changed_.notify_all();
  thread_.join();
}

bool PartReceiver::push(std::string bytes, api::TransferPart part) {
  std::unique_lock lock(mutex_);
  // At least one part is always let in, however large: the bound is on what
  // waits, not on a part.
  changed_.wait(lock, [&] { return failure_ || queue_.empty() || queued_bytes_ + bytes.size() <= max_queued_bytes_; });
  if (failure_) return false;
  queued_bytes_ += bytes.size();
  queue_.emplace_back(std::move(bytes), part);
  changed_.notify_all();
  return true;
}

std::optional<std::string> PartReceiver::drain() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return failure_ || (queue_.empty() && !applying_); });
  return failure_;
}

std::optional<std::string> PartReceiver::failure() const {
  std::lock_guard lock(mutex_);
  return failure_;
}

void PartReceiver::run() {
  name_this_thread("molt-receive");
  std::unique_lock lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    auto [bytes, part] = std::move(queue_.front());
    queue_.pop_front();
    applying_ = true;
    lock.unlock();
    auto failure = apply_(bytes, part);
    lock.lock();
    applying_ = false;
    queued_bytes_ -= bytes.size();
    if (failure && !failure_) failure_ = std::move(failure);
    changed_.notify_all();
  }
}

// --- PreCopy -----------------------------------------------------------------

PreCopy::PreCopy(ModuleSlot::UpgradeAccess& access, const ModuleSlot::Live& to, const api::SaveTarget& target,
                 api::Migration migration, const PrecopyOptions& options, Progress progress)
    : access_(access),
      options_(options),
      module_(access.live().image->info().name),
      target_(target),
      progress_(std::move(progress)),
      receiver_(to, std::move(migration), options.max_queued_bytes) {}

PreCopy::PreCopy(ModuleSlot::UpgradeAccess& access, PartReceiver::Apply apply, const api::SaveTarget& target,
                 const PrecopyOptions& options, Progress progress)
    : access_(access),
      options_(options),
      module_(access.live().image->info().name),
      target_(target),
      progress_(std::move(progress)),
      receiver_(std::move(apply), options.max_queued_bytes) {}

PreCopy::~PreCopy() {
  if (begun_ && !ended_) access_.transfer_end();
}

Error PreCopy::failed(std::string reason) const {
  const auto& info = access_.live().image->info();
  return Error{module_, info.version, access_.live().image->source().string(), Phase::Save, std::move(reason)};
}

Result<PrecopyRound> PreCopy::round(bool chunks) {
  PrecopyRound round;
  const auto started = Clock::now();
  for (bool done = false; !done;) {
    StringSink sink(kMaxPartBytes);
    const auto called = Clock::now();
    auto step = chunks ? access_.transfer_chunk(options_.budget, sink) : access_.transfer_delta(options_.budget, sink);
    round.longest_call = std::max(round.longest_call, since(called));
    if (sink.over_limit())
      return failed("a pre-copy part is larger than " + std::to_string(kMaxPartBytes) + " bytes (budget " +
                    std::to_string(options_.budget.max_bytes) + ")");
    if (!step) return std::move(step).error();
    done = step->done;
    ++round.parts;
    round.entries += step->entries;
    round.bytes += sink.size();
    if (progress_) progress_(static_cast<unsigned>(report_.rounds.size()), round);
    if (!receiver_.push(sink.take(), chunks ? api::TransferPart::Chunk : api::TransferPart::Delta))
      break;  // the receiver failed: run() reports it
    if (give_way_ && give_way_()) {
      gave_way_ = true;
      return failed("pre-copy gave way after " + std::to_string(round.parts) + " parts");
    }
    // A serving thread woken on this core while the part was taken would
    // otherwise wait for this thread's time slice to end (perf sched: up to
    // 5 ms): the next part can wait for it instead.
    std::this_thread::yield();
  }
  round.took = since(started);
  return round;
}

Result<void> PreCopy::run() {
  if (auto began = access_.transfer_begin(target_); !began) return std::move(began).error();
  begun_ = true;
  unsigned not_shrinking = 0;
  for (unsigned k = 0;; ++k) {
    auto done = round(k == 0);
    if (!done) return std::move(done).error();
    // The new instance catches up while the old one still serves. What is
    // written meanwhile is the next round's (or the pause's): a round is
    // short only if it and the wait after it are.
    const auto waiting = Clock::now();
    if (auto failure = receiver_.drain()) return Error{module_, {}, {}, Phase::Migrate, *failure};
    done->caught_up = since(waiting);
    report_.caught_up += done->caught_up;
    report_.rounds.push_back(*done);
    const PrecopyRound& last = report_.rounds.back();
    if (k == 0) continue;  // the whole state: then what changed meanwhile
    if (last.entries == 0) {  // the round before was applied before it began: nothing to wait for
      report_.ended = "nothing changed";
      report_.converged = true;
      break;
    }
    if (last.with_catch_up() <= options_.pause_target) {
      report_.ended = "converged";
      report_.converged = true;
      break;
    }
    const PrecopyRound& before = report_.rounds[report_.rounds.size() - 2];
    not_shrinking = k >= 2 && last.entries >= before.entries ? not_shrinking + 1 : 0;
    std::string why;
    if (not_shrinking >= 2)
      why = "writes came faster than they were moved: " + std::to_string(last.entries) + " entries in round " +
            std::to_string(k) + " after " + std::to_string(before.entries);
    else if (k >= options_.max_rounds)
      why = std::to_string(k) + " rounds (host.precopy_max_rounds), the last " + std::to_string(last.entries) +
            " entries in " + std::to_string(last.with_catch_up().count() / 1000) + " ms";
    if (!why.empty()) {
      report_.ended = "did not converge: " + why;
      if (options_.refuse_unconverged) return failed("pre-copy " + report_.ended + " (host.precopy_fallback = \"refuse\")");
      report_.ended += "; the rest moved in the pause";
      break;
    }
  }
  return {};
}

Result<void> PreCopy::finish() {
  const auto started = Clock::now();
  StringSink sink(kMaxPartBytes);
  auto step = access_.transfer_final(sink);
  access_.transfer_end();
  ended_ = true;
  if (sink.over_limit())
    return failed("the final pre-copy part is larger than " + std::to_string(kMaxPartBytes) + " bytes");
  if (!step) return std::move(step).error();
  report_.final.parts = 1;
  report_.final.entries = step->entries;
  report_.final.bytes = sink.size();
  if (!receiver_.push(sink.take(), api::TransferPart::Final) || receiver_.drain())
    return Error{module_, {}, {}, Phase::Migrate, receiver_.failure().value_or("receive_part failed")};
  report_.final.took = since(started);
  return {};
}

}  // namespace molt::host
