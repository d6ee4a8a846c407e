#include "molt/host/release/release_handler.hpp"

#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <functional>
#include <set>
#include <stdexcept>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/fault.hpp"
#include "molt/host/upgrade/transaction.hpp"
#include "molt/host/common/threads.hpp"

namespace molt::host {
namespace fs = std::filesystem;

namespace {

/// Whether `file` exists and was written after `than` (which exists too).
bool written_after(const fs::path& file, const fs::path& than) {
  std::error_code a, b;
  const auto file_time = fs::last_write_time(file, a);
  const auto than_time = fs::last_write_time(than, b);
  return !a && !b && file_time > than_time;
}

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

std::string v(api::ModuleVersion version) { return "v" + std::to_string(version.value); }

/// "2026-11-30 07:12:03 UTC"
std::string utc_text(std::chrono::system_clock::time_point at) {
  const std::time_t t = std::chrono::system_clock::to_time_t(at);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &utc);
  return text;
}

}  // namespace

ReleaseHandler::ReleaseHandler(ModuleTable& table, ModuleListeners& listeners, SnapshotStore& snapshots,
                               ReleaseOptions options, std::shared_ptr<spdlog::logger> log)
    : table_(table), listeners_(listeners), snapshots_(snapshots), options_(std::move(options)), log_(std::move(log)) {
  table_.set_before_migrating([this](ModuleSlot& slot, const ImageInfo& to) { keep_state_before(slot, to); });
}

ReleaseHandler::~ReleaseHandler() {
  table_.set_before_migrating({});
  {
    std::lock_guard lock(watch_mutex_);
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
  if (stored.value()) record_ = *stored.value();
  if (options_.crash) note_crash_locked(*options_.crash);
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
      if (!m.file.empty())
        boot.modules.push_back({m.name, {}, fs::absolute(m.file).lexically_normal().string(), {}, m.listen, m.values});
    record_.note(boot.name, "booted", "first start: the configuration's modules");
  } else {
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
      if (boot.find(m.name) != nullptr || m.file.empty()) continue;
      boot.modules.push_back({m.name, {}, fs::absolute(m.file).lexically_normal().string(), {}, m.listen, m.values});
      record_.note(boot.name, "module added", m.name + " from the configuration");
    }
    record_.note(boot.name, "booted");
  }

  for (const auto& m : config.modules)
    if (m.file.empty() && boot.find(m.name) == nullptr) {
      const auto moved = options_.elsewhere ? options_.elsewhere(m.name) : std::nullopt;
      not_started_[m.name] = moved ? *moved : "awaits a handoff (accept_handoff = true, no version here)";
    }
  std::erase_if(boot.modules, [&](const ReleaseModule& m) {
    const auto why = options_.elsewhere ? options_.elsewhere(m.name) : std::nullopt;
    if (!why) return false;
    log_->info("{}: not started: {}", m.name, *why);
    not_started_[m.name] = *why;
    return true;
  });
  for (auto& m : boot.modules) {
    // An image that crashed moltd again and again is quarantined: the boot
    // falls back to the module's image in the release that was permanent
    // before (with the state it can read), like OTP booting the old release.
    if (const auto quarantined = options_.quarantine && !m.sha256.empty() ? options_.quarantine->find_sha256(m.sha256)
                                                                          : std::nullopt) {
      const ReleaseModule* older = nullptr;
      if (record_.previous && record_.previous->permanent_at_ms)
        if (const auto* p = record_.previous->find(m.name);
            p != nullptr && p->sha256 != m.sha256 && !options_.quarantine->find_sha256(p->sha256))
          older = p;
      if (older == nullptr) {
        const std::string why = m.file + " is quarantined (" + quarantined->reason +
                                ") and no earlier permanent release has another image of it; clear it with 'moltctl "
                                "quarantine clear " + m.file + "' and restart, or install another version";
        log_->error("{}: not started: {}", m.name, why);
        not_started_[m.name] = why;
        continue;
      }
      log_->warn("{}: {} is quarantined ({}): booting v{} of release '{}' instead, with the state it can read", m.name,
                 m.file, quarantined->reason, older->version.value, record_.previous->name);
      record_.note(boot.name, "fell back", m.name + ": v" + std::to_string(older->version.value) + " of release '" +
                                                 record_.previous->name + "' (" + m.file + " is quarantined)");
      const auto listen = m.listen;
      const auto module_config = m.config;
      m = *older;
      m.listen = listen;
      m.config = module_config;
    }
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
    if (auto refused = restore_snapshot_locked(m.name)) {
      // It stays in the release (a restart tries again; moltctl restore
      // starts it from this entry), but does not run: no listener, no calls.
      table_.remove(m.name);
      log_->error("{}: not started: {}", m.name, *refused);
      not_started_[m.name] = std::move(*refused);
      continue;
    }
    auto bound = listeners_.listen_module(m.listen, slot);
    if (!bound) return std::move(bound).error();
    for (const auto& endpoint : bound.value()) slot->log().info("listening on {}", endpoint.to_string());
  }
  for (const auto& module : options_.allow_empty)
    if (boot.find(module) == nullptr)
      log_->warn("--allow-empty {}: release '{}' has no module {}", module, boot.name, module);
  record_.current = boot;
  record_.permanent = boot;
  write_record_locked();  // and publishes it
  log_->info("release '{}' running ({} module(s))", boot.name, boot.modules.size());
  return {};
}

Result<void> ReleaseHandler::prepare_take_over(const HostConfig& config,
                                               const std::map<std::string, std::string, std::less<>>& images,
                                               std::vector<NotStartedModule> not_started) {
  std::lock_guard lock(mutex_);
  auto stored = read_release_record(options_.record_path);
  if (!stored) return std::move(stored).error();
  if (!stored.value()) return release_error("(none)", "hot restart: no release record in " + options_.record_path.string());
  record_ = *stored.value();
  Release running = record_.current;
  for (auto& m : running.modules) {
    for (const auto& c : config.modules)  // as boot(): the configuration's settings win where it names the module
      if (c.name == m.name) {
        m.listen = c.listen;
        m.config = c.values;
      }
  }
  for (const auto& entry : not_started) not_started_[entry.module] = entry.reason;
  for (const auto& m : running.modules) {
    if (not_started_.contains(m.name)) continue;
    const auto image = images.find(m.name);
    if (image == images.end())
      return release_error(running.name, "hot restart: " + m.name + " is in release '" + running.name +
                                             "' but the previous moltd does not run it");
    auto checked = table_.loader().check(m.file, m.name);
    if (!checked) return std::move(checked).error();
    if (checked->sha256 != image->second)
      return release_error(running.name, "hot restart: " + m.name + ": " + m.file + " is not the image the previous "
                                             "moltd runs (sha256 " + checked->sha256.substr(0, 12) + ", running " +
                                             image->second.substr(0, 12) + "); put it back");
    if (auto started = table_.start(ModuleConfig{m.name, m.file, m.config, m.listen}); !started) return started;
  }
  taking_over_ = std::move(running);
  return {};
}

Result<void> ReleaseHandler::take_over(const std::function<Result<void>(ModuleSlot&)>& restore,
                                       std::optional<std::chrono::milliseconds> probation_left) {
  std::lock_guard lock(mutex_);
  if (!taking_over_) throw std::logic_error("take_over without prepare_take_over");
  const Release running = std::move(*taking_over_);
  taking_over_.reset();
  for (const auto& m : running.modules) {
    auto slot = table_.find(m.name);
    if (!slot) continue;  // not started in the predecessor either
    if (auto restored = restore(*slot); !restored) {
      Error error = std::move(restored).error();
      error.reason = "hot restart: the state handed over could not be restored: " + error.reason;
      return error;
    }
    auto bound = listeners_.listen_module(m.listen, slot);
    if (!bound) return std::move(bound).error();
    for (const auto& endpoint : bound.value()) slot->log().info("listening on {} (taken over)", endpoint.to_string());
    slot->log().info("taken over: {} with its state ({} bytes)", v(slot->running().info.version),
                     slot->stats().state_bytes.value_or(0));
  }
  if (probation_left) {
    Probation probation{std::chrono::steady_clock::now() + *probation_left, {}, ++probations_};
    for (const auto& slot : table_.slots()) probation.baseline.emplace(slot->name(), slot->stats());
    probation_ = std::move(probation);
  }
  record_.current = running;  // as the predecessor had it, with this configuration's settings
  publish_locked();  // written by record_take_over(), once clients no longer wait
  log_->info("release '{}' taken over ({} module(s)){}", running.name, running.modules.size(),
             probation_left ? ", on probation for " + std::to_string(probation_left->count() / 1000) + " s more" : "");
  return {};
}

// gave_away and received run inside while_unchanged: mutex_ is held.
void ReleaseHandler::gave_away(const std::string& module, const std::string& why) {
  table_.remove(module);
  const auto without = [&](Release& release) {
    std::erase_if(release.modules, [&](const ReleaseModule& m) { return m.name == module; });
  };
  without(record_.current);
  without(record_.permanent);
  not_started_[module] = why;
  if (probation_) probation_->baseline.erase(module);
  record_.note(record_.current.name, "module handed off", module + ": " + why);
  write_record_locked();  // and publishes
  {
    std::lock_guard watch(watch_mutex_);
    pending_snapshots_.erase(module);
  }
}

Result<std::vector<Endpoint>> ReleaseHandler::received(std::shared_ptr<ModuleSlot> slot, const ModuleConfig& settings,
                                                       const std::string& why) {
  const std::string module = slot->name();
  table_.insert(slot);
  auto bound = listeners_.listen_module(settings.listen, slot);
  if (!bound) {
    table_.remove(module);
    return std::move(bound).error();
  }
  for (const auto& endpoint : bound.value()) slot->log().info("listening on {} (handed over)", endpoint.to_string());
  const ReleaseModule entry = entry_for(*slot, settings.listen, settings.values);
  const auto with = [&](Release& release) {
    if (ReleaseModule* existing = release.find(module)) *existing = entry;
    else release.modules.push_back(entry);
  };
  // In both: a module handed over is no part of a probation (a boot of the
  // permanent release must start it).
  with(record_.current);
  with(record_.permanent);
  not_started_.erase(module);
  record_.note(record_.current.name, "module handed over", module + ": " + why);
  write_record_locked();  // and publishes
  schedule_snapshot(module, "handoff", std::chrono::steady_clock::now());
  return std::move(bound.value());
}

void ReleaseHandler::record_take_over() {
  std::lock_guard lock(mutex_);
  record_.note(record_.current.name, "hot restart", "moltd pid " + std::to_string(::getpid()) + " took over");
  write_record_locked();
}

Result<void> ReleaseHandler::while_unchanged(
    const std::string& what, const std::function<Result<void>(std::optional<std::chrono::milliseconds>)>& hand_over) {
  auto lock = lock_change(what);
  if (!lock) return std::move(lock).error();
  std::optional<std::chrono::milliseconds> left;
  if (probation_)
    left = std::max(std::chrono::milliseconds(0), std::chrono::duration_cast<std::chrono::milliseconds>(
                                                      probation_->until - std::chrono::steady_clock::now()));
  return hand_over(left);
}

void ReleaseHandler::note_crash_locked(const CrashRecord& crash) {
  const std::string line = crash_line(crash);
  log_->error("{}", line);
  const std::int64_t now = now_ms();
  nlohmann::json entry{{"kind", "crash"},
                       {"module", crash.module ? crash.module->module : std::string("(host)")},
                       {"at_ms", crash.time_ms},
                       {"line", line},
                       {"release", record_.current.name}};
  if (auto why = table_.history_log().append(entry)) log_->warn("history not kept on disk: {}", *why);
  record_.note(record_.current.name.empty() ? options_.initial_release : record_.current.name, "crashed", line);
  if (!crash.module || options_.crash_log == nullptr) return;
  if (auto appended = options_.crash_log->append(crash_log_entry(crash)); !appended)
    log_->warn("crash log: {}", appended.error().to_string());
  // New code, on probation or being installed when it crashed (its
  // load_state in the upgrade): not an image of the last permanent release.
  const bool permanent_image =
      std::any_of(record_.permanent.modules.begin(), record_.permanent.modules.end(),
                  [&](const ReleaseModule& m) { return m.sha256 == crash.module->sha256; });
  const ReleaseStatus status = permanent_image ? ReleaseStatus::Permanent : ReleaseStatus::OnProbation;
  const auto reason = quarantine_reason(crash, status, *options_.crash_log, options_.crash_loop, now);
  if (!reason || options_.quarantine == nullptr) return;
  if (auto added = options_.quarantine->add(quarantine_entry(crash, *reason, now)); !added) {
    log_->error("quarantine: {}", added.error().to_string());
    return;
  }
  log_->error("quarantined {} (sha256 {}…): {}; moltd will not run it again until 'moltctl quarantine clear {}'",
              crash.module->file, crash.module->sha256.substr(0, 12), *reason, crash.module->file);
  record_.note(record_.current.name, "quarantined", crash.module->file + ": " + *reason);
}

std::optional<StateBlob> ReleaseHandler::snapshot_of_locked(const std::string& module, spdlog::logger& log) {
  auto loaded = snapshots_.load(module);
  if (loaded) return std::move(loaded.value());
  auto moved = snapshots_.move_aside(module, "corrupt");
  log.error("{}; moved to {}; {} starts with its initial state (to recover an older state: moltctl restore {} FILE)",
            loaded.error().to_string(), moved ? moved->string() : std::string("(could not move it)"), module, module);
  return std::nullopt;
}

// The booted version runs schema S and reads schemas up to S (its load_state
// migrates older ones up). A snapshot in a newer schema was written by a
// release that never became permanent: converting it down would mean
// running that release's code, which a boot never does. The state kept in
// schema S when the module left it (keep_state_before) is what the
// permanent version's own code can read; what it lacks is said in one line.
// With no snapshot at all, the kept state is still the module's: moltd kept
// it before an upgrade, then stopped (a crash in the new code, a save_state
// that never returned) before that upgrade's first snapshot was written.
std::optional<std::string> ReleaseHandler::restore_snapshot_locked(const std::string& module) {
  auto slot = table_.find(module);
  const ImageInfo running = slot->running().info;
  const fs::path path = snapshots_.path_of(module);
  auto loaded = snapshots_.load(module);
  const bool no_snapshot = loaded && !loaded.value();
  std::error_code ec;  // anything at the kept state's path counts (load_kept refuses what it cannot trust)
  if (no_snapshot && !fs::exists(fs::symlink_status(snapshots_.path_of_kept(module, running.schema), ec))) {
    slot->log().info("no snapshot in {}: starts with its initial state (it never saved one)", path.string());
    return std::nullopt;
  }

  std::string why;         // why the snapshot is not what runs
  std::string aside_name;  // what the snapshot is called once set aside
  if (no_snapshot) {
    why = "no snapshot was written";
    aside_name = "none";  // nothing to set aside
  } else if (!loaded) {
    why = loaded.error().to_string();
    aside_name = "corrupt";
  } else if (const StateBlob& blob = *loaded.value(); blob.schema > running.schema) {
    why = "the snapshot was written by " + v(blob.version) + " in schema " + std::to_string(blob.schema.value);
    aside_name = "unbooted";
  } else if (written_after(snapshots_.path_of_kept(module, running.schema), path)) {
    // Kept before an upgrade that never wrote a snapshot of its own (moltd
    // stopped first): the newer of the two states this version reads.
    why = "the snapshot is older than the state kept in schema " + std::to_string(running.schema.value);
    aside_name = "older";
  } else {
    const UpgradeReport report = host::restore(*slot, table_.loader(), blob, {}, table_.options().upgrade);
    slot->forget_previous();  // a restore is not an upgrade: nothing to roll back to
    if (report.outcome == Outcome::Succeeded) {
      if (auto host = slot->restore_host_part(blob.host); !host) slot->log().error("{}", host.error().to_string());
      slot->log().info("state restored from {} (written by {}, {} bytes)", path.string(), v(blob.version),
                       blob.bytes.size());
      return std::nullopt;
    }
    why = "the snapshot (" + v(blob.version) + ", schema " + std::to_string(blob.schema.value) +
          ") could not be restored: " + report.summary();
    aside_name = "unrestorable";
  }

  const std::string schema = std::to_string(running.schema.value);
  std::string none_kept = "none kept in schema " + schema;
  auto kept = snapshots_.load_kept(module, running.schema);
  if (!kept) {
    none_kept = "the state kept in schema " + schema + " cannot be read either (" + kept.error().to_string() + ")";
  } else if (kept.value()) {
    const StateBlob& state = kept.value()->blob;
    const UpgradeReport report = host::restore(*slot, table_.loader(), state, {}, table_.options().upgrade);
    slot->forget_previous();
    if (report.outcome == Outcome::Succeeded) {
      if (auto host = slot->restore_host_part(state.host); !host) slot->log().error("{}", host.error().to_string());
      // The kept state becomes the snapshot, so that a crash now boots the
      // same; the snapshot it replaces is kept for an operator.
      auto replaced = snapshots_.replace(state, aside_name);
      const std::string where = !replaced         ? "still at " + path.string() + " (" + replaced.error().to_string() + ")"
                                : replaced.value() ? "kept at " + replaced.value()->string()
                                                   : "gone";
      std::string snapshot;
      if (no_snapshot)
        snapshot = replaced ? "no snapshot was written after it"
                            : "no snapshot was written after it, nor now (" + replaced.error().to_string() + ")";
      else if (!loaded)
        snapshot = "the unreadable snapshot is " + where + " (" + why + ")";
      else if (loaded.value()->schema > running.schema)
        snapshot = "the newer snapshot (" + v(loaded.value()->version) + ", schema " +
                   std::to_string(loaded.value()->schema.value) + ") is " + where +
                   " for moltctl restore once a version that reads it runs";
      else if (aside_name == "older")
        snapshot = "the older snapshot is " + where;
      else
        snapshot = "the snapshot that could not be restored is " + where + " (" + why + ")";
      log_->warn("{}: booting {} from the state kept in schema {} at {}: writes to {} since then are not in it; {}",
                 module, v(running.version), schema, utc_text(kept.value()->at), module, snapshot);
      return std::nullopt;
    }
    none_kept = "the state kept in schema " + schema + " could not be restored either (" + report.summary() + ")";
  }

  const std::string no_state = "no state " + v(running.version) + " can read (" + why + ") and " + none_kept;
  if (options_.allow_empty.contains(module)) {
    // Set aside, so that the first snapshot does not overwrite it and a
    // restart does not refuse the module again.
    std::string snapshot = "none";
    if (!no_snapshot) {
      auto moved = snapshots_.move_aside(module, aside_name);
      snapshot = moved ? "kept at " + moved->string() : "still at " + path.string();
    }
    log_->warn("{}: started with its initial state (--allow-empty {}): {}; the snapshot is {}", module, module,
               no_state, snapshot);
    return std::nullopt;
  }
  // The snapshot stays where it is: a restart refuses the module again
  // rather than find nothing and start it empty.
  return no_state + "; restore one with 'moltctl restore " + module + " FILE', or start moltd with --allow-empty " +
         module + " to start it with its initial state";
}

std::vector<NotStartedModule> ReleaseHandler::not_started() const {
  std::lock_guard lock(view_mutex_);
  return published_not_started_;
}

// --- kept states -------------------------------------------------------------

// Called by ModuleTable::run before an upgrade that leaves the module's
// schema, with the change lock held (every upgrade is a change). The price
// is one more pause of the module, said in the log line. A failure does not
// stop the upgrade: the release can still be made permanent; only a boot
// before that would have nothing to start from.
void ReleaseHandler::keep_state_before(ModuleSlot& slot, const ImageInfo& to) {
  const ImageInfo from = slot.running().info;
  const auto began = std::chrono::steady_clock::now();
  // The thread that saves may outlive this call (a save past its deadline):
  // nothing of this frame in `keep`. The store outlives the handler.
  auto kept = slot.save_state(
      options_.save_timeout, options_.save_run_timeout,
      [store = &snapshots_](const StateBlob& blob) { return store->save_kept(blob); }, ModuleSlot::Yield::Never,
      [store = &snapshots_](const StateBlob& about) { return store->open_kept_parts(about); });
  if (!kept) {
    // An older kept state in this schema would now be taken for the state
    // the module left it with: set it aside.
    auto stale = snapshots_.move_kept_aside(slot.name(), from.schema, "stale");
    slot.log().error("{} {}: state not kept in schema {} before the upgrade to {} ({}); should moltd restart before "
                     "the new release is permanent, {} {} has no state to start from{}",
                     slot.name(), v(from.version), from.schema.value, v(to.version), kept.error().to_string(),
                     slot.name(), v(from.version),
                     stale && stale.value() ? "; the older kept state is set aside at " + stale.value()->string() : "");
    return;
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began);
  slot.log().info("kept {}'s state in schema {} before the upgrade to {} (schema {}): {} bytes in {} ms{}, in {}",
                  slot.name(), from.schema.value, v(to.version), to.schema.value,
                  slot.stats().state_bytes.value_or(0), ms.count(),
                  kept->encoding == StateEncoding::Parts ? " as pre-copy parts" : "",
                  snapshots_.path_of_kept(slot.name(), from.schema).string());
}

// --- snapshots --------------------------------------------------------------

std::optional<std::string> ReleaseHandler::snapshot(const std::string& module, std::string_view why,
                                                    ModuleSlot::Yield yield) {
  auto slot = table_.find(module);
  if (!slot) {
    // Removed since it was asked for: nothing left to take, and a request
    // left pending would be due for ever.
    std::lock_guard lock(watch_mutex_);
    pending_snapshots_.erase(module);
    return "no such module";
  }
  const auto started = std::chrono::steady_clock::now();
  auto blob = slot->save_state(
      options_.save_timeout, options_.save_run_timeout,
      [store = &snapshots_](const StateBlob& taken) { return store->save(taken); }, yield,
      [store = &snapshots_](const StateBlob& about) { return store->open_parts(about); });
  if (!blob && blob.error().reason == kGaveWayToUpgrade) {
    slot->log().debug("{} snapshot {}", why, kGaveWayToUpgrade);
    return blob.error().reason;
  }
  {
    // Written (or failed: logged, and the next request tries again): what
    // was asked for before it began is done.
    std::lock_guard lock(watch_mutex_);
    if (auto it = pending_snapshots_.find(module); it != pending_snapshots_.end() && it->second.requested <= started)
      pending_snapshots_.erase(it);
  }
  if (!blob) {
    slot->log().error("{} snapshot not written: {}", why, blob.error().to_string());
    return blob.error().reason;
  }
  // Shutdown and requested snapshots are what an operator looks for in the log; periodic ones would flood it.
  const auto bytes = slot->stats().state_bytes.value_or(0);
  const char* parts = blob->encoding == StateEncoding::Parts ? " (pre-copy parts)" : "";
  if (why == "periodic") slot->log().debug("{} snapshot: {} bytes{}", why, bytes, parts);
  else slot->log().info("{} snapshot written: {} bytes of state{} in {}", why, bytes, parts, snapshots_.path_of(module).string());
  return std::nullopt;
}

void ReleaseHandler::schedule_snapshot(const std::string& module, std::string_view why,
                                       std::chrono::steady_clock::time_point due) {
  {
    std::lock_guard lock(watch_mutex_);
    auto [it, added] = pending_snapshots_.try_emplace(module, PendingSnapshot{std::string(why), std::chrono::steady_clock::now(), due});
    if (!added) {
      PendingSnapshot& pending = it->second;
      if (pending.why != "upgrade") pending.why = why;  // an install's is the one an operator looks for
      pending.due = std::min(std::max(pending.due, due), pending.requested + kMaxSnapshotDefer);
    }
    rescheduled_ = true;
  }
  wake_.notify_all();
}

std::map<std::string, std::string> ReleaseHandler::pending_snapshots() const {
  std::lock_guard lock(watch_mutex_);
  std::map<std::string, std::string> out;
  for (const auto& [module, pending] : pending_snapshots_) out.emplace(module, pending.why);
  return out;
}

void ReleaseHandler::take_due_snapshots() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::pair<std::string, PendingSnapshot>> due;
  {
    std::lock_guard lock(watch_mutex_);
    for (const auto& [module, pending] : pending_snapshots_)
      if (pending.due <= now) due.emplace_back(module, pending);
  }
  for (const auto& [module, pending] : due) {
    if (stopping()) return;
    const auto yield = now - pending.requested < kMaxSnapshotDefer ? ModuleSlot::Yield::ToUpgrades : ModuleSlot::Yield::Never;
    if (auto failed = snapshot(module, pending.why, yield); failed && *failed == kGaveWayToUpgrade) {
      // After the upgrade it gave way to (whose install asks again, if it installs).
      std::lock_guard lock(watch_mutex_);
      if (auto it = pending_snapshots_.find(module); it != pending_snapshots_.end())
        it->second.due = std::max(it->second.due, std::chrono::steady_clock::now() + options_.install_snapshot_delay);
    }
  }
}

bool ReleaseHandler::stopping() const {
  std::lock_guard lock(watch_mutex_);
  return stopping_;
}

std::vector<std::string> ReleaseHandler::save_all() {
  std::vector<std::string> failed;
  for (const auto& slot : table_.slots())
    if (auto why = snapshot(slot->name(), "requested")) failed.push_back(slot->name() + ": " + *why);
  return failed;
}

std::vector<std::string> ReleaseHandler::shut_down() {
  {
    std::lock_guard lock(watch_mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (watcher_.joinable()) watcher_.join();
  std::vector<std::string> failed;
  for (const auto& slot : table_.slots())
    if (auto why = snapshot(slot->name(), "shutdown")) failed.push_back(slot->name() + ": " + *why);
  return failed;
}

void ReleaseHandler::write_record_locked() {
  fault_point("release.record");
  if (auto written = write_release_record(options_.record_path, record_); !written)
    log_->error("{} (a restart would boot release '{}')", written.error().to_string(), record_.permanent.name);
  publish_locked();
}

void ReleaseHandler::publish_locked() {
  std::lock_guard lock(view_mutex_);
  published_record_ = record_;
  published_not_started_.clear();
  for (const auto& [module, reason] : not_started_) published_not_started_.push_back({module, reason});
  published_probation_until_.reset();
  if (probation_) published_probation_until_ = probation_->until;
}

// --- the change lock -----------------------------------------------------------

ReleaseHandler::ChangeLock::ChangeLock(ReleaseHandler& handler, std::unique_lock<std::timed_mutex> lock, std::string what)
    : handler_(&handler), lock_(std::move(lock)) {
  std::lock_guard view(handler_->view_mutex_);
  handler_->changing_ = std::move(what);
  handler_->changing_since_ = std::chrono::steady_clock::now();
}

ReleaseHandler::ChangeLock::~ChangeLock() {
  if (!lock_.owns_lock()) return;  // moved from
  std::lock_guard view(handler_->view_mutex_);
  handler_->changing_.clear();
}

Result<ReleaseHandler::ChangeLock> ReleaseHandler::lock_change(std::string what) {
  std::unique_lock lock(mutex_, std::chrono::seconds(1));
  if (!lock.owns_lock()) {
    std::lock_guard view(view_mutex_);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - changing_since_);
    return Error{{}, {}, {}, Phase::Release,
                 "busy: " + (changing_.empty() ? std::string("another change") : changing_) + " has run for " +
                     std::to_string(ms.count()) + " ms; try again when it ends (moltctl status shows what each module is doing)"};
  }
  return ChangeLock(*this, std::move(lock), std::move(what));
}

// --- install ------------------------------------------------------------------

UpgradeScript ReleaseHandler::down_script(const UpgradeScript& script) const {
  std::lock_guard lock(view_mutex_);
  const ReleaseRecord& record = published_record_;
  UpgradeScript down = reversed(script);
  down.release = record.previous && record.current.name == script.release ? record.previous->name
                                                                           : script.release + "-down";
  return down;
}

Result<ReleasePlan> ReleaseHandler::check(const UpgradeScript& script) {
  auto lock = lock_change("checking release " + script.release);
  if (!lock) return std::move(lock).error();
  auto plan = plan_locked(script);
  if (!plan) return plan;
  if (auto checked = check_release(plan.value(), table_); !checked) return std::move(checked).error();
  return plan;
}

Result<ReleasePlan> ReleaseHandler::plan_locked(const UpgradeScript& script) const {
  PlanContext context;
  for (const auto& slot : table_.slots()) context.running.push_back(entry_for(*slot, {}, {}));
  context.plugin_dir = options_.plugin_dir;
  for (const Release* r : {&record_.current, record_.previous ? &*record_.previous : nullptr, &record_.permanent})
    if (r != nullptr) context.known.insert(context.known.end(), r->modules.begin(), r->modules.end());
  return plan_release(script, context);
}

ReleaseOutcome ReleaseHandler::install(const UpgradeScript& script) {
  auto lock = lock_change("installing release " + script.release);
  if (!lock) return ReleaseOutcome{script.release, false, {}, std::move(lock).error()};
  const ChangeScope change(*this, "installing release " + script.release);
  auto plan = plan_locked(script);
  if (!plan) return ReleaseOutcome{script.release, false, {}, std::move(plan).error()};
  return install_locked(std::move(plan.value()), std::to_string(script.steps.size()) + " step(s)");
}

ReleaseOutcome ReleaseHandler::install_locked(ReleasePlan plan, const std::string& detail) {
  // What the record will say of each module the release keeps or adds: its
  // settings as they are, or as the step gives them.
  std::map<std::string, std::pair<std::vector<Endpoint>, api::Values>, std::less<>> settings;
  std::set<std::string, std::less<>> removed;
  std::vector<std::string> changed;
  for (auto& step : plan.steps) {
    if (auto* add = std::get_if<release_step::Add>(&step)) {
      // Its snapshot is one its version cannot read: adding it would start it empty.
      if (const auto it = not_started_.find(add->module.name); it != not_started_.end())
        return ReleaseOutcome{plan.release, false, {},
                              release_error(plan.release, "not installed: " + add->module.name +
                                                              " was not started at boot: " + it->second)};
      settings[add->module.name] = {add->module.listen, add->module.values};
      add->state = snapshot_of_locked(add->module.name, *log_);  // a removal undone: its last state comes back
    }
    if (std::holds_alternative<release_step::Remove>(step))
      removed.insert(module_of(step));
    else
      changed.push_back(module_of(step));
  }
  const std::string name = plan.release;
  ReleaseOutcome outcome = run_release(std::move(plan), scope());
  if (!outcome.installed) return outcome;

  Release next = record_.current;
  next.name = name;
  std::erase_if(next.modules, [&](const ReleaseModule& m) { return removed.contains(m.name); });
  for (const auto& module : changed) {
    const auto slot = table_.find(module);
    if (ReleaseModule* entry = next.find(module))
      *entry = entry_for(*slot, entry->listen, entry->config);
    else
      next.modules.push_back(entry_for(*slot, settings[module].first, settings[module].second));
  }
  installed_locked(std::move(next), changed, detail);
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
  // In the background, after the installs that follow within the delay (a
  // crash before then boots from the last snapshot or kept state, as ever).
  for (const auto& module : changed)
    schedule_snapshot(module, "upgrade", std::chrono::steady_clock::now() + options_.install_snapshot_delay);
  if (next.permanent_at_ms) {
    probation_.reset();
    publish_locked();
    log_->info("release '{}' installed and permanent", next.name);
    return;
  }
  Probation probation{std::chrono::steady_clock::now() + options_.probation, {}, ++probations_};
  for (const auto& module : changed)
    if (auto slot = table_.find(module)) probation.baseline.emplace(module, slot->stats());
  probation_ = std::move(probation);
  publish_locked();
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
  auto lock = lock_change("reloading " + std::string(module));
  if (!lock) return std::move(lock).error();
  const ChangeScope change(*this, "reloading " + std::string(module));
  auto report = table_.reload(module, file, extra);
  if (report && report->outcome == Outcome::Succeeded)
    installed_locked(with_module_changed(std::string(module)), {std::string(module)}, "moltctl reload " + std::string(module));
  return report;
}

Result<UpgradeReport> ReleaseHandler::rollback_module(std::string_view module, const api::Values& extra) {
  auto lock = lock_change("rolling back " + std::string(module));
  if (!lock) return std::move(lock).error();
  const ChangeScope change(*this, "rolling back " + std::string(module));
  auto report = table_.rollback(module, extra);
  if (report && report->outcome == Outcome::Succeeded)
    installed_locked(with_module_changed(std::string(module)), {std::string(module)}, "moltctl rollback " + std::string(module));
  return report;
}

std::vector<UpgradeReport> ReleaseHandler::reload_changed() {
  auto lock = lock_change("reloading the modules whose file changed");
  if (!lock) {
    log_->error("reload of the modules whose file changed not done: {}", lock.error().to_string());
    return {};
  }
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
  auto lock = lock_change("restoring " + std::string(module));
  if (!lock) return std::move(lock).error();
  const ChangeScope change(*this, "restoring " + std::string(module) + " from " + archive.string());
  auto slot = table_.find(module);
  if (!slot && !not_started_.contains(module)) return Error{std::string(module), {}, {}, Phase::Snapshot, "no such module"};
  if (!blob) {
    Error error = std::move(blob).error();
    error.module = std::string(module);
    return error;
  }
  if (!slot) return start_restored_locked(std::string(module), std::move(blob.value()), archive);
  const std::string host = blob->host;
  ReleasePlan plan{record_.current.name, {}};
  plan.steps.push_back(release_step::Restore{{"moltctl restore", 1}, std::string(module), std::move(blob.value())});
  ReleaseOutcome outcome = run_release(std::move(plan), scope());  // an operator's transaction: in the history
  if (outcome.reports.empty()) return std::move(*outcome.error);
  UpgradeReport report = std::move(outcome.reports.front());
  if (report.outcome == Outcome::Succeeded) {
    // An archive without a host part (a fixture, an older snapshot) keeps the jobs and timers the module has.
    if (!host.empty())
      if (auto restored = slot->restore_host_part(host); !restored) slot->log().error("{}", restored.error().to_string());
    (void)snapshot(std::string(module), "restore");  // logs its own failure
  }
  return report;
}

// A module boot did not start comes back as its entry in the current release
// says (file, pinned sha256, configuration, listeners), as a release step
// that adds it with `state`, which must restore (an archive in a schema its
// version cannot read fails the step): it starts with that state or not at all.
Result<UpgradeReport> ReleaseHandler::start_restored_locked(const std::string& module, StateBlob state,
                                                            const fs::path& archive) {
  const ReleaseModule* entry = record_.current.find(module);
  if (entry == nullptr)  // not_started_ names modules of the current release
    return Error{module, {}, {}, Phase::Snapshot, "not in release '" + record_.current.name + "'"};
  ReleasePlan plan{record_.current.name, {}};
  release_step::Add add{{"moltctl restore", 1}, ModuleConfig{entry->name, entry->file, entry->config, entry->listen},
                        entry->version, std::nullopt, std::move(state)};
  if (!entry->sha256.empty()) add.sha256 = entry->sha256;
  add.if_state_fails = release_step::Add::IfStateFails::Fail;
  plan.steps.push_back(std::move(add));
  ReleaseOutcome outcome = run_release(std::move(plan), scope());
  if (!outcome.installed) {
    if (!outcome.reports.empty()) return std::move(outcome.reports.front());
    return std::move(*outcome.error);
  }
  not_started_.erase(module);
  record_.note(record_.current.name, "module restored", module + " from " + archive.string() + " (not started at boot)");
  write_record_locked();  // and publishes: status no longer lists it
  // The snapshot it could not boot from is kept for an operator; the
  // restored state becomes its snapshot.
  if (auto moved = snapshots_.move_aside(module, "unbooted"))
    log_->info("{}: started from {}; the snapshot it could not boot from is kept at {}", module, archive.string(),
               moved->string());
  else
    log_->info("{}: started from {}", module, archive.string());
  (void)snapshot(module, "restore");  // logs its own failure
  return std::move(outcome.reports.front());
}

// --- probation ------------------------------------------------------------------

Result<void> ReleaseHandler::commit() {
  auto lock = lock_change("commit");
  if (!lock) return std::move(lock).error();
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
  write_record_locked();  // and publishes
  log_->info("release '{}' is permanent ({})", record_.current.name, why);
  if (options_.on_change) options_.on_change(ChangeNotice::Status, summary_locked());
}

void ReleaseHandler::roll_back_locked(const std::string& why) {
  probation_.reset();
  publish_locked();
  const std::string failed = record_.current.name;
  if (!record_.previous) {
    log_->error("release '{}' failed probation ({}) but there is no previous release to return to", failed, why);
    return;
  }
  const Release target = *record_.previous;
  log_->error("release '{}' failed probation: {}; rolling back to '{}'", failed, why, target.name);
  const ChangeScope change(*this, "rolling release " + failed + " back to " + target.name + " (failed probation)");

  auto plan = plan_locked(script_between(record_.current, target));
  ReleaseOutcome outcome = plan ? install_locked(std::move(plan.value()), "rollback of " + failed)
                                : ReleaseOutcome{target.name, false, {}, std::move(plan).error()};
  if (!outcome.installed) {
    log_->critical("rolling release '{}' back to '{}' failed: {}; '{}' keeps running: fix it and run moltctl upgrade --down",
                   failed, target.name, outcome.error ? outcome.error->to_string() : "?", failed);
    record_.note(failed, "rollback failed", outcome.error ? outcome.error->to_string() : "");
    write_record_locked();
    return;
  }
  // install_locked recorded `target` as a new install; it is the release
  // that ran before, permanent as it was.
  record_.current.permanent_at_ms = target.permanent_at_ms;
  if (target.permanent_at_ms) record_.permanent = record_.current;
  record_.note(failed, "rolled back", why);
  // Back to a permanent release: nothing left to watch. Back to one that was
  // itself on probation: it starts a new one (install_locked set it up), so
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
  watcher_ = std::thread([this] {
    name_this_thread("molt-release");
    watch();
  });
}

std::optional<std::string> ReleaseHandler::check_probation(const Probation& probation) {
  for (const auto& [module, before] : probation.baseline) {
    const auto slot = table_.find(module);
    if (!slot) continue;
    const SlotStats now = slot->stats();
    const std::uint64_t calls = now.calls - before.calls;
    const std::uint64_t failed = now.failed_calls - before.failed_calls;
    if (calls >= options_.min_calls &&
        static_cast<double>(failed) > options_.max_error_rate * static_cast<double>(calls))
      return module + ": " + std::to_string(failed) + " of " + std::to_string(calls) +
             " calls failed, more than the limit of " + fmt::format("{:g}", options_.max_error_rate * 100) + "%";
    if (auto problem = slot->health(options_.health_timeout)) return module + ": health check: " + *problem;
  }
  return std::nullopt;
}

// Each second: checks the release on probation (without any lock: a module
// that does not answer costs its health check's deadline, nothing more),
// then acts on the result under the change lock if that probation is still
// the current one; and asks for the periodic snapshots. Whenever one is
// due: takes the snapshots asked for.
void ReleaseHandler::watch() {
  using Clock = std::chrono::steady_clock;
  next_snapshot_ = Clock::now() + options_.snapshot_interval;
  auto next_check = Clock::now() + std::chrono::seconds(1);
  while (true) {
    {
      std::unique_lock lock(watch_mutex_);
      auto until = next_check;
      for (const auto& [module, pending] : pending_snapshots_) until = std::min(until, pending.due);
      wake_.wait_until(lock, until, [this] { return stopping_ || rescheduled_; });
      if (stopping_) break;
      rescheduled_ = false;  // its due time is in the next wait's
    }
    if (Clock::now() >= next_check) {
      check_probation_now();
      if (options_.snapshot_interval.count() > 0 && Clock::now() >= next_snapshot_) {
        for (const auto& slot : table_.slots()) schedule_snapshot(slot->name(), "periodic", Clock::now());
        next_snapshot_ = Clock::now() + options_.snapshot_interval;
      }
      next_check = Clock::now() + std::chrono::seconds(1);
    }
    take_due_snapshots();  // each logs its failure
  }
}

void ReleaseHandler::check_probation_now() {
  std::optional<Probation> probation;
  if (std::unique_lock lock(mutex_, std::try_to_lock); lock.owns_lock()) probation = probation_;
  if (!probation) return;
  const auto failure = check_probation(*probation);
  const bool passed = !failure && std::chrono::steady_clock::now() >= probation->until;
  if (!failure && !passed) return;
  // A change in progress (an install, a commit) may end this probation first.
  std::unique_lock lock(mutex_, std::defer_lock);
  while (!stopping() && !lock.try_lock_for(std::chrono::seconds(1))) {
  }
  if (lock.owns_lock() && probation_ && probation_->number == probation->number) {
    const ChangeLock named(*this, std::move(lock), failure ? "rolling back a release that failed probation"
                                                           : "making a release permanent");
    if (failure) roll_back_locked(*failure);
    else make_permanent_locked("probation passed");
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
  std::lock_guard lock(view_mutex_);
  return summary_of(table_, published_record_.current, published_record_.current_is_permanent());
}

std::string ReleaseHandler::summary_locked() const {
  return summary_of(table_, record_.current, record_.current_is_permanent());
}

std::string ReleaseHandler::summary_of(const ModuleTable& table, const Release& current, bool permanent) {
  const auto slots = table.slots();
  std::string out = "serving " + std::to_string(slots.size()) + (slots.size() == 1 ? " module" : " modules");
  for (std::size_t i = 0; i < slots.size(); ++i)
    out += (i == 0 ? ": " : ", ") + slots[i]->name() + " v" + std::to_string(slots[i]->running().info.version.value);
  return out + "; release " + current.name + (permanent ? " (permanent)" : " (on probation)");
}

ReleaseView ReleaseHandler::view() const {
  std::lock_guard lock(view_mutex_);
  ReleaseView view{published_record_, std::nullopt};
  if (published_probation_until_)
    view.probation_left = std::max(std::chrono::seconds(0), std::chrono::duration_cast<std::chrono::seconds>(
                                                                *published_probation_until_ - std::chrono::steady_clock::now()));
  return view;
}

}  // namespace molt::host
