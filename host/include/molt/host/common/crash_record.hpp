// The crash record: what a dying moltd leaves in its run directory, and how
// the next boot reads it.
//
// The crash handler (daemon/crash_handler.hpp) writes <run dir>/crash.record
// from a signal handler, or from exit() called by module code. It is text,
// one "key value" line each, in this order, then the backtrace:
//
//   molt-crash 1                 the format; a reader refuses any other
//   time_ms 1712345678901        wall clock, unix milliseconds
//   pid 1234
//   tid 1240                     the crashing thread
//   cause signal                 or "cause exit"
//   signal 11 SIGSEGV            cause signal: number and name
//   code 1                       cause signal: si_code
//   address 0x0                  cause signal, only when the kernel reported a fault (si_code > 0)
//   sender 4321                  cause signal, only when a process sent it (kill, raise, abort)
//   status 3                     cause exit: what the module passed to exit()
//   in module                    or "in host": was module code running on the thread?
//   module notes                 in module: ModuleSite::record_lines(), escaped
//   version 4
//   file /srv/plugins/notes-4.so    the operator's file, not the private copy
//   sha256 0123...
//   hook load_state              in module: module_hook::..., escaped
//   backtrace
//   ./moltd(+0x1234)[0x55...]    one line per frame, as backtrace_symbols_fd writes them
//
// Fields are escaped as escape_record_field does (module_site.hpp): '\\',
// newline, carriage return and control bytes; nothing else. This file lives
// in common/ because both sides need it: the writer in daemon/ and the boot
// in release/, which cannot include each other.
//
// After reading it, the boot moves the record aside into
// <run dir>/crashes/crash-<time_ms>.record (the last kKeptCrashRecords are
// kept), so that one crash is reported once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/types.hpp"

namespace molt::host {

/// The first line of a crash record this host writes and reads.
inline constexpr std::string_view kCrashRecordFormat = "molt-crash 1";
/// How many moved-aside records <run dir>/crashes keeps.
inline constexpr std::size_t kKeptCrashRecords = 20;
/// The largest crash record read: its header is bounded (ModuleSite), its
/// backtrace has at most 64 frames.
inline constexpr std::uint64_t kMaxCrashRecordBytes = 256 * 1024;

[[nodiscard]] inline std::filesystem::path crash_record_path(const std::filesystem::path& run_dir) {
  return run_dir / "crash.record";
}
[[nodiscard]] inline std::filesystem::path crash_archive_dir(const std::filesystem::path& run_dir) {
  return run_dir / "crashes";
}

enum class CrashCause {
  Signal,  ///< a fatal signal: SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT
  Exit,    ///< module code called exit()
};

/// The module code that was running on the crashing thread.
struct CrashedModule {
  std::string module;
  api::ModuleVersion version;
  std::string file;    ///< the operator's file (absolute path), perhaps "…" and its end
  std::string sha256;  ///< of that file, lowercase hex
  std::string hook;    ///< module_hook::..., e.g. "load_state"
};

struct CrashRecord {
  std::int64_t time_ms = 0;
  std::int64_t pid = 0;
  std::int64_t tid = 0;
  CrashCause cause = CrashCause::Signal;
  // cause Signal:
  int signal = 0;
  std::string signal_name;               ///< "SIGSEGV"
  int code = 0;                          ///< si_code
  std::optional<std::uint64_t> address;  ///< the fault address, when the kernel gave one
  std::optional<std::int64_t> sender;    ///< the pid that sent the signal, when one did
  // cause Exit:
  int exit_status = 0;

  std::optional<CrashedModule> module;  ///< nothing: host code was running
  std::vector<std::string> backtrace;   ///< one frame a line, innermost first

  /// "SIGSEGV" or "exit(3)".
  [[nodiscard]] std::string cause_text() const;
  /// Whether another process sent the signal (kill -SEGV): then the module
  /// running on the thread that received it is not to blame.
  [[nodiscard]] bool sent_by_another_process() const { return sender && *sender != pid; }
};

/// The record at `path`; nothing when there is none. An Error when it is not
/// a regular file (a link, a FIFO: refused without blocking, like every file
/// the host reads), larger than kMaxCrashRecordBytes, of another format, or
/// lacks a line it must have (a crash during the write can cut it short).
[[nodiscard]] Result<std::optional<CrashRecord>> read_crash_record(const std::filesystem::path& path);

/// The one line the boot logs, after "moltd: ":
///   the previous run crashed in notes v4 (notes-4.so, sha256 0123456789ab…) in load_state: SIGSEGV
///   the previous run crashed in notes v4 (notes-4.so, sha256 0123456789ab…) in static initialisation: exit(1)
///   the previous run crashed in the host (no module code on the crashing thread): SIGSEGV at 0x0
/// The file by its base name, the sha256 by its first 12 digits. A signal
/// another process sent ends in " (sent by pid N)".
[[nodiscard]] std::string crash_line(const CrashRecord& record);

/// Moves <run dir>/crash.record to <run dir>/crashes/crash-<time_ms>.record
/// (creating the directory, 0700; "-2", "-3", ... when that name is taken)
/// and removes the oldest records there beyond kKeptCrashRecords. `time_ms`
/// is the record's, or the time now for a record that could not be read.
/// Returns the new path.
[[nodiscard]] Result<std::filesystem::path> move_crash_record_aside(const std::filesystem::path& run_dir,
                                                                    std::int64_t time_ms);

}  // namespace molt::host
