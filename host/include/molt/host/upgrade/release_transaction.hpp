// A release as one transaction: typed steps (add, upgrade or downgrade,
// remove, restore) run by one evaluator, all or none. The phases, the point
// of no return and the rollback are described in upgrade/release_transaction.cpp.
//
// Planning (release/release_plan.hpp) turns a script into these steps; the
// release handler (release/release_handler.hpp) decides when a release runs
// and records it. This file knows no scripts, no records and no sockets.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <spdlog/logger.h>

#include "molt/host/config/host_config.hpp"
#include "molt/host/loader/loader.hpp"
#include "molt/host/state/snapshot_store.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/host/upgrade/module_listeners.hpp"
#include "molt/host/upgrade/report.hpp"
#include "molt/host/upgrade/transaction.hpp"

namespace molt::host {

/// Where a step came from, for its errors: "<source>: step N (<module>): <reason>".
struct StepOrigin {
  std::string source;      ///< the script's name ("kv-2.toml", "rollback of r2")
  std::size_t number = 0;  ///< 1-based step number in it
};

namespace release_step {

/// A module that does not run yet starts: loaded, started, given `state`
/// when there is one (a module that comes back gets its last state), and
/// its listeners opened; it is served once the release commits.
struct Add {
  /// What happens when `state` cannot be restored.
  enum class IfStateFails {
    StartEmpty,  ///< the module starts with its initial state, with a warning (a removal undone)
    Fail,        ///< the release fails (moltctl restore of a module boot did not start: that state or nothing)
  };
  StepOrigin origin;
  ModuleConfig module;  ///< name, image file, configuration, listeners
  api::ModuleVersion to;
  /// The image's SHA-256: a pin from the script, else what the check found.
  std::optional<std::string> sha256;
  std::optional<StateBlob> state;
  IfStateFails if_state_fails = IfStateFails::StartEmpty;
};

/// A running module moves to the image in `file`: up, down (the newer
/// version converts its state to the older schema) or sideways (a rebuild
/// of the same version).
struct Upgrade {
  StepOrigin origin;
  std::string module;
  std::filesystem::path file;
  api::ModuleVersion from;
  api::ModuleVersion to;
  std::optional<std::string> sha256;  ///< as for Add
  api::Values extra;                  ///< for the migration hooks
  std::vector<std::string> depends_on;
};

/// A running module stops: its state is saved as its snapshot first, and a
/// module whose state cannot be saved is not removed.
struct Remove {
  StepOrigin origin;
  std::string module;
  api::ModuleVersion from;
};

/// A running module's state is replaced with `state`, read (and migrated
/// when another version wrote it) by a fresh instance of its running image.
struct Restore {
  StepOrigin origin;
  std::string module;
  StateBlob state;
};

}  // namespace release_step

using ReleaseStep = std::variant<release_step::Add, release_step::Upgrade, release_step::Remove, release_step::Restore>;

/// The module a step is about, and its origin.
[[nodiscard]] const std::string& module_of(const ReleaseStep& step);
[[nodiscard]] const StepOrigin& origin_of(const ReleaseStep& step);

/// A release's steps in the order the modules pause (a module before the
/// modules it depends on); resumed in reverse order.
struct ReleasePlan {
  std::string release;
  std::vector<ReleaseStep> steps;
};

/// The running modules as a release changes them. ModuleTable implements
/// it (runtime/module_table.hpp).
class RunningModules {
 public:
  virtual ~RunningModules() = default;
  [[nodiscard]] virtual std::shared_ptr<ModuleSlot> find(std::string_view module) const = 0;
  /// Loads and starts a module without serving it (see insert).
  [[nodiscard]] virtual Result<std::shared_ptr<ModuleSlot>> prepare(const ModuleConfig& module) = 0;
  /// Serves a prepared module.
  virtual void insert(std::shared_ptr<ModuleSlot> slot) = 0;
  /// Stops serving `module` and hands its slot over.
  virtual std::shared_ptr<ModuleSlot> remove(std::string_view module) = 0;
  /// One upgrade transaction (upgrade/transaction.hpp), recorded in the history.
  virtual std::vector<UpgradeReport> run(std::span<const UpgradeTarget> steps) = 0;
  [[nodiscard]] virtual Loader& loader() = 0;
};

/// What a release acts on.
struct ReleaseScope {
  RunningModules& modules;
  ModuleListeners& listeners;
  SnapshotStore& snapshots;
  std::chrono::milliseconds save_timeout{5000};  ///< for saving a removed module's state
  spdlog::logger& log;
};

struct ReleaseOutcome {
  std::string release;
  bool installed = false;
  /// One per upgrade and restore step, and one per add whose state must be
  /// restored (IfStateFails::Fail).
  std::vector<UpgradeReport> reports;
  std::optional<Error> error;          ///< why not installed
};

/// Checks every step of `plan` against what runs and against the image
/// files, changing nothing (what `moltctl upgrade --check` runs, and the
/// first phase of run_release). Sets each add's and upgrade's `sha256` to
/// the file's when the script pinned none: the transaction then loads only
/// that file.
[[nodiscard]] Result<void> check_release(ReleasePlan& plan, RunningModules& modules);

/// Runs `plan` as one transaction: every step happens, or none does and
/// every module keeps its version and byte-identical state.
[[nodiscard]] ReleaseOutcome run_release(ReleasePlan plan, const ReleaseScope& scope);

}  // namespace molt::host
