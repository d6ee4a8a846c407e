// Rehearsing new code in a child process before the live process runs it.
//
// An image that crashes, hangs, calls exit(), throws or leaves a thread
// behind costs the host everything if the host runs it first: a SIGSEGV in
// a new version's load_state takes every module down with it. So before an
// upgrade loads a new image, the host runs the same image through the same hooks in a child, the
// helper molt-rehearse (installed beside moltd, host/molt_rehearse/main.cpp),
// and refuses the upgrade with one line if anything goes wrong there:
//
//   rehearsal of notes v4: SIGSEGV in load_state
//
// The helper's steps, in order, each announced to this process before it
// begins (so a crash, an exit or a hang is pinned to the step it happened in):
//
//   check                  read the file and check it (no module code runs)
//   static initialisation  load a private copy (dlopen: static constructors)
//   construct              create the instance
//   start                  start it, with a context of its own (the logger
//                          on stderr, the config values; timers and jobs
//                          accepted and ignored)
//   load_state             read the state file, if one is given, as the
//                          upgrade would: told its schema and version, the
//                          direction and the extra values; all of it read
//   health                 ask health(): a reason is a failure
//   save_state             write the state into `save_schema` (the schema
//                          the old version reads), in memory, bounded
//   stop, destroy          as at the end of an instance's life
//   threads                no thread the module started may still run (one
//                          would crash once its code is unmapped)
//   unload                 dlclose
//
// A step that throws or fails, a signal, an exit, or not finishing by the
// deadline ends the rehearsal with a reason naming the step. The child runs in
// a process group of its own, without core dumps, with an optional limit on
// its address space, its signal mask and dispositions reset, stdin on
// /dev/null, and no descriptor of this process but its pipes. At the
// deadline the whole group is killed (SIGKILL) and reaped: nothing of a
// rehearsal that stays in its group outlives rehearse().
//
// Thread-safe: rehearse() may run on any thread of a multi-threaded host,
// several at once. It spawns with posix_spawn (vfork-like: no copy of a large
// host's page tables) and reaps only its own child; the host must not reap
// children it did not start (no waitpid(-1), no SIGCHLD set to SIG_IGN).
// The thread that calls it must live until it returns (the child is killed
// if it dies first: PR_SET_PDEATHSIG).
//
// The caller decides what to rehearse: the upgrade transaction's prepare
// phase passes the new image, the running instance's state saved to a file,
// the upgrade's extra values, and as save_schema the schema the running
// version reads back should the upgrade be rolled back (its own on an
// upgrade; on a downgrade the new, older image's own, since an older
// version cannot write a newer schema and the newer version reads the
// older one).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "molt/types.hpp"

namespace molt::host {

struct RehearsalRequest {
  /// The helper, molt-rehearse. Installed beside moltd.
  std::filesystem::path helper;
  /// The image file to rehearse: the operator's file, which the helper
  /// checks and loads as the live process's loader would.
  std::filesystem::path image;
  /// The module the image must be.
  std::string module;
  /// When set, the image must have this SHA-256 (lowercase hex).
  std::optional<std::string> sha256;
  /// A state archive (molt-state/1, state_blob.hpp) for load_state, with
  /// the module, version and schema that wrote it in its header. None: the
  /// instance keeps its initial state and load_state is not rehearsed.
  std::optional<std::filesystem::path> state;
  /// The schema save_state writes; none: the image's own. The direction it
  /// is told comes from the schemas (older: down, same: same).
  std::optional<api::SchemaVersion> save_schema;
  api::Values extra;   ///< the upgrade's extra values, for the migration hooks
  api::Values config;  ///< the module's configuration values, as start sees them
  /// The whole rehearsal must end by then; a step still running is killed
  /// and reported as a hang ("did not finish health within 2000 ms").
  std::chrono::milliseconds deadline{10000};
  /// RLIMIT_AS of the child, in bytes; 0: no limit. (Not with the
  /// sanitizers, which reserve terabytes of address space.)
  std::uint64_t max_address_space = 0;
  /// Largest state read from the file and written by save_state.
  std::uint64_t max_state_bytes = 1ull << 30;
};

enum class RehearsalOutcome {
  Passed,  ///< every step ran and succeeded: the image may be loaded
  Failed,  ///< the module failed a step: crashed, hung, exited, threw, refused, left a thread
  NotRun,  ///< the helper could not be run or refused its arguments: nothing is known of the module
};

struct RehearsalResult {
  RehearsalOutcome outcome = RehearsalOutcome::NotRun;
  /// The step it ended in ("load_state"; the list above); empty when it
  /// passed, or when the helper ended before its first step.
  std::string step;
  /// One line, empty when it passed:
  ///   "rehearsal of faulty v2: SIGSEGV in load_state"
  ///   "rehearsal of faulty v2: exit(1) in static initialisation"
  ///   "rehearsal of faulty v2: load_state threw: <what>"
  ///   "rehearsal of faulty v2: did not finish health within 2000 ms"
  ///   "rehearsal of faulty v2: left 1 thread(s) running after stop"
  /// ("rehearsal of faulty: ..." while the version is not known yet).
  std::string reason;
  std::chrono::milliseconds took{0};  ///< from spawning the helper to reaping it
  std::optional<api::ModuleVersion> version;  ///< of the image, once the helper has read it
  std::uint64_t saved_bytes = 0;  ///< what save_state wrote, when it passed
  /// The last 4 KiB of the helper's stderr: the module's log lines and the
  /// helper's own, for the host's log when the rehearsal fails.
  std::string log;

  [[nodiscard]] bool passed() const noexcept { return outcome == RehearsalOutcome::Passed; }
};

/// molt-rehearse beside the running program (/proc/self/exe): where the
/// build puts it (bin/, with moltd) and where it is installed (bindir).
[[nodiscard]] std::filesystem::path rehearsal_helper_beside_this_program();

/// Runs `request.image` through the steps above in a child process and
/// reports how far it got. Never throws for anything the module or the
/// helper does; returns once the child and everything it started in its
/// process group are gone (a process that left the group with setsid() is
/// beyond reach: its pipes are abandoned half a second after the child).
[[nodiscard]] RehearsalResult rehearse(const RehearsalRequest& request);

}  // namespace molt::host
