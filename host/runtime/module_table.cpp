#include "molt/host/runtime/module_table.hpp"

#include <algorithm>
#include <mutex>

#include "molt/host/loader/plugin_dir.hpp"

namespace molt::host {

ModuleTable::ModuleTable(Loader& loader, TableOptions options)
    : loader_(loader), options_(std::move(options)), history_log_(options_.history_file) {
  if (options_.job_threads > 0)
    jobs_ = std::make_shared<JobRunner>(
        JobRunnerOptions{options_.job_threads, [this](std::string_view module) { return find(module); }});
}

void ModuleTable::stop_all() {
  std::unique_lock lock(mutex_);
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) slots_.erase(*it);
  order_.clear();
}

Result<std::shared_ptr<ModuleSlot>> ModuleTable::prepare(const ModuleConfig& module) {
  if (find(module.name)) return Error{module.name, {}, module.file.string(), Phase::Start, "already running"};
  auto image = loader_.load(module.file, module.name);
  if (!image) return std::move(image).error();
  auto slot = ModuleSlot::start(std::move(image.value()),
                                SlotOptions{options_.make_logger(module.name), module.values, timers_, jobs_,
                                            options_.stream_limits, options_.stop_timeout,
                                            options_.upgrade.precopy});
  if (!slot) return std::move(slot).error();
  return std::shared_ptr<ModuleSlot>(std::move(slot.value()));
}

void ModuleTable::insert(std::shared_ptr<ModuleSlot> slot) {
  std::unique_lock lock(mutex_);
  order_.push_back(slot->name());
  slots_.emplace(slot->name(), std::move(slot));
}

Result<void> ModuleTable::start(const ModuleConfig& module) {
  auto slot = prepare(module);
  if (!slot) return std::move(slot).error();
  insert(std::move(slot.value()));
  return {};
}

std::shared_ptr<ModuleSlot> ModuleTable::remove(std::string_view name) {
  std::unique_lock lock(mutex_);
  const auto it = slots_.find(name);
  if (it == slots_.end()) return nullptr;
  auto slot = std::move(it->second);
  slots_.erase(it);
  order_.erase(std::remove(order_.begin(), order_.end(), name), order_.end());
  return slot;
}

std::vector<UpgradeReport> ModuleTable::run(std::span<const UpgradeTarget> steps) {
  // Every upgrade goes through here (reload, rollback, SIGHUP, scripts,
  // probation rollbacks): the one place to see a step leave its schema. A
  // step whose image cannot be checked is left to the transaction to refuse.
  if (before_migrating_) {
    for (const auto& step : steps) {
      if (step.slot == nullptr || step.file.empty()) continue;  // a restore: same image, same schema
      const auto checked = loader_.check(step.file, step.slot->name(), step.sha256);
      if (checked && checked->info.schema != step.slot->running().info.schema) before_migrating_(*step.slot, checked->info);
    }
  }
  auto reports = run_upgrade(steps, loader_, options_.upgrade);
  for (const auto& report : reports) {
    history_.record(report);
    if (auto why = history_log_.append(report)) {
      if (auto slot = find(report.module)) slot->log().warn("history not kept on disk: {}", *why);
    }
  }
  return reports;
}

std::shared_ptr<ModuleSlot> ModuleTable::find(std::string_view name) const {
  std::shared_lock lock(mutex_);
  const auto it = slots_.find(name);
  return it == slots_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<ModuleSlot>> ModuleTable::slots() const {
  std::shared_lock lock(mutex_);
  std::vector<std::shared_ptr<ModuleSlot>> out;
  for (const auto& name : order_) out.push_back(slots_.find(name)->second);
  return out;
}

Result<std::shared_ptr<ModuleSlot>> ModuleTable::lookup(std::string_view name, Phase phase) const {
  if (auto slot = find(name)) return slot;
  return Error{std::string(name), {}, {}, phase, "no such module (moltctl status lists them)"};
}

UpgradeReport ModuleTable::run(const UpgradeTarget& step) { return std::move(run(std::span(&step, 1)).front()); }

Result<UpgradeReport> ModuleTable::reload(std::string_view name, const std::optional<std::filesystem::path>& file,
                                          const api::Values& extra) {
  auto slot = lookup(name, Phase::Prepare);
  if (!slot) return std::move(slot).error();
  std::filesystem::path target;
  if (file) {
    target = *file;
  } else if (auto newest = newest_plugin(options_.plugin_dir, name)) {
    target = newest->path;
  } else {
    return Error{std::string(name), {}, options_.plugin_dir.string(), Phase::Prepare,
                 "no " + std::string(name) + "-<version>.so in the plugin directory"};
  }
  return run(UpgradeTarget{slot->get(), target, std::nullopt, extra, std::nullopt});
}

Result<UpgradeReport> ModuleTable::rollback(std::string_view name, const api::Values& extra) {
  auto slot = lookup(name, Phase::Prepare);
  if (!slot) return std::move(slot).error();
  const auto previous = slot.value()->previous();
  if (!previous)
    return Error{std::string(name), slot.value()->running().info.version, {}, Phase::Prepare,
                 "no earlier version to roll back to: not upgraded since moltd started"};
  return run(UpgradeTarget{slot->get(), previous->file, std::nullopt, extra, previous->sha256});
}

std::vector<UpgradeReport> ModuleTable::reload_changed() {
  std::vector<UpgradeReport> reports;
  for (const auto& slot : slots()) {
    const auto newest = newest_plugin(options_.plugin_dir, slot->name());
    if (!newest) continue;
    // An unreadable or bad file is not skipped: the upgrade refuses it, and
    // the refusal is reported and logged like any other.
    const auto checked = loader_.check(newest->path, slot->name());
    if (checked && checked->sha256 == slot->running().sha256) continue;
    reports.push_back(run(UpgradeTarget{slot.get(), newest->path, std::nullopt, {}, std::nullopt}));
  }
  return reports;
}

UpgradeReport ModuleTable::restore(ModuleSlot& slot, StateBlob state) {
  return run(UpgradeTarget{&slot, {}, std::move(state), {}, std::nullopt});
}

Result<StateBlob> ModuleTable::snapshot(std::string_view name) {
  auto slot = lookup(name, Phase::Snapshot);
  if (!slot) return std::move(slot).error();
  return slot.value()->save_state(options_.upgrade.quiesce_timeout);
}

}  // namespace molt::host
