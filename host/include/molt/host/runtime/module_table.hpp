// The modules a host runs, by name, and the operations an operator asks for:
// reload, rollback, snapshot. Every upgrade goes through the transaction and
// its report into the history. No sockets here: the control socket, the HTTP
// server and the signal handler all call this.
#pragma once

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "molt/host/config/host_config.hpp"
#include "molt/host/loader/loader.hpp"
#include "molt/host/slot/module_slot.hpp"
#include "molt/host/runtime/history_log.hpp"
#include "molt/host/upgrade/report.hpp"
#include "molt/host/upgrade/release_transaction.hpp"
#include "molt/host/upgrade/transaction.hpp"

namespace molt::host {

struct TableOptions {
  std::filesystem::path plugin_dir;
  UpgradeOptions upgrade;
  /// Makes the logger of a module, named after it.
  std::function<std::shared_ptr<spdlog::logger>(const std::string& module)> make_logger;
  /// Worker threads stepping the modules' jobs (0: jobs are recorded, never run).
  unsigned job_threads = 2;
  /// The limits on the modules' connections (Context::stream_limits).
  api::StreamLimits stream_limits{1ull << 30, 1ull << 20};
  /// How long an instance's stop() and destructor may take (SlotOptions).
  std::chrono::milliseconds stop_timeout{5000};
  /// Where the history is kept across restarts (HistoryLog); empty: in memory.
  std::filesystem::path history_file = {};
};

class ModuleTable final : public RunningModules {
 public:
  ModuleTable(Loader& loader, TableOptions options);
  /// Stops the jobs, then the modules, last started first.
  ~ModuleTable() {
    stop_jobs();
    stop_all();
  }
  /// Stops stepping jobs, after the steps in progress (shutdown: before the
  /// last snapshots, so that they hold every step that ran).
  /// False when a step was still running after `wait` (a module stuck in
  /// it): its worker is left running, so the table must then never be
  /// destroyed.
  bool stop_jobs(std::chrono::milliseconds wait = std::chrono::milliseconds::max()) {
    return jobs_ ? jobs_->stop(wait) : true;
  }
  /// Stops every module, last started first. Precondition: no calls in flight or to come.
  void stop_all();
  ModuleTable(const ModuleTable&) = delete;
  ModuleTable& operator=(const ModuleTable&) = delete;

  /// Loads and starts a module. Fails with the loader's or the module's error.
  Result<void> start(const ModuleConfig& module);
  /// Loads and starts a module without serving it yet (see insert).
  Result<std::shared_ptr<ModuleSlot>> prepare(const ModuleConfig& module) override;
  /// Serves a prepared module.
  void insert(std::shared_ptr<ModuleSlot> slot) override;
  /// Stops serving `name` and hands its slot over (it stops when released).
  std::shared_ptr<ModuleSlot> remove(std::string_view name) override;

  /// Runs one transaction over several modules (all or none) and records
  /// every report in the history. Before it, calls the before-migrating
  /// hook for each step whose image declares another schema than its module
  /// runs (read with Loader::check: no module code runs for it).
  std::vector<UpgradeReport> run(std::span<const UpgradeTarget> steps) override;

  /// What run() calls before a step that moves `slot`'s module to an image
  /// of another schema (`to`), on the thread that runs the upgrade, before
  /// any module is paused for it. The release handler keeps the state in
  /// the schema it leaves there. Set it before any upgrade runs; empty: none.
  using BeforeMigrating = std::function<void(ModuleSlot& slot, const ImageInfo& to)>;
  void set_before_migrating(BeforeMigrating hook) { before_migrating_ = std::move(hook); }

  [[nodiscard]] Loader& loader() noexcept override { return loader_; }
  [[nodiscard]] const Loader& loader() const noexcept { return loader_; }

  [[nodiscard]] std::shared_ptr<ModuleSlot> find(std::string_view name) const override;
  /// Every module, in the order they were started.
  [[nodiscard]] std::vector<std::shared_ptr<ModuleSlot>> slots() const;

  /// Upgrades (or downgrades) `name` to `file`, or, when `file` is empty, to
  /// the newest <name>-<N>.so in the plugin directory. Fails (without a
  /// report) only for an unknown module or an empty plugin directory.
  Result<UpgradeReport> reload(std::string_view name, const std::optional<std::filesystem::path>& file,
                               const api::Values& extra = {});

  /// Back to the version that ran before the last successful upgrade of
  /// `name`, through the newer version's migration. The old file must still
  /// be the one that ran (same sha256).
  Result<UpgradeReport> rollback(std::string_view name, const api::Values& extra = {});

  /// For SIGHUP: reloads every module whose newest file in the plugin
  /// directory differs (by content) from the image it runs.
  std::vector<UpgradeReport> reload_changed();

  /// Replaces the state of the module `slot` serves with `state` (a state
  /// archive's), read by a fresh instance of its running image, in one
  /// transaction recorded in the history like an upgrade.
  UpgradeReport restore(ModuleSlot& slot, StateBlob state);

  /// The state of `name` in its own schema, with its header.
  Result<StateBlob> snapshot(std::string_view name);

  /// This run's reports and their totals (for the metrics).
  [[nodiscard]] const UpgradeHistory& history() const noexcept { return history_; }
  /// What `moltctl history` shows: every report and crash, earlier runs' too.
  [[nodiscard]] HistoryLog& history_log() noexcept { return history_log_; }
  [[nodiscard]] const HistoryLog& history_log() const noexcept { return history_log_; }
  [[nodiscard]] const TableOptions& options() const noexcept { return options_; }

 private:
  Result<std::shared_ptr<ModuleSlot>> lookup(std::string_view name, Phase phase) const;
  UpgradeReport run(const UpgradeTarget& step);

  Loader& loader_;
  TableOptions options_;
  std::shared_ptr<TimerService> timers_ = std::make_shared<TimerService>();  ///< one thread for all modules' timers
  std::shared_ptr<JobRunner> jobs_;  ///< the workers for all modules' jobs; null with job_threads = 0
  BeforeMigrating before_migrating_;
  UpgradeHistory history_;
  HistoryLog history_log_;
  mutable std::shared_mutex mutex_;  ///< guards slots_ and order_ (not the slots themselves)
  std::map<std::string, std::shared_ptr<ModuleSlot>, std::less<>> slots_;
  std::vector<std::string> order_;
};

}  // namespace molt::host
