// ModuleSlot::UpgradeAccess: the slot as the upgrade transaction
// (upgrade/transaction.cpp) sees it. Only the transaction, and the tests of
// this interface, include this header.
//
// A slot's serving instance changes only through an access, and an access is
// the slot's upgrade lock: a slot takes part in one transaction at a time,
// and no snapshot (ModuleSlot::save_state) runs meanwhile. Between suspend()
// and resume() the gate is closed and no call is inside: only then may the
// serving instance's state be touched (save, detach_state, attach_state) or
// the instance swapped. The rest of the slot the transaction reads through
// its public calls (name, running, stats, log).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <streambuf>

#include "molt/host/slot/module_slot.hpp"

namespace molt::host {

class PartFile;
class PreCopy;

class ModuleSlot::UpgradeAccess {
 public:
  /// What swap() records as the version before.
  enum class Swap {
    Upgrade,  ///< the replaced version becomes previous(), the one to roll back to
    Restore,  ///< state given (a snapshot at boot): not an upgrade, previous() stays
  };

  /// The slot's upgrade lock, or nothing while another transaction or a
  /// snapshot still holds it at `deadline`. Not for a slot whose access
  /// this thread holds.
  [[nodiscard]] static std::optional<UpgradeAccess> take_until(ModuleSlot& slot, CallGate::Clock::time_point deadline);
  /// take_until, for a transaction or a snapshot that was asked for: while
  /// it waits, a snapshot moltd takes by itself (ModuleSlot::Yield::ToUpgrades)
  /// stops its pre-copy and lets go of the lock.
  [[nodiscard]] static std::optional<UpgradeAccess> take_ahead_of_snapshots(ModuleSlot& slot,
                                                                     CallGate::Clock::time_point deadline);
  /// take_until(now): without waiting.
  [[nodiscard]] static std::optional<UpgradeAccess> try_take(ModuleSlot& slot) {
    return take_until(slot, CallGate::Clock::now());
  }

  /// The serving instance; calls use it too (see above).
  [[nodiscard]] const Live& live() const noexcept;

  /// A started instance of `image` on this slot (its context: timers, jobs,
  /// config), not yet serving. Fails (Phase::Start) when start throws.
  Result<std::unique_ptr<Live>> make_live(std::shared_ptr<const Image> image);

  /// Closes the gate and waits, until `deadline`, for the calls inside.
  /// True: drained, and closed until resume(). False: open again, as before.
  [[nodiscard]] bool suspend(CallGate::Clock::time_point deadline, const char* what = "upgrade");

  /// The serving instance's state in `target.schema`, written to `out`.
  /// Only while suspended. Errors name the module and Phase::Save.
  Result<void> save(const api::SaveTarget& target, std::streambuf& out) const;

  // Pre-copy (molt/transfer.hpp), on the serving instance. The calls made
  // while the module serves go through its gate like a client's (a client
  // waits for one of them at most); transfer_final is made in the pause.
  // Errors name the module and Phase::Save.

  /// Whether the serving instance's image implements pre-copy.
  [[nodiscard]] bool can_transfer() const noexcept;
  Result<void> transfer_begin(const api::SaveTarget& target);
  Result<api::TransferStep> transfer_chunk(const api::TransferBudget& budget, std::streambuf& out);
  Result<api::TransferStep> transfer_delta(const api::TransferBudget& budget, std::streambuf& out);
  /// Only while suspended.
  Result<api::TransferStep> transfer_final(std::streambuf& out);
  /// Ends the transfer (complete or abandoned); while suspended or not.
  void transfer_end() noexcept;

  /// The serving instance's state in `target`, without pausing the module
  /// for all of it: a second instance of its image receives the state by
  /// pre-copy while the module serves, the module pauses (within
  /// `quiesce_timeout`) only for the last changes, during which `in_pause`
  /// runs too (to take what must agree with the state), and the second
  /// instance writes `target` after the module resumed. Nothing when the
  /// image has no pre-copy, `options` disable it, or it could not begin:
  /// the caller then saves with the module paused. Not while suspended.
  /// When `give_way` turns true between two parts, the pre-copy stops and
  /// the result is an error whose reason is kGaveWayToUpgrade.
  std::optional<Result<std::string>> save_by_precopy(const api::SaveTarget& target, const PrecopyOptions& options,
                                                     std::chrono::milliseconds quiesce_timeout,
                                                     const std::function<void()>& in_pause = {},
                                                     std::function<void()> on_part = {},
                                                     std::function<bool()> give_way = {});

  /// The same, with no second instance: the parts, in `target`, go into
  /// `file` as they are taken, and once this returns success the file holds
  /// the state as it was in the pause (the caller commits it, with what
  /// `in_pause` took).
  /// Nothing when the image has no pre-copy, `options` disable it, or the
  /// pre-copy failed before the pause: the caller then saves with the module
  /// paused (and abandons `file`).
  std::optional<Result<void>> save_by_precopy_to(PartFile& file, const api::SaveTarget& target,
                                                 const PrecopyOptions& options,
                                                 std::chrono::milliseconds quiesce_timeout,
                                                 const std::function<void()>& in_pause = {},
                                                 std::function<void()> on_part = {},
                                                 std::function<bool()> give_way = {});

  /// Makes `next` the serving instance and running(), and returns the one
  /// it replaces, still started (stop it after resume(), outside the pause).
  /// Only while suspended and drained (std::logic_error otherwise, a bug in
  /// the caller); cannot fail.
  [[nodiscard]] std::unique_ptr<Live> swap(std::unique_ptr<Live> next, Swap kind);

  /// The size of the state just handed over, for stats().
  void set_state_bytes(std::uint64_t bytes) noexcept;

  /// Reopens the gate, admitting calls in `mode` from now on if given (the
  /// new version's); how many calls waited. Only while suspended.
  std::uint64_t resume(std::optional<api::CallMode> mode = std::nullopt);

 private:
  UpgradeAccess(ModuleSlot& slot, std::unique_lock<std::timed_mutex> lock);

  /// Runs `write(hooks, writer)` on the serving instance, as a call through
  /// the gate unless this access holds it suspended.
  template <class F>
  Result<api::TransferStep> transfer_call(const char* what, std::streambuf* out, F&& call);

  /// `copy`'s rounds while the module serves, then its final part in a
  /// pause (with `in_pause`): as save_by_precopy says.
  std::optional<Result<void>> precopy_then_pause(PreCopy& copy, std::chrono::milliseconds quiesce_timeout,
                                                 const std::function<void()>& in_pause, std::function<bool()> give_way);

  ModuleSlot* slot_;                   ///< never null
  std::unique_lock<std::timed_mutex> lock_;  ///< owns slot_->upgrade_mutex_ for as long as this access lives
  bool suspended_ = false;             ///< by suspend(), until resume()
};

}  // namespace molt::host
