#include "molt/host/slot/upgrade_access.hpp"

#include <optional>
#include <stdexcept>
#include <utility>

#include "molt/host/common/log_context.hpp"
#include "molt/host/slot/module_call.hpp"
#include "molt/host/slot/precopy.hpp"
#include "molt/host/slot/state_hooks.hpp"
#include "molt/host/state/part_file.hpp"

namespace molt::host {

ModuleSlot::UpgradeAccess::UpgradeAccess(ModuleSlot& slot, std::unique_lock<std::timed_mutex> lock)
    : slot_(&slot), lock_(std::move(lock)) {}

std::optional<ModuleSlot::UpgradeAccess> ModuleSlot::UpgradeAccess::take_until(ModuleSlot& slot,
                                                                              CallGate::Clock::time_point deadline) {
  std::unique_lock lock(slot.upgrade_mutex_, deadline);
  if (!lock.owns_lock()) return std::nullopt;
  return UpgradeAccess(slot, std::move(lock));
}

std::optional<ModuleSlot::UpgradeAccess> ModuleSlot::UpgradeAccess::take_ahead_of_snapshots(
    ModuleSlot& slot, CallGate::Clock::time_point deadline) {
  std::unique_lock lock(slot.upgrade_mutex_, std::try_to_lock);
  if (lock.owns_lock()) return UpgradeAccess(slot, std::move(lock));
  slot.waiting_ahead_of_snapshots_.fetch_add(1, std::memory_order_relaxed);
  const bool taken = lock.try_lock_until(deadline);
  slot.waiting_ahead_of_snapshots_.fetch_sub(1, std::memory_order_relaxed);
  if (!taken) return std::nullopt;
  return UpgradeAccess(slot, std::move(lock));
}

const ModuleSlot::Live& ModuleSlot::UpgradeAccess::live() const noexcept { return *slot_->live_; }

Result<std::unique_ptr<ModuleSlot::Live>> ModuleSlot::UpgradeAccess::make_live(std::shared_ptr<const Image> image) {
  return slot_->make_live(std::move(image));
}

bool ModuleSlot::UpgradeAccess::suspend(CallGate::Clock::time_point deadline, const char* what) {
  suspended_ = slot_->gate_.suspend(deadline, what);
  return suspended_;
}

bool ModuleSlot::UpgradeAccess::can_transfer() const noexcept { return slot_->live_->hooks().can_transfer(); }

template <class F>
Result<api::TransferStep> ModuleSlot::UpgradeAccess::transfer_call(const char* what, std::streambuf* out, F&& call) {
  std::optional<CallGate::Pass> pass;
  if (!suspended_) pass.emplace(slot_->gate_.enter(what));
  const Live& live = *slot_->live_;
  const LogScope scope(live.image->info().version.value);
  std::optional<api::StateWriter> writer;
  if (out != nullptr) writer.emplace(*out);
  api::TransferStep step;
  if (auto failure = guard_module_call(what, [&] { step = call(live.hooks(), writer ? &*writer : nullptr); }))
    return Error{slot_->name_, live.image->info().version, live.image->source().string(), Phase::Save,
                 std::move(*failure)};
  return step;
}

Result<void> ModuleSlot::UpgradeAccess::transfer_begin(const api::SaveTarget& target) {
  auto began = transfer_call("transfer_begin", nullptr, [&](const Hooks& hooks, api::StateWriter*) {
    hooks.transfer_begin(target);
    return api::TransferStep{};
  });
  if (!began) return std::move(began).error();
  return {};
}

Result<api::TransferStep> ModuleSlot::UpgradeAccess::transfer_chunk(const api::TransferBudget& budget,
                                                                   std::streambuf& out) {
  return transfer_call("transfer_chunk", &out,
                       [&](const Hooks& hooks, api::StateWriter* writer) { return hooks.transfer_chunk(*writer, budget); });
}

Result<api::TransferStep> ModuleSlot::UpgradeAccess::transfer_delta(const api::TransferBudget& budget,
                                                                   std::streambuf& out) {
  return transfer_call("transfer_delta", &out,
                       [&](const Hooks& hooks, api::StateWriter* writer) { return hooks.transfer_delta(*writer, budget); });
}

Result<api::TransferStep> ModuleSlot::UpgradeAccess::transfer_final(std::streambuf& out) {
  if (!suspended_) throw std::logic_error("module " + slot_->name_ + ": transfer_final while the module serves");
  return transfer_call("transfer_final", &out,
                       [&](const Hooks& hooks, api::StateWriter* writer) { return hooks.transfer_final(*writer); });
}

void ModuleSlot::UpgradeAccess::transfer_end() noexcept {
  (void)transfer_call("transfer_end", nullptr, [](const Hooks& hooks, api::StateWriter*) {
    hooks.transfer_end();
    return api::TransferStep{};
  });
}

Result<void> ModuleSlot::UpgradeAccess::save(const api::SaveTarget& target, std::streambuf& out) const {
  return slot_->save_into(*slot_->live_, target, out);
}

std::unique_ptr<ModuleSlot::Live> ModuleSlot::UpgradeAccess::swap(std::unique_ptr<Live> next, Swap kind) {
  if (const auto gate = slot_->gate_.counts(); !gate.suspended || gate.inside != 0)
    throw std::logic_error("module " + slot_->name_ + ": instance swapped while calls may be inside");
  {
    std::lock_guard lock(slot_->info_mutex_);
    if (kind == Swap::Upgrade) slot_->previous_ = slot_->running_;
    slot_->running_ = describe(*next->image, next->since);
    slot_->too_many_clients_reply_ = next->too_many_clients_reply;
  }
  return std::exchange(slot_->live_, std::move(next));
}

void ModuleSlot::UpgradeAccess::set_state_bytes(std::uint64_t bytes) noexcept {
  slot_->state_bytes_.store(bytes, std::memory_order_relaxed);
}

std::optional<Result<void>> ModuleSlot::UpgradeAccess::precopy_then_pause(PreCopy& copy,
                                                                          std::chrono::milliseconds quiesce_timeout,
                                                                          const std::function<void()>& in_pause,
                                                                          std::function<bool()> give_way) {
  const ImageInfo& info = slot_->live_->image->info();
  if (give_way) copy.give_way_when(std::move(give_way));
  if (auto ran = copy.run(); !ran) {
    if (copy.gave_way())
      return Result<void>(Error{slot_->name_, info.version, {}, Phase::Snapshot, std::string(kGaveWayToUpgrade)});
    slot_->logger_->warn("pre-copy failed ({}); saving with the module paused", ran.error().to_string());
    return std::nullopt;
  }
  if (!suspend(CallGate::Clock::now() + quiesce_timeout, "save_state"))
    return Result<void>(Error{slot_->name_, info.version, {}, Phase::Snapshot, slot_->not_drained_reason(quiesce_timeout)});
  auto finished = copy.finish();
  if (in_pause) in_pause();
  (void)resume();
  if (!finished) return Result<void>(std::move(finished).error());
  return Result<void>();
}

namespace {

PreCopy::Progress each_part(std::function<void()> on_part) {
  return [on_part = std::move(on_part)](unsigned, const PrecopyRound&) {
    if (on_part) on_part();
  };
}

}  // namespace

std::optional<Result<std::string>> ModuleSlot::UpgradeAccess::save_by_precopy(
    const api::SaveTarget& target, const PrecopyOptions& options, std::chrono::milliseconds quiesce_timeout,
    const std::function<void()>& in_pause, std::function<void()> on_part, std::function<bool()> give_way) {
  if (!options.enabled || !can_transfer()) return std::nullopt;
  const ImageInfo& info = slot_->live_->image->info();
  auto made = make_live(slot_->live_->image);
  if (!made) {
    slot_->logger_->warn("no second instance for pre-copy ({}); saving with the module paused", made.error().to_string());
    return std::nullopt;
  }
  std::unique_ptr<Live> copy_of = std::move(made.value());
  // The second instance receives the state in its own schema; it writes
  // `target` (another schema on a downgrade) once it holds all of it.
  std::optional<Result<void>> moved;
  {
    PreCopy copy(*this, *copy_of, api::SaveTarget{info.schema, api::Direction::Same, {}},
                 api::Migration{info.schema, info.version, api::Direction::Same, {}}, options,
                 each_part(std::move(on_part)));
    moved = precopy_then_pause(copy, quiesce_timeout, in_pause, std::move(give_way));
  }
  if (!moved) return std::nullopt;
  if (!*moved) return Result<std::string>(std::move(*moved).error());
  return slot_->save_to_string(*copy_of, target, UINT64_MAX);  // the second instance serves nobody: no pause
}

std::optional<Result<void>> ModuleSlot::UpgradeAccess::save_by_precopy_to(
    PartFile& file, const api::SaveTarget& target, const PrecopyOptions& options,
    std::chrono::milliseconds quiesce_timeout, const std::function<void()>& in_pause, std::function<void()> on_part,
    std::function<bool()> give_way) {
  if (!options.enabled || !can_transfer()) return std::nullopt;
  PreCopy copy(
      *this, [&file](std::string_view bytes, api::TransferPart part) { return file.append(part, bytes); }, target,
      options, each_part(std::move(on_part)));
  return precopy_then_pause(copy, quiesce_timeout, in_pause, std::move(give_way));
}

std::uint64_t ModuleSlot::UpgradeAccess::resume(std::optional<api::CallMode> mode) {
  suspended_ = false;
  return slot_->gate_.resume(mode);
}

}  // namespace molt::host
