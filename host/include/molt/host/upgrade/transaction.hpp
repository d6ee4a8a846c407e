// Upgrading running modules: the transaction that moves them to new versions,
// all or none. The phases are described in upgrade/transaction.cpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include "molt/host/loader/loader.hpp"
#include "molt/host/slot/module_slot.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/host/slot/precopy.hpp"
#include "molt/host/upgrade/report.hpp"

namespace molt::host {

/// How the reports of the other modules of a failed multi-module upgrade
/// begin their reason ("not upgraded because kv failed"), to tell them from
/// the report of the module that failed.
inline constexpr std::string_view kNotUpgradedBecause = "not upgraded because ";

/// When new code is rehearsed in a child process before this one loads it
/// (upgrade/rehearsal.hpp): host.rehearse.
enum class RehearseWhen {
  Never,
  Migrating,  ///< when the state is converted (a schema or layout change, a restore into another schema)
  Always,     ///< every upgrade, code-only ones too
};

struct RehearsalOptions {
  RehearseWhen when = RehearseWhen::Never;
  std::filesystem::path helper;       ///< molt-rehearse
  std::filesystem::path scratch_dir;  ///< where a state taken for a rehearsal is written (and removed)
  std::chrono::milliseconds deadline{30000};
  /// The module's last snapshot, when it is the running version's and
  /// recent enough to rehearse with; else the transaction takes one (a
  /// pause of the module as long as a snapshot's).
  std::function<std::optional<std::filesystem::path>(const ModuleSlot&)> recent_snapshot;
};

struct UpgradeOptions {
  /// How long in-flight calls may take to finish once a module is paused.
  /// A module still busy then fails the upgrade, and keeps serving.
  std::chrono::milliseconds quiesce_timeout{5000};
  /// Largest state the transaction hands over; a larger one fails it.
  std::uint64_t max_state_bytes = 1ull << 30;
  RehearsalOptions rehearsal;
  /// How a migrating upgrade moves the state of a module that implements
  /// pre-copy (upgrade/precopy.hpp).
  PrecopyOptions precopy;
};

/// One module's part in an upgrade.
struct UpgradeTarget {
  ModuleSlot* slot = nullptr;
  /// The new image. Empty: a fresh instance of the running image (a restore).
  std::filesystem::path file;
  /// State for the new instance instead of the running instance's own, e.g.
  /// a snapshot or a fixture. The running instance's state is then not saved.
  std::optional<StateBlob> state;
  api::Values extra;  ///< handed to the migration hooks
  /// When set, the new image must have this SHA-256 (lowercase hex), or the
  /// step is refused: pins a script to the files it was written for.
  std::optional<std::string> sha256;
};

/// Moves every step's module to its new version as one transaction: either
/// all of them run their new version, or all keep their old version and
/// byte-identical state. Returns one report per step, in step order. Modules
/// are paused in step order and resumed in reverse order.
[[nodiscard]] std::vector<UpgradeReport> run_upgrade(std::span<const UpgradeTarget> steps, Loader& loader,
                                                     const UpgradeOptions& options = {});

/// Upgrades (or downgrades) one module to the image in `file`.
[[nodiscard]] UpgradeReport upgrade(ModuleSlot& slot, Loader& loader, const std::filesystem::path& file,
                                    const api::Values& extra = {}, const UpgradeOptions& options = {});

/// Replaces the state of `slot`'s module with `state` (migrated if another
/// version wrote it), on a fresh instance of `file`, or of the running image
/// when `file` is empty.
[[nodiscard]] UpgradeReport restore(ModuleSlot& slot, Loader& loader, StateBlob state,
                                    const std::filesystem::path& file = {}, const UpgradeOptions& options = {});

/// A hot restart's: `state`, written by the same image in another process,
/// read into a fresh instance of the image `slot` runs (no file read, no
/// rehearsal: the image is the one that wrote it), which replaces the serving
/// one in a pause. Its schema must be the running one's. Why not, naming the
/// module.
[[nodiscard]] Result<void> adopt_state(ModuleSlot& slot, const StateBlob& state,
                                       std::chrono::milliseconds quiesce_timeout);

}  // namespace molt::host
