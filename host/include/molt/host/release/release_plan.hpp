// Planning a release: from an upgrade script and what runs now to the typed
// steps the release transaction runs (upgrade/release_transaction.hpp), or
// the one-line reason the script cannot run. Pure: no files, no sockets, no
// module code; the image checks happen in the transaction's check phase.
// Tested in tests/unit/release_plan_test.cpp.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/host/release/release_record.hpp"
#include "molt/host/release/upgrade_script.hpp"
#include "molt/host/upgrade/release_transaction.hpp"

namespace molt::host {

/// What planning needs to know of the running modules and the past.
struct PlanContext {
  /// The modules that run now: name and version (file and sha256 unused).
  std::vector<ReleaseModule> running;
  /// Where a step's relative `file` is.
  std::filesystem::path plugin_dir;
  /// Modules that ran in a recorded release, newest first: an added module
  /// that names no listeners and no configuration gets theirs.
  std::vector<ReleaseModule> known;
};

/// The steps of `script` in the order modules pause (a module before the
/// modules it depends on, else the script's order), or why not: a
/// dependency cycle, a dependency neither running nor in the script, a
/// module added twice or already running, a step on a module that does not
/// run or runs another version than its `from`.
[[nodiscard]] Result<ReleasePlan> plan_release(const UpgradeScript& script, const PlanContext& context);

/// The script that takes what runs as release `from` to release `to`: each
/// module of `from` that `to` lacks is removed, each whose image differs
/// goes to `to`'s image (pinned by its sha256), each of `to` that `from`
/// lacks is added with its settings. Used to roll a release back.
[[nodiscard]] UpgradeScript script_between(const Release& from, const Release& to);

}  // namespace molt::host
