#include "molt/host/slot/upgrade_access.hpp"

#include <stdexcept>
#include <utility>

namespace molt::host {

ModuleSlot::UpgradeAccess::UpgradeAccess(ModuleSlot& slot, std::unique_lock<std::timed_mutex> lock)
    : slot_(&slot), lock_(std::move(lock)) {}

std::optional<ModuleSlot::UpgradeAccess> ModuleSlot::UpgradeAccess::take_until(ModuleSlot& slot,
                                                                              CallGate::Clock::time_point deadline) {
  std::unique_lock lock(slot.upgrade_mutex_, deadline);
  if (!lock.owns_lock()) return std::nullopt;
  return UpgradeAccess(slot, std::move(lock));
}

const ModuleSlot::Live& ModuleSlot::UpgradeAccess::live() const noexcept { return *slot_->live_; }

Result<std::unique_ptr<ModuleSlot::Live>> ModuleSlot::UpgradeAccess::make_live(std::shared_ptr<const Image> image) {
  return slot_->make_live(std::move(image));
}

bool ModuleSlot::UpgradeAccess::suspend(CallGate::Clock::time_point deadline) { return slot_->gate_.suspend(deadline); }

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

std::uint64_t ModuleSlot::UpgradeAccess::resume(std::optional<api::CallMode> mode) { return slot_->gate_.resume(mode); }

}  // namespace molt::host
