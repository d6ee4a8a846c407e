// The release transaction: how a release's steps happen, all or none, after
// OTP's release_handler_1:eval_script. One function per phase, in order:
//
//   1. check     Every step against what runs and against its image file:
//                a module to add is not running, one to upgrade or remove
//                runs the version the step starts from, each image is a
//                valid image of that module and version (and the pinned
//                one). Changes nothing; `moltctl upgrade --check` stops here.
//   2. keep      Each module to remove saves its state as its snapshot. A
//                module whose state cannot be saved is not removed: the
//                release is refused. (A snapshot written here is harmless if
//                the release fails later: it holds the state still served.)
//   3. prepare   Each module to add is loaded, started, given its saved
//                state if it has one (a removal undone), and its listeners
//                are opened. Nobody calls it yet except its own connections,
//                which cannot exist before the listeners open.
//   4. transact  Upgrades, downgrades and restores run as one upgrade
//                transaction (upgrade/transaction.cpp): every module moves or
//                none does. Its resume is this release's POINT OF NO RETURN:
//                once it succeeds, nothing below can fail the release.
//   5. commit    Added modules are served (and their saved jobs and timers
//                restored); removed modules stop: listeners and connections
//                closed, state saved once more with the calls served since 2.
//
// Rollback, for a failure in 1-4, is one path: the added modules' listeners
// close and their instances stop; the transaction has already put every
// upgraded module back on its old version with byte-identical state;
// modules to remove were never touched. The outcome names the step at fault.
//
// Invariants: the caller runs one release at a time (the release handler's
// lock); a step's module is named once per plan (the planner refuses
// repeats, and the transaction refuses a slot twice).
#include "molt/host/upgrade/release_transaction.hpp"

#include <algorithm>
#include <set>

#include "molt/host/common/fault.hpp"

namespace molt::host {

const std::string& module_of(const ReleaseStep& step) {
  return std::visit(
      [](const auto& s) -> const std::string& {
        if constexpr (std::is_same_v<std::decay_t<decltype(s)>, release_step::Add>)
          return s.module.name;
        else
          return s.module;
      },
      step);
}

const StepOrigin& origin_of(const ReleaseStep& step) {
  return std::visit([](const auto& s) -> const StepOrigin& { return s.origin; }, step);
}

namespace {

/// "<source>: step N (<module>): <reason>", the error of a step.
Error step_failure(const ReleaseStep& step, std::string reason) {
  const StepOrigin& origin = origin_of(step);
  return Error{{}, {}, origin.source, Phase::Script,
               "step " + std::to_string(origin.number) + " (" + module_of(step) + "): " + std::move(reason)};
}

std::string v(api::ModuleVersion version) { return std::to_string(version.value); }

/// The image `file` must be of `module`, version `to`, and the pinned one.
/// Returns its SHA-256.
Result<std::string> check_image(const ReleaseStep& step, Loader& loader, const std::filesystem::path& file,
                                api::ModuleVersion to, const std::optional<std::string>& pin) {
  auto checked = loader.check(file, module_of(step), pin);
  if (!checked) return step_failure(step, checked.error().to_string());
  if (checked->info.version != to)
    return step_failure(step, file.string() + " is v" + v(checked->info.version) + ", the step says to = " + v(to));
  return checked->sha256;
}

/// A running module must run `from`.
Result<void> check_running(const ReleaseStep& step, const RunningModules& modules, api::ModuleVersion from) {
  const auto slot = modules.find(module_of(step));
  if (!slot) return step_failure(step, module_of(step) + " is not running");
  if (const auto runs = slot->running().info.version; runs != from)
    return step_failure(step, "from = " + v(from) + " but " + module_of(step) + " runs v" + v(runs));
  return {};
}

class ReleaseTransaction {
 public:
  ReleaseTransaction(ReleasePlan plan, const ReleaseScope& scope)
      : plan_(std::move(plan)), scope_(scope), outcome_{plan_.release, false, {}, std::nullopt} {}

  ReleaseOutcome run() {
    scope_.log.info("release '{}': installing {} step(s)", plan_.release, plan_.steps.size());
    if (auto checked = check_release(plan_, scope_.modules); !checked) return refuse(std::move(checked).error());
    if (auto kept = keep(); !kept) return refuse(std::move(kept).error());
    if (auto prepared = prepare(); !prepared) return roll_back(std::move(prepared).error());
    if (auto moved = transact(); !moved) return roll_back(std::move(moved).error());
    fault_point("release.commit");
    commit();
    outcome_.installed = true;
    return std::move(outcome_);
  }

 private:
  // 2. keep ---------------------------------------------------------------
  Result<void> keep() {
    for (const auto& step : plan_.steps) {
      const auto* remove = std::get_if<release_step::Remove>(&step);
      if (remove == nullptr) continue;
      if (!save_snapshot(remove->module, "removal"))
        return Error{remove->module, {}, {}, Phase::Snapshot,
                     "not removed: its state could not be saved (see the log), so release '" + plan_.release +
                         "' is refused"};
    }
    return {};
  }

  /// Writes `module`'s state as its snapshot; false (logged) when it cannot.
  bool save_snapshot(const std::string& module, std::string_view why) {
    const auto slot = scope_.modules.find(module);
    if (!slot) return false;
    return save_snapshot(*slot, why);
  }

  bool save_snapshot(ModuleSlot& slot, std::string_view why) {
    auto blob = slot.save_state(scope_.save_timeout);
    if (!blob) {
      slot.log().error("{} snapshot not written: {}", why, blob.error().to_string());
      return false;
    }
    if (auto saved = scope_.snapshots.save(blob.value()); !saved) {
      slot.log().error("{} snapshot not written: {}", why, saved.error().to_string());
      return false;
    }
    slot.log().info("{} snapshot written: {} bytes of state in {}", why, blob->bytes.size(),
                    scope_.snapshots.path_of(slot.name()).string());
    return true;
  }

  // 3. prepare ------------------------------------------------------------
  Result<void> prepare() {
    for (auto& step : plan_.steps) {
      auto* add = std::get_if<release_step::Add>(&step);
      if (add == nullptr) continue;
      auto slot = scope_.modules.prepare(add->module);
      if (!slot) return std::move(slot).error();
      added_.push_back(Added{slot.value(), {}});
      if (add->state) {
        auto restored = host::restore(*slot.value(), scope_.modules.loader(), *add->state);
        const bool required = add->if_state_fails == release_step::Add::IfStateFails::Fail;
        if (required) outcome_.reports.push_back(restored);
        if (restored.outcome == Outcome::Succeeded)
          added_.back().host_part = add->state->host;  // its jobs and timers run once it is served
        else if (required)
          return restored.error ? *restored.error
                                : Error{add->module.name, add->to, {}, Phase::Migrate, restored.summary()};
        else
          slot.value()->log().warn("state not restored: {}", restored.summary());
      }
      if (auto bound = scope_.listeners.listen_module(add->module.listen, slot.value()); !bound)
        return std::move(bound).error();
    }
    return {};
  }

  // 4. transact -----------------------------------------------------------
  Result<void> transact() {
    std::vector<UpgradeTarget> moves;
    for (auto& step : plan_.steps) {
      if (auto* up = std::get_if<release_step::Upgrade>(&step))
        moves.push_back(UpgradeTarget{scope_.modules.find(up->module).get(), up->file, std::nullopt, up->extra, up->sha256});
      else if (auto* restore = std::get_if<release_step::Restore>(&step))
        moves.push_back(UpgradeTarget{scope_.modules.find(restore->module).get(), {}, restore->state, {}, std::nullopt});
    }
    if (moves.empty()) return {};
    outcome_.reports = scope_.modules.run(moves);
    // The cause, not the modules that went back because of it.
    for (const auto& report : outcome_.reports)
      if (report.outcome != Outcome::Succeeded && report.error && !report.error->reason.starts_with(kNotUpgradedBecause))
        return *report.error;
    for (const auto& report : outcome_.reports)
      if (report.outcome != Outcome::Succeeded && report.error) return *report.error;
    return {};
  }

  // 5. commit: after the point of no return, nothing fails -----------------
  void commit() {
    for (auto& added : added_) {
      scope_.modules.insert(added.slot);
      if (auto host = added.slot->restore_host_part(added.host_part); !host)
        added.slot->log().error("{}", host.error().to_string());
    }
    for (const auto& step : plan_.steps) {
      const auto* remove = std::get_if<release_step::Remove>(&step);
      if (remove == nullptr) continue;
      scope_.listeners.close_module(remove->module);
      const auto removed = scope_.modules.remove(remove->module);
      // Again now that nothing reaches it: the calls it served while the
      // release was being installed are in this one.
      if (removed && !save_snapshot(*removed, "final"))
        scope_.log.error("{} removed, but its last state could not be saved: the snapshot taken when release '{}' "
                         "began is what remains (calls it served since then are lost)",
                         remove->module, plan_.release);
      scope_.log.info("{} removed (its last state is in {})", remove->module,
                      scope_.snapshots.path_of(remove->module).string());
    }
  }

  // rollback ----------------------------------------------------------------
  /// Refused before anything changed (phases 1 and 2).
  ReleaseOutcome refuse(Error cause) {
    outcome_.error = std::move(cause);
    return std::move(outcome_);
  }

  /// Phases 3 and 4: the added modules go; the transaction rolled itself back.
  ReleaseOutcome roll_back(Error cause) {
    for (const auto& added : added_) scope_.listeners.close_module(added.slot->name());
    added_.clear();  // the last reference: each instance stops, its image unloads
    scope_.log.error("release '{}' not installed: {}", plan_.release, cause.to_string());
    return refuse(std::move(cause));
  }

  struct Added {
    std::shared_ptr<ModuleSlot> slot;
    std::string host_part;  ///< its saved jobs and timers, restored once it is served
  };

  ReleasePlan plan_;
  const ReleaseScope& scope_;
  ReleaseOutcome outcome_;
  std::vector<Added> added_;  ///< prepared in phase 3, served in phase 5
};

}  // namespace

// 1. check ------------------------------------------------------------------
Result<void> check_release(ReleasePlan& plan, RunningModules& modules) {
  std::set<std::string, std::less<>> seen;
  for (auto& step : plan.steps) {
    if (!seen.insert(module_of(step)).second) return step_failure(step, module_of(step) + " appears twice in the release");
    if (auto* add = std::get_if<release_step::Add>(&step)) {
      if (const auto slot = modules.find(add->module.name))
        return step_failure(step, add->module.name + " is already running (v" + v(slot->running().info.version) + ")");
      auto sha256 = check_image(step, modules.loader(), add->module.file, add->to, add->sha256);
      if (!sha256) return std::move(sha256).error();
      add->sha256 = sha256.value();
    } else if (auto* up = std::get_if<release_step::Upgrade>(&step)) {
      if (auto runs = check_running(step, modules, up->from); !runs) return runs;
      auto sha256 = check_image(step, modules.loader(), up->file, up->to, up->sha256);
      if (!sha256) return std::move(sha256).error();
      up->sha256 = sha256.value();
    } else if (auto* remove = std::get_if<release_step::Remove>(&step)) {
      if (auto runs = check_running(step, modules, remove->from); !runs) return runs;
    } else if (auto* restore = std::get_if<release_step::Restore>(&step)) {
      if (!modules.find(restore->module)) return step_failure(step, restore->module + " is not running");
    }
  }
  return {};
}

ReleaseOutcome run_release(ReleasePlan plan, const ReleaseScope& scope) {
  return ReleaseTransaction(std::move(plan), scope).run();
}

}  // namespace molt::host
