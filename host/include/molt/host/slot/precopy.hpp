// Pre-copy: moves a module's state to a new instance while the old one
// serves (molt/transfer.hpp says what a module implements for it). Used by
// the upgrade transaction between prepare and quiesce (upgrade/transaction.cpp),
// and by snapshots (ModuleSlot::save_state).
//
//   round 0   chunks of the whole state, each one call through the old
//             instance's gate within a budget (a client waits for one
//             chunk at most);
//   round k   the entries that changed during round k-1, the same way;
//   final     in the pause: the rest of the changes and the per-connection
//             state (PreCopy::finish).
// A receiver thread applies each part to the new instance as it arrives,
// in order (receive_part); the sender waits only when the parts queued for
// it pass a bound. Before the pause the sender also waits for the receiver
// to catch up, so the pause holds only the final part.
//
// The rounds stop when one took no longer than the pause target (its
// changes would fit in a pause), when one moved nothing, after max_rounds,
// or when two rounds in a row did not shrink (writes come faster than the
// transfer moves them). The last two are "did not converge": by
// configuration the upgrade then moves the rest in the pause anyway, or is
// refused. Every stop is said in the report.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/host/slot/module_slot.hpp"
#include "molt/host/slot/precopy_report.hpp"
#include "molt/transfer.hpp"

namespace molt::host {

/// Takes parts on a thread of its own, in order: applies them to an
/// instance, or appends them to a state file (part_file.hpp).
class PartReceiver {
 public:
  /// What is done with each part: why it failed, if it did.
  using Apply = std::function<std::optional<std::string>(std::string_view bytes, api::TransferPart part)>;

  PartReceiver(Apply apply, std::uint64_t max_queued_bytes);
  /// Applies each part to `to` (receive_part), told `migration`.
  PartReceiver(const ModuleSlot::Live& to, api::Migration migration, std::uint64_t max_queued_bytes);
  ~PartReceiver();  ///< abandons what is queued; waits for the part being applied
  PartReceiver(const PartReceiver&) = delete;
  PartReceiver& operator=(const PartReceiver&) = delete;

  /// Queues a part; waits while the bytes queued are over the bound. False
  /// once applying a part failed (failure() says why).
  bool push(std::string bytes, api::TransferPart part);
  /// Waits until every part queued is applied; the first failure, if any.
  std::optional<std::string> drain();
  [[nodiscard]] std::optional<std::string> failure() const;

 private:
  void run();

  const Apply apply_;
  const std::uint64_t max_queued_bytes_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<std::pair<std::string, api::TransferPart>> queue_;
  std::uint64_t queued_bytes_ = 0;
  bool applying_ = false;
  bool stopping_ = false;
  std::optional<std::string> failure_;
  std::thread thread_;
};

/// One module's pre-copy, from transfer_begin to transfer_end.
class PreCopy {
 public:
  /// After each part: the round it belongs to (0: the chunks) and that
  /// round so far.
  using Progress = std::function<void(unsigned round, const PrecopyRound& so_far)>;

  /// Will move `access`'s serving instance's state, in `target`'s schema,
  /// into `to` (run() begins the transfer).
  PreCopy(ModuleSlot::UpgradeAccess& access, const ModuleSlot::Live& to, const api::SaveTarget& target,
          api::Migration migration, const PrecopyOptions& options, Progress progress = {});
  /// Will move it into `apply` (a state file, say) instead.
  PreCopy(ModuleSlot::UpgradeAccess& access, PartReceiver::Apply apply, const api::SaveTarget& target,
          const PrecopyOptions& options, Progress progress = {});
  ~PreCopy();  ///< ends the transfer if finish() did not (an abandoned upgrade)
  PreCopy(const PreCopy&) = delete;
  PreCopy& operator=(const PreCopy&) = delete;

  /// The rounds, while the module serves, and the wait for the new instance
  /// to apply them. Fails when a call fails, or when the rounds do not
  /// converge and options say refuse.
  Result<void> run();
  /// In the pause (the access suspended): the final part, applied.
  Result<void> finish();

  /// Checked after each part run() takes: when it turns true, run() stops
  /// and fails, and gave_way() says so (a snapshot moltd takes by itself
  /// gives way to an upgrade that waits for the slot).
  void give_way_when(std::function<bool()> predicate) { give_way_ = std::move(predicate); }
  [[nodiscard]] bool gave_way() const noexcept { return gave_way_; }

  [[nodiscard]] const PrecopyReport& report() const noexcept { return report_; }

 private:
  Result<PrecopyRound> round(bool chunks);
  Error failed(std::string reason) const;

  ModuleSlot::UpgradeAccess& access_;
  const PrecopyOptions& options_;
  std::string module_;
  api::SaveTarget target_;
  Progress progress_;
  std::function<bool()> give_way_;
  bool gave_way_ = false;
  bool begun_ = false;
  bool ended_ = false;
  PartReceiver receiver_;
  PrecopyReport report_;
};

}  // namespace molt::host
