// Release handling, after OTP's release_handler: which release runs, how a
// new one is installed, probation, making it permanent or rolling it back,
// and booting the last permanent release with the modules' saved state.
//
// Every change to what runs goes through here, one at a time:
//   - boot: the last permanent release from the record (or the configuration
//     the first time), each module restored from its snapshot, or from the
//     state kept in its schema when the snapshot was written by a release
//     that never became permanent (or is corrupt). Boot never loads an image
//     of a release that was not permanent, and never starts a module that had
//     state with its initial state unless told to (--allow-empty): such a
//     module is not started, and `moltctl restore` starts it;
//   - kept states: before every upgrade that moves a module to another
//     schema, its state in the schema it leaves is kept (one more pause);
//   - install: a script's steps (upgrades in dependency order, adds, removes)
//     as one transaction, all or nothing; module-level reloads and rollbacks
//     are one-step installs;
//   - probation: the new release is watched for a while (error rate, health);
//     it becomes permanent when that passes or on `moltctl commit`, and is
//     rolled back to the previous release by the host itself when not;
//   - snapshots: after every install, periodically, and at shutdown. The
//     first two are the watcher's: taken in the background, an install's
//     host.install_snapshot_delay_ms after it (the installs in between
//     share it), each giving way to an upgrade that waits for the module
//     (ModuleSlot::Yield) and taken again after it; an upgrade never waits
//     for a snapshot moltd takes by itself.
//
// Nothing here holds a lock of the control plane while module code runs:
// changes of what runs take the change lock (one at a time; a second one
// waits at most a second, then answers "busy"), but status (view, summary)
// reads a copy published after every change, the probation watcher asks the
// modules' health without any lock (each check with a deadline), and
// snapshots are taken through the slots (ModuleSlot::save_state, with a
// deadline), not under the change lock.
// Policy only: the mechanics live elsewhere: scripts (upgrade_script),
// planning (release_plan), the record (release_record), snapshots
// (state/snapshot_store), the release and upgrade transactions (upgrade/),
// listeners (behind ModuleListeners: this code never touches a socket).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <spdlog/logger.h>

#include "molt/host/common/crash_record.hpp"
#include "molt/host/release/crash_log.hpp"
#include "molt/host/release/quarantine.hpp"
#include "molt/host/release/release_plan.hpp"
#include "molt/host/release/release_record.hpp"
#include "molt/host/release/upgrade_script.hpp"
#include "molt/host/state/snapshot_store.hpp"
#include "molt/host/runtime/host_info.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "molt/host/upgrade/module_listeners.hpp"

namespace molt::host {

/// What ReleaseOptions::on_change hears; moltd turns it into systemd's
/// RELOADING=1 and READY=1 (daemon/systemd.hpp).
enum class ChangeNotice {
  Begin,   ///< a change of what runs begins: reload, rollback, restore, release install, probation rollback; text: which
  End,     ///< that change is over, however it went; text: summary()
  Status,  ///< only the release's status changed (it became permanent); text: summary()
};

struct ReleaseOptions {
  std::filesystem::path record_path;           ///< <run dir>/releases.json
  std::filesystem::path plugin_dir;            ///< absolute
  std::string initial_release = "initial";     ///< name of the release the configuration describes
  std::chrono::seconds probation{60};          ///< 0: a new release is permanent at once
  double max_error_rate = 0.05;                ///< failed calls / calls that fails probation
  std::uint64_t min_calls = 20;                ///< calls needed before the error rate counts
  std::chrono::seconds snapshot_interval{0};   ///< 0: no periodic snapshots
  std::chrono::milliseconds save_timeout{5000};     ///< for calls in progress to finish before a snapshot
  std::chrono::milliseconds save_run_timeout{60000};  ///< for save_state itself to return
  std::chrono::milliseconds health_timeout{2000};     ///< for a health check, the wait for its turn included
  /// Told around every change of what runs, from the thread making it, with
  /// the handler's lock held: in order, and it must not call back into the
  /// handler. Not called at boot. May be empty.
  std::function<void(ChangeNotice, const std::string&)> on_change;
  /// The previous run's crash record, if it left one: noted at boot (log,
  /// history, release record, crash log) and its image quarantined when
  /// it crashed on probation or in a crash loop.
  std::optional<CrashRecord> crash;
  Quarantine* quarantine = nullptr;  ///< where images are quarantined; none: never
  CrashLog* crash_log = nullptr;     ///< the crashes counted for crash loops
  CrashLoopPolicy crash_loop;
  /// Modules a boot starts with their initial state when it has no state
  /// they can read (moltd --allow-empty MODULE), instead of not starting them.
  std::set<std::string, std::less<>> allow_empty = {};
  /// Why `module` is not to run here although the release or the
  /// configuration names it (it moved to another moltd: handoff/ownership.hpp),
  /// or nothing. Asked by boot for each module. May be empty.
  std::function<std::optional<std::string>(const std::string& module)> elsewhere = {};
  /// An install's snapshot is taken this long after it, by the watcher
  /// (start_watching); a later install of the module before then pushes it
  /// back, up to kMaxSnapshotDefer after the first.
  std::chrono::milliseconds install_snapshot_delay{1000};
};

/// How long a snapshot moltd takes by itself may wait: past this since it
/// was first asked for, it no longer gives way to upgrades (a steady stream
/// of them would otherwise put it off for ever).
inline constexpr std::chrono::seconds kMaxSnapshotDefer{30};

/// The release record and the probation, as `moltctl releases` shows them.
struct ReleaseView {
  ReleaseRecord record;
  std::optional<std::chrono::seconds> probation_left;  ///< none: no release on probation
};

class ReleaseHandler {
 public:
  ReleaseHandler(ModuleTable& table, ModuleListeners& listeners, SnapshotStore& snapshots, ReleaseOptions options,
                 std::shared_ptr<spdlog::logger> log);
  ~ReleaseHandler();
  ReleaseHandler(const ReleaseHandler&) = delete;
  ReleaseHandler& operator=(const ReleaseHandler&) = delete;

  /// Starts the last permanent release (or, without a record, the
  /// configuration's modules as release `initial_release`), restores every
  /// module's snapshot, binds the modules' listeners, writes the record.
  /// A module with state its version cannot read is not started (see
  /// restore_snapshot_locked); the others are.
  Result<void> boot(const HostConfig& config);
  /// Hot restart, in the successor, instead of boot(), in two halves. The
  /// first, while the predecessor still serves: starts the release it runs
  /// (the record's current one, on probation or not), each module from the
  /// image whose sha256 `images` names (any other is refused), with its
  /// initial state; `not_started`: the predecessor's, which stay so.
  Result<void> prepare_take_over(const HostConfig& config,
                                 const std::map<std::string, std::string, std::less<>>& images,
                                 std::vector<NotStartedModule> not_started);
  /// The second, once the predecessor has frozen: `restore` puts each
  /// module's state in place (with its jobs and timers: the state handed
  /// over), then the module serves the listening sockets adopted for it;
  /// the probation goes on for `probation_left`. Fails on the first module
  /// it cannot take over: the caller then exits and the predecessor resumes.
  Result<void> take_over(const std::function<Result<void>(ModuleSlot&)>& restore,
                         std::optional<std::chrono::milliseconds> probation_left);
  /// Once this process serves: notes the hot restart in the release record
  /// and writes it (fsync: not while clients wait).
  void record_take_over();
  /// Hot restart, in the process handing over: runs `hand_over` with the
  /// change lock held (no reload, install, rollback or probation action
  /// meanwhile; a change in progress makes this "busy"), told the probation
  /// left, if any.
  Result<void> while_unchanged(const std::string& what,
                               const std::function<Result<void>(std::optional<std::chrono::milliseconds>)>& hand_over);
  // Handoff (handoff/handoff.hpp), each called inside while_unchanged():
  /// `module` runs on another moltd from now on: out of the table and the
  /// release record (its listeners are the caller's); status lists it as
  /// not started here, with `why`.
  void gave_away(const std::string& module, const std::string& why);
  /// `slot`, started and holding the state it was handed, runs here from
  /// now on: served on `settings.listen`, added to the release record (the
  /// current and the permanent release: it is no part of a probation), its
  /// snapshot taken at once in the background.
  /// Returns the addresses it listens on.
  Result<std::vector<Endpoint>> received(std::shared_ptr<ModuleSlot> slot, const ModuleConfig& settings,
                                         const std::string& why);
  /// The modules boot did not start, and why; each until `moltctl restore` starts it.
  [[nodiscard]] std::vector<NotStartedModule> not_started() const;
  /// Starts the thread that runs probation and the snapshots moltd takes
  /// by itself (after installs, periodic).
  void start_watching();
  /// Those snapshots, asked for and not yet written: module -> why
  /// ("upgrade", "periodic").
  [[nodiscard]] std::map<std::string, std::string> pending_snapshots() const;
  /// Stops that thread and snapshots every module it can (shutdown): the
  /// reason, "module: why", of each module whose snapshot failed (its last
  /// snapshot stands).
  std::vector<std::string> shut_down();
  /// Snapshots every module now: the reason, "module: why", of each module
  /// whose snapshot failed (its last snapshot stands).
  std::vector<std::string> save_all();

  Result<UpgradeReport> reload(std::string_view module, const std::optional<std::filesystem::path>& file,
                               const api::Values& extra);
  Result<UpgradeReport> rollback_module(std::string_view module, const api::Values& extra);
  std::vector<UpgradeReport> reload_changed();

  /// `script` run backwards, named after the release it returns to: the
  /// previous release when `script` installed the current one.
  [[nodiscard]] UpgradeScript down_script(const UpgradeScript& script) const;
  /// The plan of `script`, checked against what runs and the image files
  /// (the release transaction's check phase), without changing anything.
  Result<ReleasePlan> check(const UpgradeScript& script);
  /// Installs a script's release as one transaction.
  ReleaseOutcome install(const UpgradeScript& script);

  /// Makes the current release permanent now. Like every change, answers
  /// "busy" when another change still runs after a second.
  Result<void> commit();
  /// Everything `moltctl releases` shows.
  [[nodiscard]] ReleaseView view() const;
  /// Restores `module` from a state archive file (migrating it when needed).
  /// A module boot did not start starts with it, as its entry in the
  /// current release says, or not at all.
  Result<UpgradeReport> restore(std::string_view module, const std::filesystem::path& archive);

  /// The images moltd must not run (after they crashed it); null when the
  /// host keeps no quarantine (tests).
  [[nodiscard]] Quarantine* quarantine() const noexcept { return options_.quarantine; }

  /// One line on what runs: "serving 2 modules: counter v2, kv v1; release r1 (on probation)".
  [[nodiscard]] std::string summary() const;

 private:
  /// On the stack of every operation that changes what runs, after its lock:
  /// tells on_change Begin now, and End when it goes out of scope, however
  /// the operation ends.
  class ChangeScope {
   public:
    ChangeScope(const ReleaseHandler& handler, const std::string& what);
    ~ChangeScope();
    ChangeScope(const ChangeScope&) = delete;
    ChangeScope& operator=(const ChangeScope&) = delete;

   private:
    const ReleaseHandler& handler_;
  };

  struct Probation {
    std::chrono::steady_clock::time_point until;
    std::map<std::string, SlotStats, std::less<>> baseline;  ///< modules the release changed
    std::uint64_t number = 0;  ///< which probation: the watcher acts only on the one it checked
  };

  /// The change lock, held by one change of what runs at a time; the
  /// change is named for "busy" answers while it is held.
  class ChangeLock {
   public:
    ChangeLock(ReleaseHandler& handler, std::unique_lock<std::timed_mutex> lock, std::string what);
    ~ChangeLock();
    ChangeLock(ChangeLock&&) = default;

   private:
    ReleaseHandler* handler_;
    std::unique_lock<std::timed_mutex> lock_;
  };
  /// The change lock for `what`, waiting at most a second for a change in
  /// progress; else "busy: <that change> for N ms".
  Result<ChangeLock> lock_change(std::string what);
  /// Makes what view() and summary() show match the record and probation.
  void publish_locked();
  /// One probation check, without any lock: the failure if any.
  std::optional<std::string> check_probation(const Probation& probation);

  /// At boot, once the record is read: what the previous run's crash costs.
  void note_crash_locked(const CrashRecord& crash);
  Result<ReleasePlan> plan_locked(const UpgradeScript& script) const;
  /// Runs `plan`; once installed, records it (on probation) and snapshots its modules.
  ReleaseOutcome install_locked(ReleasePlan plan, const std::string& detail);
  /// `module`'s snapshot for a release step: none when it has none, or when
  /// it is unreadable (then moved aside, logged, and the module starts empty).
  std::optional<StateBlob> snapshot_of_locked(const std::string& module, spdlog::logger& log);
  ReleaseScope scope() { return ReleaseScope{table_, listeners_, snapshots_, options_.save_timeout, *log_}; }
  /// Records `next` as the current release (on probation), snapshots `changed`.
  void installed_locked(Release next, const std::vector<std::string>& changed, const std::string& detail);
  void make_permanent_locked(const std::string& why);
  void roll_back_locked(const std::string& why);
  Release with_module_changed(const std::string& module) const;
  std::string summary_locked() const;
  static std::string summary_of(const ModuleTable& table, const Release& current, bool permanent);
  /// At boot, gives `module` (started, not served yet) the state its running
  /// version reads: its snapshot, else the state kept in its schema; else,
  /// when it had state, the reason it must not start (none with
  /// --allow-empty). Loads no other image. Logs what it did in one line.
  std::optional<std::string> restore_snapshot_locked(const std::string& module);
  /// Starts `module`, which boot did not start, with `state` (moltctl restore).
  Result<UpgradeReport> start_restored_locked(const std::string& module, StateBlob state,
                                              const std::filesystem::path& archive);
  /// ModuleTable's before-migrating hook: keeps the state of `slot`'s module
  /// in the schema it is about to leave; logs what it cost, or why it failed.
  void keep_state_before(ModuleSlot& slot, const ImageInfo& to);
  /// Snapshots `module` (no lock needed: the slot orders its snapshots and
  /// upgrades). The reason it failed, if it did.
  std::optional<std::string> snapshot(const std::string& module, std::string_view why,
                                      ModuleSlot::Yield yield = ModuleSlot::Yield::Never);
  /// Asks the watcher for a snapshot of `module` at `due`: with one already
  /// asked for, the later of the two, but no later than kMaxSnapshotDefer
  /// after the first request.
  void schedule_snapshot(const std::string& module, std::string_view why, std::chrono::steady_clock::time_point due);
  /// The watcher's: takes the snapshots that are due.
  void take_due_snapshots();
  [[nodiscard]] bool stopping() const;
  /// The watcher's, each second: ends the probation if it failed or passed.
  void check_probation_now();
  void write_record_locked();
  void watch();

  ModuleTable& table_;
  ModuleListeners& listeners_;
  SnapshotStore& snapshots_;
  ReleaseOptions options_;
  std::shared_ptr<spdlog::logger> log_;

  /// The change lock: one change of what runs at a time; guards the
  /// record and the probation below. Never taken by status.
  mutable std::timed_mutex mutex_;
  ReleaseRecord record_;
  std::optional<Probation> probation_;
  std::optional<Release> taking_over_;  ///< between prepare_take_over and take_over
  std::uint64_t probations_ = 0;  ///< probations begun, to number them
  /// Modules of the current release that boot did not start -> why: in the
  /// record, not running, until moltctl restore starts them.
  std::map<std::string, std::string, std::less<>> not_started_;

  mutable std::mutex view_mutex_;  ///< guards the copies below: held only to copy
  ReleaseRecord published_record_;
  std::vector<NotStartedModule> published_not_started_;
  std::optional<std::chrono::steady_clock::time_point> published_probation_until_;
  std::string changing_;  ///< the change holding the change lock, if any
  std::chrono::steady_clock::time_point changing_since_;

  struct PendingSnapshot {
    std::string why;
    std::chrono::steady_clock::time_point requested;  ///< the first request since the last one written
    std::chrono::steady_clock::time_point due;
  };
  mutable std::mutex watch_mutex_;  ///< guards stopping_, pending_snapshots_ and rescheduled_
  bool stopping_ = false;
  std::map<std::string, PendingSnapshot, std::less<>> pending_snapshots_;
  bool rescheduled_ = false;  ///< a snapshot was asked for since the watcher last looked
  std::condition_variable wake_;
  std::chrono::steady_clock::time_point next_snapshot_;  ///< the watcher's
  std::thread watcher_;
};

}  // namespace molt::host
