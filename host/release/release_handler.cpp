#include "molt/host/release/release_handler.hpp"

#include <algorithm>
#include <functional>
#include <set>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/fault.hpp"
#include "molt/host/common/sha256.hpp"
#include "molt/host/upgrade/transaction.hpp"

namespace molt::host {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

Error release_error(std::string release, std::string reason) {
  return Error{{}, {}, {}, Phase::Release, "'" + release + "' " + std::move(reason)};  // "release: 'r1' is ..."
}

/// A module's entry in a release, from what its slot runs and its settings.
ReleaseModule entry_for(const ModuleSlot& slot, std::vector<Endpoint> listen, api::Values config) {
  const RunningVersion running = slot.running();
  return ReleaseModule{slot.name(), running.info.version, fs::absolute(running.file).lexically_normal().string(),
                       running.sha256, std::move(listen), std::move(config)};
}

std::string base_name(const std::string& release) { return release.substr(0, release.find('+')); }

/// Orders steps so that a module is paused before the modules it depends on
/// (and resumed after them); otherwise keeps the script's order. Empty on a
/// cycle, with `cycle` describing it.
/// The order modules pause in; empty on a cycle, then `cycle` describes it and
/// `culprit` is the step where it closes.
std::vector<std::size_t> dependency_order(const std::vector<ScriptStep>& steps, std::string& cycle, std::size_t& culprit) {
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < steps.size(); ++i) index[steps[i].module] = i;
  std::vector<std::size_t> order;
  std::vector<int> state(steps.size(), 0);  // 0 new, 1 visiting, 2 done
  std::vector<std::string> path;
  // Depth first: a step goes after every step that depends on it.
  std::function<bool(std::size_t)> visit = [&](std::size_t i) {
    if (state[i] == 2) return true;
    if (state[i] == 1) {
      cycle.clear();
      const auto start = std::find(path.begin(), path.end(), steps[i].module);
      for (auto it = start; it != path.end(); ++it) cycle += *it + " -> ";
      cycle += steps[i].module;
      culprit = i;
      return false;
    }
    state[i] = 1;
    path.push_back(steps[i].module);
    for (std::size_t j = 0; j < steps.size(); ++j)  // steps that depend on i come first
      if (std::find(steps[j].depends_on.begin(), steps[j].depends_on.end(), steps[i].module) != steps[j].depends_on.end())
        if (!visit(j)) return false;
    path.pop_back();
    state[i] = 2;
    order.push_back(i);
    return true;
  };
  for (std::size_t i = 0; i < steps.size(); ++i)
    if (!visit(i)) return {};
  return order;
}

}  // namespace

ReleaseHandler::ReleaseHandler(ModuleTable& table, ModuleListeners& listeners, SnapshotStore& snapshots,
                               ReleaseOptions options, std::shared_ptr<spdlog::logger> log)
    : table_(table), listeners_(listeners), snapshots_(snapshots), options_(std::move(options)), log_(std::move(log)) {}

ReleaseHandler::~ReleaseHandler() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

// --- boot ------------------------------------------------------------------

Result<void> ReleaseHandler::boot(const HostConfig& config) {
  std::lock_guard lock(mutex_);
  auto stored = read_release_record(options_.record_path);
  if (!stored) {
    Error error = std::move(stored).error();
    error.reason += "; fix it, or move it aside to boot the configuration's modules";
    return error;
  }
  const auto settings = [&](const std::string& name) -> const ModuleConfig* {
    for (const auto& m : config.modules)
      if (m.name == name) return &m;
    return nullptr;
  };

  Release boot;
  if (!stored.value()) {
    boot.name = options_.initial_release;
    boot.installed_at_ms = now_ms();
    boot.permanent_at_ms = boot.installed_at_ms;
    for (const auto& m : config.modules)
      boot.modules.push_back({m.name, {}, fs::absolute(m.file).lexically_normal().string(), {}, m.listen, m.values});
    record_.note(boot.name, "booted", "first start: the configuration's modules");
  } else {
    record_ = std::move(*stored.value());
    if (!record_.current_is_permanent()) {
      log_->warn("release '{}' was on probation when moltd stopped: booting the last permanent release '{}'",
                 record_.current.name, record_.permanent.name);
      record_.note(record_.current.name, "not booted", "was on probation; booted " + record_.permanent.name);
      record_.previous = record_.current;  // what ran before this boot
    }
    boot = record_.permanent;
    for (auto& m : boot.modules) {  // the configuration's settings win where it names the module
      if (const ModuleConfig* c = settings(m.name)) {
        m.listen = c->listen;
        m.config = c->values;
      }
    }
    for (const auto& m : config.modules) {  // modules the configuration added since
      if (boot.find(m.name) != nullptr) continue;
      boot.modules.push_back({m.name, {}, fs::absolute(m.file).lexically_normal().string(), {}, m.listen, m.values});
      record_.note(boot.name, "module added", m.name + " from the configuration");
    }
    record_.note(boot.name, "booted");
  }

  for (auto& m : boot.modules) {
    if (!m.sha256.empty()) {  // the release pins the image it was installed with
      auto checked = table_.loader().check(m.file, m.name);
      if (!checked) return std::move(checked).error();
      if (checked->sha256 != m.sha256)
        return release_error(boot.name, "cannot boot: " + m.name + ": " + m.file + " changed since the release was installed (sha256 " +
                                            checked->sha256.substr(0, 12) + ", expected " + m.sha256.substr(0, 12) +
                                            "); put the original back");
    }
    if (auto started = table_.start(ModuleConfig{m.name, m.file, m.config, m.listen}); !started) return started;
    auto slot = table_.find(m.name);
    m = entry_for(*slot, m.listen, m.config);
    restore_snapshot_locked(m.name);
    auto bound = listeners_.listen_module(m.listen, slot);
    if (!bound) return std::move(bound).error();
    for (const auto& endpoint : bound.value()) slot->log().info("listening on {}", endpoint.to_string());
  }
  record_.current = boot;
  record_.permanent = boot;
  write_record_locked();
  log_->info("release '{}' running ({} module(s))", boot.name, boot.modules.size());
  next_snapshot_ = std::chrono::steady_clock::now() + options_.snapshot_interval;
  return {};
}

void ReleaseHandler::restore_snapshot_locked(const std::string& module) {
  auto slot = table_.find(module);
  auto loaded = snapshots_.load(module);
  if (!loaded) {
    auto moved = snapshots_.move_aside(module, "corrupt");
    slot->log().error("{}; moved to {}; {} starts with its initial state (to recover an older state: moltctl restore {} FILE)",
                      loaded.error().to_string(), moved ? moved->string() : std::string("(could not move it)"), module,
                      module);
    return;
  }
  if (!loaded.value()) return;  // never snapshotted: initial state
  const StateBlob& blob = *loaded.value();
  const ImageInfo running = slot->running().info;
  fs::path writer_image;  // the image that wrote a newer schema, to convert it down
  if (blob.schema > running.schema) {
    for (const Release* r : {&record_.current, record_.previous ? &*record_.previous : nullptr, &record_.permanent}) {
      if (r == nullptr) continue;
      if (const auto* m = r->find(module); m != nullptr && m->version == blob.version) writer_image = m->file;
    }
    if (writer_image.empty()) {
      auto moved = snapshots_.move_aside(module, "unreadable");
      slot->log().error("snapshot was written by v{} in schema {}, which v{} cannot read, and no recorded release has "
                        "v{}'s image; moved to {}; {} starts with its initial state (to recover: moltctl restore {} FILE "
                        "once a version that reads it runs)",
                        blob.version.value, blob.schema.value, running.version.value, blob.version.value,
                        moved ? moved->string() : std::string("?"), module, module);
      return;
    }
  }
  const std::string booted_file = slot->running().file;
  UpgradeReport report = host::restore(*slot, table_.loader(), blob, writer_image);
  if (report.outcome == Outcome::Succeeded && !writer_image.empty())
    report = host::upgrade(*slot, table_.loader(), booted_file);  // back down to the booted version
  slot->forget_previous();  // the snapshot's version was a means, not a version to roll back to
  if (report.outcome != Outcome::Succeeded) {
    auto moved = snapshots_.move_aside(module, "unrestorable");
    slot->log().error("snapshot could not be restored ({}); moved to {}; {} starts with its initial state",
                      report.summary(), moved ? moved->string() : std::string("?"), module);
    return;
  }
  if (auto host = slot->restore_host_part(blob.host); !host) slot->log().error("{}", host.error().to_string());
  slot->log().info("state restored from {} (written by v{}, {} bytes)", snapshots_.path_of(module).string(),
                   blob.version.value, blob.bytes.size());
}

// --- snapshots --------------------------------------------------------------

bool ReleaseHandler::snapshot_locked(const std::string& module, std::string_view why) {
  auto slot = table_.find(module);
  if (!slot) return false;
  auto blob = slot->save_state(options_.save_timeout);
  if (!blob) {
    slot->log().error("{} snapshot not written: {}", why, blob.error().to_string());
    return false;
  }
  if (auto saved = snapshots_.save(blob.value()); !saved) {
    slot->log().error("{} snapshot not written: {}", why, saved.error().to_string());
    return false;
  }
  // Shutdown and requested snapshots are what an operator looks for in the log; periodic ones would flood it.
  if (why == "periodic") slot->log().debug("{} snapshot: {} bytes", why, blob->bytes.size());
  else slot->log().info("{} snapshot written: {} bytes of state in {}", why, blob->bytes.size(), snapshots_.path_of(module).string());
  return true;
}

void ReleaseHandler::snapshot_all_locked(std::string_view why) {
  for (const auto& slot : table_.slots()) snapshot_locked(slot->name(), why);
}

std::vector<std::string> ReleaseHandler::save_all() {
  std::lock_guard lock(mutex_);
  std::vector<std::string> failed;
  for (const auto& slot : table_.slots())
    if (!snapshot_locked(slot->name(), "requested")) failed.push_back(slot->name());
  return failed;
}

void ReleaseHandler::shut_down() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  std::lock_guard lock(mutex_);
  snapshot_all_locked("shutdown");
}

void ReleaseHandler::write_record_locked() {
  fault_point("release.record");
  if (auto written = write_release_record(options_.record_path, record_); !written)
    log_->error("{} (a restart would boot release '{}')", written.error().to_string(), record_.permanent.name);
}

// --- install ------------------------------------------------------------------

UpgradeScript ReleaseHandler::down_script(const UpgradeScript& script) const {
  std::lock_guard lock(mutex_);
  UpgradeScript down = reversed(script);
  down.release = record_.previous && record_.current.name == script.release ? record_.previous->name
                                                                              : script.release + "-down";
  return down;
}

Result<ReleasePlan> ReleaseHandler::check(const UpgradeScript& script) {
  std::lock_guard lock(mutex_);
  return plan_locked(script);
}

Result<ReleasePlan> ReleaseHandler::plan_locked(const UpgradeScript& script) {
  std::string cycle;
  std::size_t culprit = 0;
  const auto order = dependency_order(script.steps, cycle, culprit);
  if (order.empty()) return step_error(script, script.steps[culprit], "dependency cycle: " + cycle);
  ReleasePlan plan;
  plan.release = script.release;
  for (const std::size_t i : order) {
    const ScriptStep& step = script.steps[i];
    PlannedStep planned{step, {}, {}, {}};
    const auto slot = table_.find(step.module);
    for (const auto& dependency : step.depends_on)
      if (!table_.find(dependency) && std::none_of(script.steps.begin(), script.steps.end(),
                                                   [&](const ScriptStep& s) { return s.module == dependency; }))
        return step_error(script, step, "depends on '" + dependency + "', which is neither running nor in the script");
    if (step.action == StepAction::Add) {
      if (slot) return step_error(script, step, step.module + " is already running (v" +
                                                   std::to_string(slot->running().info.version.value) + ")");
    } else {
      if (!slot) return step_error(script, step, step.module + " is not running");
      planned.running = slot->running().info.version;
      if (step.from && *step.from != planned.running)
        return step_error(script, step, "from = " + std::to_string(step.from->value) + " but " + step.module + " runs v" +
                                            std::to_string(planned.running.value));
    }
    if (step.action != StepAction::Remove) {
      planned.file = fs::path(step.file).is_absolute() ? fs::path(step.file) : options_.plugin_dir / step.file;
      if (step.sha256) {  // a pin is checked first: the file is not even parsed when it is not the one pinned
        std::string bytes;
        if (auto unreadable = read_file(planned.file, table_.loader().options().max_image_bytes, bytes))
          return step_error(script, step, planned.file.string() + ": " + *unreadable);
        if (const std::string found = sha256_hex(bytes); found != *step.sha256)
          return step_error(script, step, planned.file.string() + " differs from the pinned sha256 (expected " +
                                              step.sha256->substr(0, 12) + "..., found " + found.substr(0, 12) + "...)");
      }
      auto checked = table_.loader().check(planned.file, step.module);
      if (!checked) return step_error(script, step, checked.error().to_string());
      if (checked->info.version != *step.to)
        return step_error(script, step, planned.file.string() + " is v" + std::to_string(checked->info.version.value) +
                                            ", the step says to = " + std::to_string(step.to->value));
      if (step.sha256 && *step.sha256 != checked->sha256)
        return step_error(script, step, planned.file.string() + " differs from the pinned sha256 (expected " +
                                            step.sha256->substr(0, 12) + "..., found " + checked->sha256.substr(0, 12) + "...)");
      planned.sha256 = checked->sha256;
    }
    plan.steps.push_back(std::move(planned));
  }
  return plan;
}

InstallOutcome ReleaseHandler::install(const UpgradeScript& script) {
  std::lock_guard lock(mutex_);
  const ChangeScope change(*this, "installing release " + script.release);
  auto plan = plan_locked(script);
  if (!plan) return InstallOutcome{script.release, false, {}, std::move(plan).error()};
  return execute_locked(plan.value(), plan->release);
}

InstallOutcome ReleaseHandler::execute_locked(const ReleasePlan& plan, const std::string& release_name) {
  InstallOutcome outcome{release_name, false, {}, std::nullopt};
  log_->info("release '{}': installing {} step(s)", release_name, plan.steps.size());
  const auto settings_of = [&](const std::string& module) -> const ReleaseModule* {
    for (const Release* r : {&record_.current, record_.previous ? &*record_.previous : nullptr, &record_.permanent})
      if (r != nullptr)
        if (const auto* m = r->find(module)) return m;
    return nullptr;
  };

  // Removed modules: their state first, kept beside the snapshots. A module
  // whose state cannot be saved is not removed: the release is refused.
  for (const auto& p : plan.steps)
    if (p.step.action == StepAction::Remove && !snapshot_locked(p.step.module, "removal")) {
      outcome.error = Error{p.step.module, {}, {}, Phase::Snapshot,
                            "not removed: its state could not be saved (see the log), so release '" + release_name +
                                "' is refused"};
      return outcome;
    }

  // Added modules: started and listening, not yet served over HTTP. A
  // failure here refuses the release before anything else changes.
  std::vector<std::shared_ptr<ModuleSlot>> added;
  std::map<std::string, std::string> host_parts;  ///< of the added modules restored from a snapshot
  auto discard_added = [&] {
    for (const auto& slot : added) listeners_.close_module(slot->name());
    added.clear();
  };
  for (const auto& p : plan.steps) {
    if (p.step.action != StepAction::Add) continue;
    std::vector<Endpoint> listen = p.step.listen;
    api::Values config = p.step.config;
    if (listen.empty() && config.empty())
      if (const auto* known = settings_of(p.step.module)) listen = known->listen, config = known->config;
    auto slot = table_.prepare(ModuleConfig{p.step.module, p.file, config, listen});
    if (!slot) {
      discard_added();
      outcome.error = std::move(slot).error();
      return outcome;
    }
    // A module that comes back (a removal undone) gets its state back.
    auto snapshot = snapshots_.load(p.step.module);
    if (!snapshot) {
      auto moved = snapshots_.move_aside(p.step.module, "corrupt");
      slot.value()->log().error("{}; moved to {}; {} starts with its initial state (to recover an older state: moltctl "
                                "restore {} FILE)",
                                snapshot.error().to_string(), moved ? moved->string() : std::string("(could not move it)"),
                                p.step.module, p.step.module);
    } else if (snapshot.value()) {
      const auto restored = host::restore(*slot.value(), table_.loader(), *snapshot.value());
      if (restored.outcome != Outcome::Succeeded) slot.value()->log().warn("state not restored: {}", restored.summary());
      else host_parts[p.step.module] = snapshot.value()->host;  // its jobs run once it serves
    }
    if (auto bound = listeners_.listen_module(listen, slot.value()); !bound) {
      added.push_back(slot.value());
      discard_added();
      outcome.error = std::move(bound).error();
      return outcome;
    }
    added.push_back(std::move(slot.value()));
  }

  // Upgrades: one transaction, modules paused in dependency order.
  std::vector<UpgradeStep> steps;
  for (const auto& p : plan.steps)
    if (p.step.action == StepAction::Upgrade)
      steps.push_back(UpgradeStep{table_.find(p.step.module).get(), p.file, std::nullopt, p.step.extra, p.sha256});
  if (!steps.empty()) {
    outcome.reports = table_.run(steps);
    for (const auto& report : outcome.reports)  // the cause, not the modules that went back because of it
      if (report.outcome != Outcome::Succeeded && report.error && !report.error->reason.starts_with(kNotUpgradedBecause))
        outcome.error = report.error;
    if (!outcome.error)
      for (const auto& report : outcome.reports)
        if (report.outcome != Outcome::Succeeded && report.error && !outcome.error) outcome.error = report.error;
    if (outcome.error) {
      discard_added();
      log_->error("release '{}' not installed: {}", release_name, outcome.error->to_string());
      return outcome;
    }
  }

  // Point of no return for the release: serve the added modules, drop the removed ones.
  fault_point("release.commit");
  for (auto& slot : added) {
    table_.insert(slot);
    if (auto host = slot->restore_host_part(host_parts[slot->name()]); !host) slot->log().error("{}", host.error().to_string());
  }
  for (const auto& p : plan.steps) {
    if (p.step.action != StepAction::Remove) continue;
    listeners_.close_module(p.step.module);
    const auto removed = table_.remove(p.step.module);
    // Again now that nothing reaches it: the calls it served while the
    // release was being installed are in this one.
    if (removed) {
      if (auto blob = removed->save_state(options_.save_timeout); !blob || !snapshots_.save(blob.value()))
        log_->error("{} removed, but its last state could not be saved: the snapshot taken when release '{}' began is "
                    "what remains (calls it served since then are lost)",
                    p.step.module, release_name);
    }
    log_->info("{} removed (its last state is in {})", p.step.module, snapshots_.path_of(p.step.module).string());
  }

  Release next = record_.current;
  next.name = release_name;
  std::vector<std::string> changed;
  for (const auto& p : plan.steps) {
    const std::string& module = p.step.module;
    if (p.step.action == StepAction::Remove) {
      next.modules.erase(std::remove_if(next.modules.begin(), next.modules.end(),
                                        [&](const ReleaseModule& m) { return m.name == module; }),
                         next.modules.end());
      continue;
    }
    changed.push_back(module);
    const auto slot = table_.find(module);
    if (ReleaseModule* entry = next.find(module)) {
      *entry = entry_for(*slot, entry->listen, entry->config);
    } else {
      std::vector<Endpoint> listen = p.step.listen;
      api::Values config = p.step.config;
      if (listen.empty() && config.empty())
        if (const auto* known = settings_of(module)) listen = known->listen, config = known->config;
      next.modules.push_back(entry_for(*slot, listen, config));
    }
  }
  installed_locked(std::move(next), changed, std::to_string(plan.steps.size()) + " step(s)");
  outcome.installed = true;
  return outcome;
}

void ReleaseHandler::installed_locked(Release next, const std::vector<std::string>& changed, const std::string& detail) {
  fault_point("release.installed");
  record_.previous = record_.current;
  next.installed_at_ms = now_ms();
  next.permanent_at_ms.reset();
  if (options_.probation.count() == 0) {
    next.permanent_at_ms = next.installed_at_ms;
    record_.permanent = next;
  }
  record_.current = next;
  record_.note(next.name, "installed", detail);
  if (next.permanent_at_ms) record_.note(next.name, "permanent", "no probation configured");
  write_record_locked();
  for (const auto& module : changed) snapshot_locked(module, "upgrade");
  if (next.permanent_at_ms) {
    probation_.reset();
    log_->info("release '{}' installed and permanent", next.name);
    return;
  }
  Probation probation{std::chrono::steady_clock::now() + options_.probation, {}};
  for (const auto& module : changed)
    if (auto slot = table_.find(module)) probation.baseline.emplace(module, slot->stats());
  probation_ = std::move(probation);
  log_->info("release '{}' installed; on probation for {} s (moltctl commit makes it permanent now)", next.name,
             options_.probation.count());
}

Release ReleaseHandler::with_module_changed(const std::string& module) const {
  Release next = record_.current;
  next.name = base_name(record_.current.name) + "+" + module;
  if (const auto slot = table_.find(module)) {
    next.name += "-v" + std::to_string(slot->running().info.version.value);
    if (ReleaseModule* entry = next.find(module))
      *entry = entry_for(*slot, entry->listen, entry->config);
    else
      next.modules.push_back(entry_for(*slot, {}, {}));
  }
  return next;
}

Result<UpgradeReport> ReleaseHandler::reload(std::string_view module, const std::optional<fs::path>& file,
                                             const api::Values& extra) {
  std::lock_guard lock(mutex_);
  const ChangeScope change(*this, "reloading " + std::string(module));
  auto report = table_.reload(module, file, extra);
  if (report && report->outcome == Outcome::Succeeded)
    installed_locked(with_module_changed(std::string(module)), {std::string(module)}, "moltctl reload " + std::string(module));
  return report;
}

Result<UpgradeReport> ReleaseHandler::rollback_module(std::string_view module, const api::Values& extra) {
  std::lock_guard lock(mutex_);
  const ChangeScope change(*this, "rolling back " + std::string(module));
  auto report = table_.rollback(module, extra);
  if (report && report->outcome == Outcome::Succeeded)
    installed_locked(with_module_changed(std::string(module)), {std::string(module)}, "moltctl rollback " + std::string(module));
  return report;
}

std::vector<UpgradeReport> ReleaseHandler::reload_changed() {
  std::lock_guard lock(mutex_);
  const ChangeScope change(*this, "reloading the modules whose file changed");
  auto reports = table_.reload_changed();
  std::vector<std::string> changed;
  for (const auto& report : reports)
    if (report.outcome == Outcome::Succeeded) changed.push_back(report.module);
  if (!changed.empty()) {
    Release next = record_.current;
    next.name = base_name(record_.current.name) + "+reload";
    for (const auto& module : changed)
      if (ReleaseModule* entry = next.find(module)) *entry = entry_for(*table_.find(module), entry->listen, entry->config);
    installed_locked(std::move(next), changed, "SIGHUP");
  }
  return reports;
}

Result<UpgradeReport> ReleaseHandler::restore(std::string_view module, const fs::path& archive) {
  // Read before taking the release lock: the file is the operator's, and
  // reading it (up to max_state_bytes) must not hold up releases, saves and
  // status meanwhile. read_file refuses a FIFO or a device without waiting.
  auto blob = read_state_file(archive, table_.options().upgrade.max_state_bytes);
  std::lock_guard lock(mutex_);
  const ChangeScope change(*this, "restoring " + std::string(module) + " from " + archive.string());
  auto slot = table_.find(module);
  if (!slot) return Error{std::string(module), {}, {}, Phase::Snapshot, "no such module"};
  if (!blob) {
    Error error = std::move(blob).error();
    error.module = std::string(module);
    return error;
  }
  const std::string host = blob->host;
  auto report = table_.restore(*slot, std::move(blob.value()));  // an operator's transaction: in the history
  if (report.outcome == Outcome::Succeeded) {
    // An archive without a host part (a fixture, an older snapshot) keeps the jobs and timers the module has.
    if (!host.empty())
      if (auto restored = slot->restore_host_part(host); !restored) slot->log().error("{}", restored.error().to_string());
    snapshot_locked(std::string(module), "restore");
  }
  return report;
}

// --- probation ------------------------------------------------------------------

Result<void> ReleaseHandler::commit() {
  std::lock_guard lock(mutex_);
  if (record_.current_is_permanent())
    return release_error(record_.current.name, "is already permanent");
  make_permanent_locked("moltctl commit");
  return {};
}

void ReleaseHandler::make_permanent_locked(const std::string& why) {
  record_.current.permanent_at_ms = now_ms();
  record_.permanent = record_.current;
  record_.note(record_.current.name, "permanent", why);
  probation_.reset();
  write_record_locked();
  log_->info("release '{}' is permanent ({})", record_.current.name, why);
  if (options_.on_change) options_.on_change(ChangeNotice::Status, summary_locked());
}

void ReleaseHandler::roll_back_locked(const std::string& why) {
  probation_.reset();
  const std::string failed = record_.current.name;
  if (!record_.previous) {
    log_->error("release '{}' failed probation ({}) but there is no previous release to return to", failed, why);
    return;
  }
  const Release target = *record_.previous;
  log_->error("release '{}' failed probation: {}; rolling back to '{}'", failed, why, target.name);
  const ChangeScope change(*this, "rolling release " + failed + " back to " + target.name + " (failed probation)");

  // The steps from the current release back to the previous one.
  UpgradeScript script;
  script.release = target.name;
  script.source = "rollback of " + failed;
  for (const auto& now : record_.current.modules) {
    const ReleaseModule* before = target.find(now.name);
    ScriptStep step;
    step.number = script.steps.size() + 1;
    step.module = now.name;
    if (before == nullptr) {
      step.action = StepAction::Remove;
      step.from = now.version;
    } else if (before->sha256 != now.sha256 || before->file != now.file) {
      step.from = now.version;
      step.to = before->version;
      step.file = before->file;
      step.sha256 = before->sha256;
    } else {
      continue;
    }
    script.steps.push_back(std::move(step));
  }
  for (const auto& before : target.modules) {
    if (record_.current.find(before.name) != nullptr) continue;
    ScriptStep step;
    step.number = script.steps.size() + 1;
    step.action = StepAction::Add;
    step.module = before.name;
    step.to = before.version;
    step.file = before.file;
    step.sha256 = before.sha256;
    step.listen = before.listen;
    step.config = before.config;
    script.steps.push_back(std::move(step));
  }
  auto plan = plan_locked(script);
  InstallOutcome outcome = plan ? execute_locked(plan.value(), target.name)
                                : InstallOutcome{target.name, false, {}, std::move(plan).error()};
  if (!outcome.installed) {
    log_->critical("rolling release '{}' back to '{}' failed: {}; '{}' keeps running: fix it and run moltctl upgrade --down",
                   failed, target.name, outcome.error ? outcome.error->to_string() : "?", failed);
    record_.note(failed, "rollback failed", outcome.error ? outcome.error->to_string() : "");
    write_record_locked();
    return;
  }
  // execute_locked recorded `target` as a new install; it is the release
  // that ran before, permanent as it was.
  record_.current.permanent_at_ms = target.permanent_at_ms;
  if (target.permanent_at_ms) record_.permanent = record_.current;
  record_.note(failed, "rolled back", why);
  // Back to a permanent release: nothing left to watch. Back to one that was
  // itself on probation: it starts a new one (execute_locked set it up), so
  // it still becomes permanent, or goes back in turn.
  if (target.permanent_at_ms) {
    probation_.reset();
  } else {
    // Should `target` fail in turn, it goes back to the last permanent
    // release, not forward into the one that just failed.
    record_.previous = record_.permanent;
  }
  write_record_locked();
}

void ReleaseHandler::start_watching() {
  watcher_ = std::thread([this] { watch(); });
}

void ReleaseHandler::watch() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_; });
    if (stopping_) break;
    if (probation_) {
      std::optional<std::string> failure;
      for (const auto& [module, before] : probation_->baseline) {
        const auto slot = table_.find(module);
        if (!slot) continue;
        const SlotStats now = slot->stats();
        const std::uint64_t calls = now.calls - before.calls;
        const std::uint64_t failed = now.failed_calls - before.failed_calls;
        if (calls >= options_.min_calls &&
            static_cast<double>(failed) > options_.max_error_rate * static_cast<double>(calls)) {
          failure = module + ": " + std::to_string(failed) + " of " + std::to_string(calls) +
                    " calls failed, more than the limit of " + fmt::format("{:g}", options_.max_error_rate * 100) + "%";
          break;
        }
        if (auto problem = slot->health()) {
          failure = module + ": health check: " + *problem;
          break;
        }
      }
      if (failure) {
        roll_back_locked(*failure);
      } else if (std::chrono::steady_clock::now() >= probation_->until) {
        make_permanent_locked("probation passed");
      }
    }
    if (options_.snapshot_interval.count() > 0 && std::chrono::steady_clock::now() >= next_snapshot_) {
      snapshot_all_locked("periodic");
      next_snapshot_ = std::chrono::steady_clock::now() + options_.snapshot_interval;
    }
  }
}

// --- status ------------------------------------------------------------------

ReleaseHandler::ChangeScope::ChangeScope(const ReleaseHandler& handler, const std::string& what) : handler_(handler) {
  if (handler_.options_.on_change) handler_.options_.on_change(ChangeNotice::Begin, what);
}

ReleaseHandler::ChangeScope::~ChangeScope() {
  if (handler_.options_.on_change) handler_.options_.on_change(ChangeNotice::End, handler_.summary_locked());
}

std::string ReleaseHandler::summary() const {
  std::lock_guard lock(mutex_);
  return summary_locked();
}

std::string ReleaseHandler::summary_locked() const {
  const auto slots = table_.slots();
  std::string out = "serving " + std::to_string(slots.size()) + (slots.size() == 1 ? " module" : " modules");
  for (std::size_t i = 0; i < slots.size(); ++i)
    out += (i == 0 ? ": " : ", ") + slots[i]->name() + " v" + std::to_string(slots[i]->running().info.version.value);
  return out + "; release " + record_.current.name + (record_.current_is_permanent() ? " (permanent)" : " (on probation)");
}

nlohmann::json ReleaseHandler::describe() const {
  std::lock_guard lock(mutex_);
  const auto release_json = [](const Release& r) {
    Json modules = Json::array();
    for (const auto& m : r.modules)
      modules.push_back({{"name", m.name}, {"version", m.version.value}, {"file", m.file}, {"sha256", m.sha256}});
    return Json{{"name", r.name}, {"installed_at_ms", r.installed_at_ms},
                {"permanent", r.permanent_at_ms.has_value()},
                {"permanent_at_ms", r.permanent_at_ms ? Json(*r.permanent_at_ms) : Json(nullptr)}, {"modules", modules}};
  };
  Json events = Json::array();
  for (const auto& e : record_.events)
    events.push_back({{"at_ms", e.at_ms}, {"release", e.release}, {"what", e.what}, {"detail", e.detail}});
  Json out{{"ok", true},
           {"current", release_json(record_.current)},
           {"previous", record_.previous ? release_json(*record_.previous) : Json(nullptr)},
           {"permanent", release_json(record_.permanent)},
           {"events", events}};
  out["probation_left_s"] =
      probation_ ? Json(std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::seconds>(
                                                       probation_->until - std::chrono::steady_clock::now()).count()))
                 : Json(nullptr);
  return out;
}

}  // namespace molt::host
