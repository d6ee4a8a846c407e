// A module slot: the place where one module runs, whatever its version.
//
// Callers on any thread call the module through its slot; the slot's call
// gate decides when a call may enter (one at a time by default). The running
// instance is replaced only by the upgrade transaction, through the slot's
// UpgradeAccess, while the gate is closed and no call is inside. What the
// host keeps for the module across versions lives beside it: its timers
// (ModuleTimers) and its job records (ModuleJobs).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"
#include "molt/host/common/histogram.hpp"
#include "molt/host/loader/loader.hpp"
#include "molt/host/slot/call_gate.hpp"
#include "molt/host/slot/precopy_report.hpp"
#include "molt/host/slot/hooks.hpp"
#include "molt/host/slot/jobs.hpp"
#include "molt/host/slot/module_jobs.hpp"
#include "molt/host/slot/module_timers.hpp"
#include "molt/host/slot/timer_service.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/module.hpp"

namespace molt::host {

class PartFile;

struct SlotOptions {
  std::shared_ptr<spdlog::logger> logger;  ///< named after the module; shared by all its versions
  api::Values config;                      ///< the module's configuration values
  /// Runs the module's timers; when null the slot makes its own.
  std::shared_ptr<TimerService> timers;
  /// Steps the module's jobs; when null, jobs are recorded but not run.
  std::shared_ptr<JobRunner> jobs;
  /// The limits on the module's connections (Context::stream_limits).
  api::StreamLimits stream_limits{1ull << 30, 1ull << 20};
  /// How long an instance's stop() and destructor may take when it goes
  /// (after an upgrade, at removal, at shutdown); past it the instance and
  /// its image are left loaded, with a warning.
  std::chrono::milliseconds stop_timeout{5000};
  /// How a snapshot takes the state of a module that implements pre-copy:
  /// in parts while the module serves, into the snapshot's file or a second
  /// instance (save_state). Not enabled: save_state pauses the module for all of it.
  PrecopyOptions precopy{};
};

/// What a slot runs now, for status output. A copy: it does not keep the
/// image loaded.
struct RunningVersion {
  ImageInfo info;
  std::string file;    ///< the operator's file it was loaded from
  std::string sha256;  ///< of that file
  std::string image;   ///< the private copy that is mapped
  std::chrono::system_clock::time_point since;
};

/// `image` described for status output, serving since `since`.
[[nodiscard]] RunningVersion describe(const Image& image, std::chrono::system_clock::time_point since);

struct SlotStats {
  std::uint64_t calls = 0;         ///< calls answered (including failed ones)
  std::uint64_t failed_calls = 0;  ///< calls whose handler threw
  /// Size of the state the last time it was saved (upgrade or snapshot);
  /// measuring it otherwise would mean pausing the module.
  std::optional<std::uint64_t> state_bytes;
  CallGate::Counts gate;  ///< including the oldest call in progress
};

/// The reason of a snapshot's error when it gave way to an upgrade
/// (ModuleSlot::Yield::ToUpgrades): take it again after.
inline constexpr std::string_view kGaveWayToUpgrade = "gave way to an upgrade or a snapshot asked for meanwhile; taken again after it";

/// No deadline: save_state runs the module's code on the caller's thread.
inline constexpr std::chrono::milliseconds kNoDeadline = std::chrono::milliseconds::max();

class ModuleSlot : public std::enable_shared_from_this<ModuleSlot> {
 public:
  /// Creates an instance of `image`, starts it, and serves it with its
  /// initial state. Fails (Phase::Start) when construction or start throws.
  static Result<std::shared_ptr<ModuleSlot>> start(std::shared_ptr<const Image> image, SlotOptions options);

  /// Stops the instance. Precondition: no call is in progress or will come.
  ~ModuleSlot();
  ModuleSlot(const ModuleSlot&) = delete;
  ModuleSlot& operator=(const ModuleSlot&) = delete;

  /// Calls the running version, waiting for its turn (and for any upgrade in
  /// progress to finish: the call is then answered by the new version). A
  /// handler that throws gives an Error (Phase::Call); the slot carries on.
  Result<api::Response> call(const api::Request& request);

  /// What save_state does with a state it took, before the module can be
  /// upgraded or saved again (so snapshots are written in the order their
  /// states were taken): write it, for instance. Host code, no deadline.
  using KeepState = std::function<Result<void>(const StateBlob&)>;

  /// Opens the file a snapshot taken by pre-copy is written into, a part at
  /// a time (SnapshotStore::open_parts), for the state `about` describes.
  using OpenPartFile = std::function<Result<std::unique_ptr<PartFile>>(const StateBlob& about)>;

  /// Whether a snapshot gives way to an upgrade of the module.
  enum class Yield {
    Never,       ///< an upgrade waits for it (requested, shutdown)
    ToUpgrades,  ///< one moltd takes by itself: an upgrade (or a Never snapshot) that waits stops its pre-copy
  };

  /// The running version's state in its own schema. Holds calls back while
  /// it saves; fails if calls in progress do not finish within
  /// `quiesce_timeout`, or if save_state does not return within
  /// `save_timeout` (then the module stays suspended inside save_state, and
  /// shows so in stats().gate.oldest, until it returns, if ever; or, when
  /// the state was pre-copied into a second instance, the module serves on
  /// and that instance stays inside it, holding the slot's upgrade lock).
  /// With a deadline the module's code runs on a thread of its own. `keep`
  /// runs after the module resumed, only when the save succeeded. With
  /// Yield::ToUpgrades, an upgrade that waits for the slot while the state
  /// is pre-copied ends the snapshot: its error's reason is then
  /// kGaveWayToUpgrade, and nothing was kept.
  /// With `open_parts`, a module that implements pre-copy is saved into the
  /// file it opens, a part at a time while the module serves, with no second
  /// instance and no copy of the whole state in memory: the blob returned
  /// then has Parts encoding and no bytes (stats().state_bytes says how many
  /// went to the file), and `keep` does not run. Other modules, or a
  /// pre-copy that fails before the pause, are saved as an archive and kept.
  Result<StateBlob> save_state(std::chrono::milliseconds quiesce_timeout, std::chrono::milliseconds save_timeout,
                               KeepState keep = {}, Yield yield = Yield::Never, OpenPartFile open_parts = {});
  Result<StateBlob> save_state(std::chrono::milliseconds quiesce_timeout) {
    return save_state(quiesce_timeout, kNoDeadline);
  }

  // Streams: the host's connections call the module through these, each
  // waiting for its turn like any call. An Error means the module threw:
  // the caller closes that connection.
  Result<void> stream_connect(api::ConnectionId connection);
  Result<std::size_t> stream_data(api::ConnectionId connection, std::string_view input, api::StreamOutput& out);
  void stream_disconnect(api::ConnectionId connection) noexcept;
  /// The connections the module was told of (on_connect) and not yet told
  /// gone (on_disconnect), in order: whose per-connection state its state
  /// holds, and a handoff's target expects to adopt (handoff/handoff.hpp).
  [[nodiscard]] std::vector<api::ConnectionId> connections() const;

  /// After a handoff flipped the module's ownership to another moltd
  /// (handoff/handoff.hpp): no call reaches this instance again. Calls
  /// waiting for their turn, and later ones, get an Error whose reason is
  /// `where` (kModuleMoved + where), without a failed-call count; timers and
  /// jobs no longer run. Only while an UpgradeAccess holds the slot
  /// suspended, so that no call is inside.
  void retire(std::string where);
  /// The Error reason of a call to a retired slot starts with this.
  static constexpr std::string_view kModuleMoved = "moved to ";
  [[nodiscard]] bool retired() const noexcept { return retired_.load(std::memory_order_acquire); }

  /// Names of the timers the module has set, for status output.
  [[nodiscard]] std::vector<std::string> timers() const;

  // Jobs (see jobs.hpp). The records are the slot's: they outlive upgrades.

  /// Runs one step of `job` as a call (waiting for the module's turn) and
  /// updates its record; whether and when to step it again.
  JobNext run_job_step(const std::string& job);
  [[nodiscard]] std::vector<JobRecord> jobs() const;
  /// Stops stepping a running job after the step in progress, if any.
  Result<void> cancel_job(std::string_view job);
  /// A failed or cancelled job runs again, from the checkpoint in the state.
  Result<void> restart_job(std::string_view job);

  /// What the host keeps for the module besides its state (job records and
  /// timers), as text (host_part.hpp): saved with every state (see
  /// save_state) and given back with it after a restart by restore_host_part.
  [[nodiscard]] std::string host_part() const;
  /// Replaces the job records, and the timers of the same names, with those
  /// of `host_part` (from a snapshot), and schedules the running jobs. Empty
  /// text changes nothing; malformed text is an error and changes nothing.
  Result<void> restore_host_part(std::string_view host_part);

  /// What the running version sends a client turned away for `reason`
  /// (Module::refusal_reply, asked when it started); empty: nothing.
  /// Never waits for the module: safe during an overload or an upgrade.
  [[nodiscard]] std::string refusal_reply(api::Refusal reason) const;

  /// The running version's health (Module::health), asked like a call
  /// that waits for its turn and for health() to return at most `timeout`
  /// in all; a reason if it is not healthy, if asking it threw, or if it did
  /// not answer in time.
  [[nodiscard]] std::optional<std::string> health(std::chrono::milliseconds timeout = std::chrono::seconds(2));

  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  /// The module's configuration values (Context::config()).
  [[nodiscard]] const api::Values& config() const noexcept { return config_; }
  [[nodiscard]] RunningVersion running() const;
  /// The version that ran before the last successful upgrade, if any.
  [[nodiscard]] std::optional<RunningVersion> previous() const;
  /// Forgets it: after a boot that went through another version only to
  /// convert a snapshot, there is no earlier version to roll back to.
  void forget_previous();
  [[nodiscard]] SlotStats stats() const;
  /// How long the calls counted in stats().calls took, from the moment each
  /// asked for its turn (so including the wait for the gate, and for an
  /// upgrade's pause) until the module returned.
  [[nodiscard]] DurationHistogram::Counts call_durations() const noexcept { return call_durations_.snapshot(); }
  /// Hot restart: adds the calls the predecessor's slot counted, so that
  /// the counters of /-/metrics go on from there.
  void carry_over(const DurationHistogram::Counts& durations, std::uint64_t failed_calls) noexcept {
    call_durations_.add_counts(durations);
    failed_calls_.fetch_add(failed_calls, std::memory_order_relaxed);
  }
  [[nodiscard]] spdlog::logger& log() const noexcept { return *logger_; }

 private:
  class InstanceContext;  // the api::Context each instance gets: this slot's timers, jobs, config

 public:
  // --- for the upgrade transaction (upgrade/transaction.cpp) ---------------

  /// An instance with what it needs; destroyed instance first (stop(), then
  /// its destructor), context last. Made by UpgradeAccess::make_live; the
  /// transaction holds the new one until it serves, the old one after.
  struct Live {
    std::shared_ptr<const Image> image;
    std::unique_ptr<InstanceContext> context;
    Instance instance;
    std::chrono::system_clock::time_point since;
    std::string too_many_clients_reply;  ///< refusal_reply(TooManyClients), asked at start
    std::shared_ptr<spdlog::logger> log;  ///< the module's
    std::chrono::milliseconds stop_timeout{5000};
    /// How the host calls the instance: only hooks its image has.
    [[nodiscard]] Hooks hooks() const noexcept { return Hooks(*instance, *image); }
    /// Stops and destroys the instance on a thread of its own, waiting at
    /// most stop_timeout; past it they are left to it (and the image stays
    /// loaded), with a warning.
    ~Live();
  };

  /// The slot's interface for the upgrade transaction, and the only way to
  /// replace the serving instance (upgrade_access.hpp, which only the
  /// transaction and its tests include).
  class UpgradeAccess;

 private:
  ModuleSlot(std::string name, SlotOptions options, api::CallMode mode);

  /// Runs timer `name` (firing `id`) in the running version, as a call.
  void fire_timer(const std::string& name, TimerService::Id id) noexcept;
  /// A call() or stream_data() that failed: counted, and its error.
  [[gnu::cold, gnu::noinline]] Error call_failed(const Live& live, std::string reason);

  /// Why the gate could not be drained within `timeout`: the oldest call
  /// inside and how long it has run, "... did not finish within N ms".
  [[nodiscard]] std::string not_drained_reason(std::chrono::milliseconds timeout) const;

  /// A started instance of `image`, not yet serving.
  Result<std::unique_ptr<Live>> make_live(std::shared_ptr<const Image> image);

  /// Writes `live`'s state in `target.schema` to `out`. Errors name the
  /// module and Phase::Save; `out` refusing bytes shows as save_state throwing.
  Result<void> save_into(const Live& live, const api::SaveTarget& target, std::streambuf& out) const;
  /// save_into() into memory, up to `max_bytes`.
  Result<std::string> save_to_string(const Live& live, const api::SaveTarget& target, std::uint64_t max_bytes) const;

  const std::string name_;
  const std::shared_ptr<spdlog::logger> logger_;
  const api::Values config_;
  const api::StreamLimits stream_limits_;
  const std::chrono::milliseconds stop_timeout_;
  const PrecopyOptions precopy_;
  CallGate gate_;
  /// The slot's, not an instance's: they keep firing across upgrades, into
  /// whichever version runs. Emptied (cancel_all) before live_ goes.
  ModuleTimers timers_;
  /// The records of the module's jobs: the slot's, like its timers.
  ModuleJobs jobs_;
  /// Held by an UpgradeAccess (a transaction's whole run) or by save_state:
  /// one upgrade or snapshot per slot at a time.
  std::timed_mutex upgrade_mutex_;
  /// Transactions and Yield::Never snapshots waiting for upgrade_mutex_
  /// (UpgradeAccess::take_ahead_of_snapshots).
  std::atomic<unsigned> waiting_ahead_of_snapshots_{0};
  /// The serving instance. Read by calls holding a gate pass; replaced only
  /// by UpgradeAccess::swap, while the gate is suspended and drained.
  std::unique_ptr<Live> live_;
  mutable std::mutex info_mutex_;  ///< guards running_, previous_ and too_many_clients_reply_
  mutable std::mutex connections_mutex_;
  std::set<api::ConnectionId> connections_;  ///< guarded by connections_mutex_; connections()
  RunningVersion running_;
  std::string too_many_clients_reply_;  ///< the running instance's, copied from its Live
  std::optional<RunningVersion> previous_;
  std::atomic<std::uint64_t> failed_calls_{0};
  DurationHistogram call_durations_;  ///< of call() and stream_data(); its count is the calls made
  CallSampler call_sampler_;          ///< which of them call_durations_ times
  static constexpr std::uint64_t kUnknown = UINT64_MAX;
  std::atomic<std::uint64_t> state_bytes_{kUnknown};
  /// Set once, by retire(), while suspended; moved_to_ is written before it
  /// and never after, so a call that sees the flag may read it.
  std::atomic<bool> retired_{false};
  std::string moved_to_;
  [[nodiscard]] Error moved_error() const;
};

}  // namespace molt::host
