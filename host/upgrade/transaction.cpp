// The upgrade transaction: how running modules move to new versions, or not
// at all. Everything that changes which code serves a module happens here,
// in this order (one function each, below):
//
//   1. prepare   Load and check every new image, create its instance and
//                start it. The old versions keep serving; nothing that
//                callers can see has changed. Off the hot path on purpose:
//                dlopen and constructors cost far more than the pause.
//   1b. precopy  A migrating upgrade between versions that implement
//                pre-copy moves the state in rounds while the old version
//                serves (upgrade/precopy.hpp); the pause then holds only the
//                last changes. Fails like prepare: nothing paused.
//   2. quiesce   Close each module's call gate (in step order) and wait, up
//                to quiesce_timeout, for calls inside to finish. From here
//                new calls wait in line; none is refused or dropped.
//   3. save      Each old instance writes its state in the schema its
//                successor reads: its own on an upgrade, the older one on a
//                downgrade (the newer version converts down, so the older
//                code never needs to know the future). save_state is const.
//                Code-only upgrade: when both versions declare the same
//                schema and the same state layout fingerprint, the old
//                instance instead detaches its state object, untouched.
//   4. migrate   Each new instance reads that state (load_state), told the
//                schema, version and direction it comes from, and must read
//                all of it; or, code-only, attaches the detached object. The
//                pause then costs the same whatever the state's size.
//                Saving and loading overlap: the state streams through a
//                bounded pipe, and once it outgrows one chunk load_state runs
//                on a second thread, reading while save_state writes.
//   5. resume    POINT OF NO RETURN. Swap each slot to its new instance and
//                reopen its gate (in reverse step order); calls that waited
//                run first, on the new version. Nothing here can fail.
//   6. clean up  Stop and destroy the old instances. An old image unloads
//                when its last instance is gone, which is after the switch,
//                so no call can still be inside it.
//
// A failure in 1-4 rolls back: a state object handed over goes back to its
// old instance, the new instances are stopped and destroyed, and the gates
// reopen on the old instances. Those own their state as before, unchanged
// (save_state is const, a handed-over object is not touched), so it is
// byte-identical.
//
// Invariants: a slot's instance is replaced only while its gate is closed and
// drained; a slot takes part in one transaction at a time (its upgrade
// access, ModuleSlot::UpgradeAccess, held from prepare to the end, is the
// only way this file touches a slot beyond its public calls). Each module's
// outcome is logged here as one summary line (the cause in the line of the
// module that failed); callers log only what they decide on top of it.
//
// Names: save and migrate overlap and run as one phase, called "migrate"
// everywhere (its fault point "upgrade.migrate", its log scope, its
// progress reports); the report keeps the two times apart.
#include "molt/host/upgrade/transaction.hpp"

#include <algorithm>
#include <set>

#include <thread>

#include "molt/host/common/elapsed.hpp"
#include "molt/host/common/module_site.hpp"
#include "molt/host/common/fault.hpp"
#include "molt/host/common/log_context.hpp"
#include "molt/host/state/buffers.hpp"
#include "molt/host/upgrade/progress.hpp"
#include "molt/host/upgrade/rehearsal.hpp"
#include "molt/host/slot/state_hooks.hpp"
#include "molt/host/slot/upgrade_access.hpp"
#include "molt/host/state/part_file.hpp"
#include "molt/host/state/state_pipe.hpp"
#include "molt/host/common/threads.hpp"

namespace molt::host {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::microseconds;


}  // namespace

/// Runs one phase with its name in the log scope (the JSON log format shows it).
template <class Phase>
auto in_phase(std::string_view phase, Phase run) {
  const LogScope scope(0, phase);
  return run();
}

class UpgradeTransaction {
 public:
  UpgradeTransaction(std::span<const UpgradeTarget> steps, Loader& loader, const UpgradeOptions& options)
      : loader_(loader), options_(options) {
    moves_.reserve(steps.size());
    for (const auto& step : steps) moves_.push_back(Move{&step});
  }

  std::vector<UpgradeReport> run() {
    // fault_point: the fault tests crash the host here (MOLT_FAULT); a no-op otherwise.
    // Each phase runs in a log scope naming it, for the JSON log format.
    fault_point("upgrade.prepare");
    if (auto done = in_phase("prepare", [&] { return prepare(); }); !done) return roll_back(std::move(done).error());
    fault_point("upgrade.precopy");
    if (auto done = in_phase("precopy", [&] { return precopy(); }); !done) return roll_back(std::move(done).error());
    fault_point("upgrade.quiesce");
    if (auto done = in_phase("quiesce", [&] { return quiesce(); }); !done) return roll_back(std::move(done).error());
    fault_point("upgrade.migrate");
    if (auto done = in_phase("migrate", [&] { return migrate(); }); !done) return roll_back(std::move(done).error());
    fault_point("upgrade.resume");
    in_phase("resume", [&] { resume(); });
    fault_point("upgrade.cleanup");
    in_phase("cleanup", [&] { clean_up(); });
    return finish(Outcome::Succeeded);
  }

 private:
  /// One module's progress through the transaction.
  struct Move {
    const UpgradeTarget* step;
    std::optional<ModuleSlot::UpgradeAccess> access{};  ///< the slot's upgrade lock: held to the end once taken
    std::unique_ptr<ModuleSlot::Live> next{};     ///< the new instance, started, until resume
    std::unique_ptr<PreCopy> precopy{};           ///< the state moving into `next` while the old one serves
    std::unique_ptr<ModuleSlot::Live> replaced{}; ///< the old instance, from resume until clean up
    api::ModuleVersion state_version{};           ///< version that writes the state handed over
    api::SchemaVersion state_schema{};            ///< schema of the state handed over
    /// Code-only upgrade: the state object moves instead of its bytes.
    bool handoff = false;
    enum class Object { InOld, Detached, InNew } object_at = Object::InOld;
    void* object = nullptr;
    bool held = false;    ///< calls were held back (quiesce began), even if it then failed
    bool paused = false;  ///< the gate is closed and drained, until resume or rollback
    Clock::time_point paused_at{};
    UpgradeReport report{};

    ModuleSlot& slot() const { return *step->slot; }
    /// An Error naming the image at fault: the new one while preparing and
    /// migrating, the old one while quiescing and saving.
    Error error(Phase phase, std::string reason) const {
      const bool new_image = phase == Phase::Migrate || phase == Phase::Prepare;
      const api::ModuleVersion version = new_image ? report.to : report.from;
      return Error{report.module, version.value > 0 ? std::optional(version) : std::nullopt,
                   new_image ? report.to_file : report.from_file, phase, std::move(reason)};
    }
  };

  // 1. prepare ------------------------------------------------------------
  Result<void> prepare() {
    std::set<const ModuleSlot*> seen;
    for (auto& move : moves_) {
      const auto started = Clock::now();
      failing_ = &move;
      if (move.step->slot == nullptr) return Error{{}, {}, {}, Phase::Prepare, "upgrade step names no module"};
      ModuleSlot& slot = move.slot();
      const RunningVersion old = slot.running();  // a copy: the upgrade lock is not ours yet
      const ImageInfo& from = old.info;
      move.report.module = slot.name();
      move.report.started_at = started_at_;
      move.report.from = from.version;
      move.report.from_schema = from.schema;
      move.report.from_file = old.file;
      move.report.to_file = move.step->file.empty() ? move.report.from_file : move.step->file.string();
      if (!seen.insert(&slot).second) return move.error(Phase::Prepare, "appears twice in one upgrade");
      // A snapshot moltd takes by itself stops its pre-copy for us (within a
      // part); a requested one ends soon: wait for it as for calls to finish.
      move.access = ModuleSlot::UpgradeAccess::take_ahead_of_snapshots(slot, Clock::now() + options_.quiesce_timeout);
      if (!move.access)
        return move.error(Phase::Prepare, "another upgrade or a snapshot of this module was still in progress after " +
                                              std::to_string(options_.quiesce_timeout.count()) + " ms");
      slot.log().debug("prepare: start");
      report_progress({slot.name(), "prepare"});

      // New code runs in a child first: a crash, a hang, an exit there
      // refuses the upgrade, and this process never loads the image.
      if (auto rehearsed = rehearse(move, old); !rehearsed) return rehearsed;

      // A pinned file is checked by the loader, on the bytes it copies and
      // loads: what the release checked earlier may have changed since.
      std::shared_ptr<const Image> image = move.access->live().image;
      if (!move.step->file.empty()) {
        auto loaded = loader_.load(move.step->file, slot.name(), move.step->sha256);
        if (!loaded) return std::move(loaded).error();
        image = std::move(loaded.value());
      }
      const ImageInfo& to = image->info();
      move.report.to = to.version;
      move.report.to_schema = to.schema;
      move.report.to_file = image->source().string();
      move.report.to_sha256 = image->sha256();
      move.report.direction = direction_between(from.version, to.version);
      if (auto chosen = choose_state(move, from, to); !chosen) return chosen;

      auto next = move.access->make_live(std::move(image));
      if (!next) return std::move(next).error();
      move.next = std::move(next.value());
      move.report.phases.prepare = since(started) - move.report.phases.rehearse;
      slot.log().debug("prepare: v{} ready in {} us", to.version.value, move.report.phases.prepare.count());
    }
    return {};
  }

  /// 1a. (in prepare) The rehearsal of the new image, when options ask for
  /// it: in a child (molt-rehearse), on the state the module has (its
  /// recent snapshot, or one taken now), saving back into the schema the
  /// old version reads. Refuses the step with the rehearsal's one line.
  /// A state taken for a rehearsal, as a snapshot is, written to `file`;
  /// which state, for the report. By pre-copy when the module has it (a
  /// pause only for the last changes): as parts straight into the file when
  /// the new version reads parts, else into a second instance saved whole.
  /// Else with the module paused. On a downgrade to an older schema, in that
  /// schema, as the upgrade itself will hand it over (the newer code
  /// converts down).
  Result<std::string> take_state_to_rehearse(Move& move, const ImageInfo& from, const ImageInfo& to,
                                             const std::filesystem::path& file) {
    const bool down = to.schema < from.schema;
    const api::SchemaVersion schema = down ? to.schema : from.schema;
    const api::SaveTarget target{schema, down ? api::Direction::Down : api::Direction::Same,
                                 down ? move.step->extra : api::Values{}};
    const StateBlob about{move.slot().name(), from.version, schema, {}};
    const auto paused = Clock::now();
    const auto ms = [&] {
      return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - paused).count());
    };
    if (has_hook(to, Hook::ReceivePart)) {
      auto parts = PartFile::create(file, about, options_.max_state_bytes);
      if (!parts) return std::move(parts).error();
      if (auto moved = move.access->save_by_precopy_to(*parts.value(), target, options_.precopy, options_.quiesce_timeout)) {
        if (!*moved) return std::move(*moved).error();
        auto size = parts.value()->commit({});
        if (!size) return std::move(size).error();
        return "a state taken for it (" + std::to_string(size.value()) + " B of parts, by pre-copy in " + ms() + " ms)";
      }
    }
    bool precopied = true;
    auto bytes = move.access->save_by_precopy(target, options_.precopy, options_.quiesce_timeout);
    if (!bytes) {
      precopied = false;
      if (!move.access->suspend(paused + options_.quiesce_timeout))
        return move.error(Phase::Prepare, "calls in progress did not finish within " +
                                              std::to_string(options_.quiesce_timeout.count()) +
                                              " ms, to take a state to rehearse with");
      StringSink sink(options_.max_state_bytes);
      auto saved = move.access->save(target, sink);
      move.access->resume();
      if (sink.over_limit())
        return move.error(Phase::Prepare, "state is larger than the limit of " +
                                              std::to_string(options_.max_state_bytes) + " bytes, to rehearse with");
      if (!saved) return std::move(saved).error();
      bytes = sink.take();
    }
    if (!*bytes) return std::move(*bytes).error();
    if (bytes->value().size() > options_.max_state_bytes)
      return move.error(Phase::Prepare, "state is larger than the limit of " +
                                            std::to_string(options_.max_state_bytes) + " bytes, to rehearse with");
    const std::string took = ms();
    StateBlob blob = about;
    blob.bytes = std::move(bytes->value());
    if (auto written = write_state_file(file, blob); !written) return std::move(written).error();
    return "a state taken for it (" + std::to_string(blob.bytes.size()) + " B, " +
           (precopied ? "by pre-copy in " : "module paused ") + took + " ms)";
  }

  Result<void> rehearse(Move& move, const RunningVersion& old) {
    const RehearsalOptions& options = options_.rehearsal;
    if (options.when == RehearseWhen::Never) return {};
    const std::filesystem::path image = move.step->file.empty() ? std::filesystem::path(old.file) : move.step->file;
    auto checked = loader_.check(image, move.slot().name(), move.step->sha256);  // reads the file; runs no module code
    if (!checked) return std::move(checked).error();
    const ImageInfo& from = old.info;
    const ImageInfo& to = checked->info;
    const auto& given = move.step->state;
    const bool code_only = !given && to.schema == from.schema && from.state_fingerprint != 0 &&
                           from.state_fingerprint == to.state_fingerprint;
    const bool migrating = given ? given->schema != to.schema : !code_only;
    if (options.when == RehearseWhen::Migrating && !migrating) return {};

    const auto started = Clock::now();
    report_progress({move.slot().name(), "rehearse"});
    RehearsalRequest request;
    request.helper = options.helper;
    request.image = image;
    request.module = move.slot().name();
    request.sha256 = checked->sha256;
    request.extra = move.step->extra;
    request.config = move.slot().config();
    request.deadline = options.deadline;
    request.max_state_bytes = options_.max_state_bytes;
    // The schema the old version reads back should this upgrade roll back;
    // an older version cannot write a newer schema (a downgrade): its own.
    request.save_schema = to.schema < from.schema ? to.schema : from.schema;
    std::string on;  // which state, for the report
    std::optional<std::filesystem::path> scratch;
    if (given) {
      scratch = options.scratch_dir / (move.slot().name() + ".rehearsal.molt");
      if (auto written = write_state_file(*scratch, *given); !written) return written;
      request.state = scratch;
      on = "the state given";
    } else if (auto recent = options.recent_snapshot && !(to.schema < from.schema) &&
                                     // A snapshot of a module with pre-copy may be parts, which
                                     // only a version with receive_part reads.
                                     (has_hook(to, Hook::ReceivePart) || !has_hook(from, Hook::TransferBegin))
                                 ? options.recent_snapshot(move.slot())
                                 : std::nullopt) {
      request.state = *recent;
      on = "its last snapshot (" + recent->filename().string() + ")";
    } else {
      scratch = options.scratch_dir / (move.slot().name() + ".rehearsal.molt");
      auto taken = take_state_to_rehearse(move, from, to, *scratch);
      if (!taken) return std::move(taken).error();
      request.state = scratch;
      on = std::move(taken.value());
    }
    const RehearsalResult result = host::rehearse(request);
    if (scratch) {
      std::error_code ignored;
      std::filesystem::remove(*scratch, ignored);
    }
    move.report.phases.rehearse = since(started);
    if (result.outcome == RehearsalOutcome::NotRun)
      return move.error(Phase::Prepare, "cannot rehearse: " + result.reason + " (host.rehearse = \"never\" skips it)");
    if (!result.passed()) {
      if (!result.log.empty()) move.slot().log().warn("rehearsal output: {}", result.log);
      move.report.to = checked->info.version;
      move.report.to_schema = checked->info.schema;
      return move.error(Phase::Prepare, result.reason);
    }
    move.report.rehearsal = "passed in " + std::to_string(result.took.count()) + " ms on " + on;
    move.slot().log().info("rehearsal of v{} {}", to.version.value, move.report.rehearsal);
    return {};
  }

  /// Decides which state the new instance receives, in which schema, and
  /// refuses combinations the new version cannot read.
  Result<void> choose_state(Move& move, const ImageInfo& from, const ImageInfo& to) {
    auto v = [](auto version) { return std::to_string(version.value); };
    if (const auto& given = move.step->state) {
      if (given->module != move.slot().name())
        return move.error(Phase::Prepare, "state archive is of module '" + given->module + "'");
      if (given->schema > to.schema)
        return move.error(Phase::Prepare, "state was written by v" + v(given->version) + " in schema " +
                                              v(given->schema) + "; v" + v(to.version) + " reads schemas up to " +
                                              v(to.schema));
      move.state_version = given->version;
      move.state_schema = given->schema;
      move.report.direction = direction_between(given->version, to.version);
      return {};
    }
    move.state_version = from.version;
    switch (move.report.direction) {
      case api::Direction::Up:  // the newer code reads the older schema
        if (to.schema < from.schema)
          return move.error(Phase::Prepare, "v" + v(to.version) + " declares schema " + v(to.schema) +
                                                ", older than v" + v(from.version) + "'s schema " + v(from.schema));
        move.state_schema = from.schema;
        break;
      case api::Direction::Down:  // the newer code writes the older schema
        if (to.schema > from.schema)
          return move.error(Phase::Prepare, "v" + v(to.version) + " declares schema " + v(to.schema) +
                                                ", newer than v" + v(from.version) + "'s schema " + v(from.schema));
        move.state_schema = to.schema;
        break;
      case api::Direction::Same:
        if (to.schema != from.schema)
          return move.error(Phase::Prepare, "the running v" + v(from.version) + " has schema " + v(from.schema) +
                                                " but this v" + v(to.version) + " declares schema " + v(to.schema));
        move.state_schema = from.schema;
        break;
    }
    // Same schema and the same layout, built from the same definition: the
    // state object itself can change hands. Fingerprint 0 means unknown.
    // Both images must have the hooks that move it, both ways (a rollback
    // moves it back): otherwise it would be detached, then dropped.
    auto moves_objects = [](const ImageInfo& image) {
      return has_hook(image, Hook::DetachState) && has_hook(image, Hook::AttachState);
    };
    move.handoff = to.schema == from.schema && from.state_fingerprint != 0 &&
                   from.state_fingerprint == to.state_fingerprint && moves_objects(from) && moves_objects(to);
    return {};
  }

  // 1b. pre-copy ------------------------------------------------------------
  // A migrating upgrade between two versions that implement pre-copy moves
  // the state while the old version serves, in rounds (upgrade/precopy.hpp);
  // the pause then holds only the final part, taken in migrate.
  Result<void> precopy() {
    for (auto& move : moves_) {
      failing_ = &move;
      const bool transfers = options_.precopy.enabled && !move.handoff && !move.step->state &&
                             move.access->can_transfer() && move.next->hooks().can_transfer();
      if (!transfers) continue;
      const auto started = Clock::now();
      report_progress({move.slot().name(), "precopy"});
      move.precopy = std::make_unique<PreCopy>(
          *move.access, *move.next, api::SaveTarget{move.state_schema, move.report.direction, move.step->extra},
          migration_of(move), options_.precopy, [name = move.slot().name()](unsigned round, const PrecopyRound& so_far) {
            report_progress({name, "precopy", so_far.bytes, 0, 0, round});
          });
      auto ran = move.precopy->run();
      move.report.phases.precopy = since(started);
      move.report.precopy = move.precopy->report();
      if (!ran) return move.error(ran.error().phase, ran.error().reason);
      move.slot().log().debug("precopy: {} round(s) in {} us, {}", move.report.precopy->rounds.size(),
                              move.report.phases.precopy.count(), move.report.precopy->ended);
    }
    return {};
  }

  // 2. quiesce ------------------------------------------------------------
  Result<void> quiesce() {
    for (auto& move : moves_) {
      failing_ = &move;
      ModuleSlot& slot = move.slot();
      slot.log().debug("quiesce: start");
      report_progress({slot.name(), "quiesce"});
      move.paused_at = Clock::now();
      move.held = true;
      if (!move.access->suspend(move.paused_at + options_.quiesce_timeout)) {  // reopens the gate itself
        move.report.phases.quiesce = since(move.paused_at);
        move.report.pause = move.report.phases.quiesce;
        return move.error(Phase::Quiesce, std::to_string(slot.stats().gate.inside) +
                                              " call(s) still running after " +
                                              std::to_string(options_.quiesce_timeout.count()) + " ms");
      }
      move.paused = true;
      move.report.phases.quiesce = since(move.paused_at);
      slot.log().debug("quiesce: done in {} us", move.report.phases.quiesce.count());
    }
    return {};
  }

  // 3 + 4. save and migrate: the phase "migrate" -----------------------------
  // Per module, the state goes from the old instance to the new one in one of
  // three ways: the state object itself changes hands (code-only upgrade); the
  // new instance reads a given state (restore); or it is streamed: save_state
  // writes into a bounded pipe and, once the first chunk is full, load_state
  // starts reading it on a second thread while the saving goes on.
  Result<void> migrate() {
    for (auto& move : moves_) {
      failing_ = &move;
      move.slot().log().debug("save: start, schema {}", move.state_schema.value);
      if (move.handoff && hand_over(move)) continue;
      if (move.precopy) {
        if (auto moved = finish_precopy(move); !moved) return moved;
        continue;
      }
      if (auto moved = move.step->state ? load_given(move) : stream(move); !moved) return moved;
      move.slot().log().debug("migrate: {} bytes, save {} us, load {} us", move.report.state_bytes,
                              move.report.phases.save.count(), move.report.phases.migrate.count());
    }
    return {};
  }

  /// Code-only: moves the state object. False when the old instance does not
  /// give it up (then it is serialized instead).
  bool hand_over(Move& move) {
    const auto started = Clock::now();
    move.object = move.access->live().hooks().detach_state();
    move.report.phases.save = since(started);
    if (move.object == nullptr) {
      move.handoff = false;
      return false;
    }
    move.object_at = Move::Object::Detached;
    const auto attaching = Clock::now();
    move.next->hooks().attach_state(move.object);
    move.object_at = Move::Object::InNew;
    move.report.phases.migrate = since(attaching);
    move.report.state_in_memory = true;
    return true;
  }

  /// Pre-copy: the final part, in the pause (save: writing it; migrate:
  /// the new instance applying it).
  Result<void> finish_precopy(Move& move) {
    auto done = move.precopy->finish();
    const PrecopyReport& precopy = move.precopy->report();
    move.report.precopy = precopy;
    move.report.phases.save = precopy.final.took;
    std::uint64_t bytes = precopy.final.bytes;
    for (const auto& round : precopy.rounds) bytes += round.bytes;
    move.report.state_bytes = bytes;
    if (!done) return move.error(done.error().phase, done.error().reason);
    move.precopy.reset();  // its receiver is idle: every part applied
    return {};
  }

  /// What the new instance's load_state is told.
  static api::Migration migration_of(const Move& move) {
    return api::Migration{move.state_schema, move.state_version, move.report.direction, move.step->extra};
  }

  /// The new instance's load_state over `source`, which holds at most `size`
  /// bytes; why it failed, if it did.
  std::optional<std::string> load(Move& move, std::streambuf& source, std::uint64_t size) {
    return load_state_from(move.next->hooks(), source, size, migration_of(move));
  }

  /// Restore: the new instance reads the given bytes, all of them.
  Result<void> load_given(Move& move) {
    move.report.state_bytes = move.step->state->bytes.size();
    const auto started = Clock::now();
    const auto failure = load_state_blob(move.next->hooks(), *move.step->state, migration_of(move));
    move.report.phases.migrate = since(started);
    if (failure) return move.error(Phase::Migrate, *failure);
    return {};
  }

  /// Upgrade: save_state streams into load_state.
  Result<void> stream(Move& move) {
    ModuleSlot& slot = move.slot();
    std::optional<std::string> load_failure;
    Clock::time_point load_started;
    std::thread reader;  // started once the state proves larger than one chunk
    StatePipe pipe(options_.max_state_bytes, [&] {
      // Called inside the old version's save_state (its first full chunk):
      // the reader thread is the host's, not a thread of that module.
      const HostCodeScope host_code;
      load_started = Clock::now();
      reader = std::thread([&] {
        name_this_thread("molt-load");
        load_failure = load(move, pipe.source(), options_.max_state_bytes);
        move.report.phases.migrate = since(load_started);
        pipe.finish_reading();
      });
    });
    const std::uint64_t expected = slot.stats().state_bytes.value_or(0);
    report_progress({slot.name(), "migrate", 0, 0, expected});
    pipe.on_chunk([&](std::uint64_t written, std::uint64_t taken) {
      report_progress({slot.name(), "migrate", written, taken, expected});
    });
    const auto started = Clock::now();
    const api::SaveTarget target{move.state_schema, move.report.direction, move.step->extra};
    auto saved = move.access->save(target, pipe.sink());
    pipe.finish_writing(saved.ok());
    move.report.phases.save = since(started);
    if (reader.joinable()) {
      reader.join();
    } else if (saved) {  // it all fit in one chunk: load it here, no thread needed
      load_started = Clock::now();
      load_failure = load(move, pipe.source(), pipe.bytes_written());
      move.report.phases.migrate = since(load_started);
      pipe.finish_reading();
    }
    move.report.state_bytes = pipe.bytes_written();
    if (pipe.over_limit()) return move.error(Phase::Save, over_limit_reason(options_.max_state_bytes));
    if (!saved) {
      // A load that ended first makes the save fail too; the load is the cause then.
      if (pipe.reader_gave_up()) {
        if (load_failure) return move.error(Phase::Migrate, *load_failure);
        return move.error(Phase::Migrate, "load_state returned before the state was fully written, so with "
                                          "bytes unread (does it read the schema it was given?)");
      }
      return std::move(saved).error();
    }
    if (load_failure) return move.error(Phase::Migrate, *load_failure);
    if (const auto left = pipe.unread(); left != 0)
      return move.error(Phase::Migrate, unread_reason(left, move.report.state_bytes));
    return {};
  }

  // 5. resume: the point of no return --------------------------------------
  void resume() {
    for (auto it = moves_.rbegin(); it != moves_.rend(); ++it) {
      Move& move = *it;
      const auto started = Clock::now();
      ModuleSlot& slot = move.slot();
      report_progress({slot.name(), "resume"});
      const ImageInfo& to = move.next->image->info();
      // A restore (state given, e.g. a snapshot at boot) is not an upgrade:
      // what ran before it is not a version to roll back to.
      using Swap = ModuleSlot::UpgradeAccess::Swap;
      const auto swap = move.step->state ? Swap::Restore : Swap::Upgrade;
      move.replaced = move.access->swap(std::move(move.next), swap);
      if (!move.report.state_in_memory) move.access->set_state_bytes(move.report.state_bytes);
      move.report.queued_calls = move.access->resume(to.call_mode);
      move.paused = false;
      move.report.phases.resume = since(started);
      move.report.pause = since(move.paused_at);
    }
  }

  // 6. clean up -------------------------------------------------------------
  void clean_up() {
    for (auto& move : moves_) {
      const auto started = Clock::now();
      report_progress({move.report.module, "cleanup"});
      move.replaced.reset();  // stop(), destroy; the image unloads with its last instance
      move.report.phases.cleanup = since(started);
    }
  }

  // rollback ------------------------------------------------------------------
  std::vector<UpgradeReport> roll_back(Error cause) {
    const LogScope scope(0, "rollback");
    if (failing_ != nullptr) report_progress({failing_->report.module, "rollback"});
    const bool any_held = std::any_of(moves_.begin(), moves_.end(), [](const Move& m) { return m.held; });
    for (auto it = moves_.rbegin(); it != moves_.rend(); ++it) {
      Move& move = *it;
      if (!move.access) continue;  // never got this far
      const auto started = Clock::now();
      // A state object handed over goes back where it came from, untouched.
      if (move.object_at == Move::Object::InNew) {
        move.object = move.next->hooks().detach_state();
        move.object_at = Move::Object::Detached;
      }
      if (move.object_at == Move::Object::Detached) {
        move.access->live().hooks().attach_state(move.object);
        move.object_at = Move::Object::InOld;
      }
      move.precopy.reset();  // ends the transfer; its receiver lets go of the new instance
      move.next.reset();     // stop() and destroy the new instance; its image unloads
      if (move.paused) {
        move.report.queued_calls = move.access->resume();  // they run on the old version
        move.paused = false;
        move.report.pause = since(move.paused_at);
      }
      move.report.phases.rollback = since(started);
    }
    for (auto& move : moves_) {
      if (&move == failing_) {
        move.report.error = cause;
      } else {
        move.report.error = move.error(cause.phase, std::string(kNotUpgradedBecause) + failing_->report.module + " failed");
      }
    }
    return finish(any_held ? Outcome::RolledBack : Outcome::Refused);
  }

  std::vector<UpgradeReport> finish(Outcome outcome) {
    std::vector<UpgradeReport> reports;
    for (auto& move : moves_) {
      move.report.outcome = outcome;
      if (move.step->slot != nullptr) {
        auto& log = move.slot().log();
        log.log(outcome == Outcome::Succeeded ? spdlog::level::info : spdlog::level::err, "upgrade {}",
                move.report.summary());
      }
      reports.push_back(std::move(move.report));
    }
    return reports;
  }

  Loader& loader_;
  const UpgradeOptions& options_;
  std::vector<Move> moves_;
  Move* failing_ = nullptr;  ///< the move whose phase ran last (the culprit when one fails)
  const std::chrono::system_clock::time_point started_at_ = std::chrono::system_clock::now();
};

std::vector<UpgradeReport> run_upgrade(std::span<const UpgradeTarget> steps, Loader& loader,
                                       const UpgradeOptions& options) {
  return UpgradeTransaction(steps, loader, options).run();
}

UpgradeReport upgrade(ModuleSlot& slot, Loader& loader, const std::filesystem::path& file, const api::Values& extra,
                      const UpgradeOptions& options) {
  const UpgradeTarget step{&slot, file, std::nullopt, extra, std::nullopt};
  return std::move(run_upgrade(std::span(&step, 1), loader, options).front());
}

UpgradeReport restore(ModuleSlot& slot, Loader& loader, StateBlob state, const std::filesystem::path& file,
                      const UpgradeOptions& options) {
  const UpgradeTarget step{&slot, file, std::move(state), {}, std::nullopt};
  return std::move(run_upgrade(std::span(&step, 1), loader, options).front());
}

Result<void> adopt_state(ModuleSlot& slot, const StateBlob& state, std::chrono::milliseconds quiesce_timeout) {
  const ImageInfo info = slot.running().info;
  const auto fail = [&](std::string why) { return Error{slot.name(), info.version, {}, Phase::Migrate, std::move(why)}; };
  if (state.schema != info.schema)
    return fail("the state handed over is in schema " + std::to_string(state.schema.value) + ", " +
                "the running version's is " + std::to_string(info.schema.value));
  auto access = ModuleSlot::UpgradeAccess::take_until(slot, Clock::now() + quiesce_timeout);
  if (!access) return fail("an upgrade or a snapshot still ran after " + std::to_string(quiesce_timeout.count()) + " ms");
  auto fresh = access->make_live(access->live().image);
  if (!fresh) return std::move(fresh).error();
  {
    const LogScope scope(info.version.value);
    if (auto why = load_state_blob(fresh.value()->hooks(), state,
                                   api::Migration{state.schema, state.version, api::Direction::Same, {}}))
      return fail(std::move(*why));
  }
  if (!access->suspend(Clock::now() + quiesce_timeout, "hot restart"))
    return fail("calls still in progress after " + std::to_string(quiesce_timeout.count()) + " ms");
  auto replaced = access->swap(std::move(fresh.value()), ModuleSlot::UpgradeAccess::Swap::Restore);
  access->set_state_bytes(state.bytes.size());
  access->resume();
  replaced.reset();  // the instance started empty, stopped outside the pause
  return {};
}

}  // namespace molt::host
