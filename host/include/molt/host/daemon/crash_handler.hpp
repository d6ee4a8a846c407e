// The crash handler: when moltd dies, it says where, once, in its run
// directory, and then dies as it would have anyway.
//
// install_crash_handler catches SIGSEGV, SIGBUS, SIGILL, SIGFPE and SIGABRT.
// The handler writes <run dir>/crash.record (format: common/crash_record.hpp)
// naming the module code the crashing thread was in (its ModuleCodeScope,
// common/module_site.hpp) or the host, the signal, the fault address and a
// backtrace; fsyncs it; prints one line to stderr (the journal under
// systemd); then restores the signal's default action and raises it again.
// The process therefore dies of the same signal: the exit status, a core
// dump (with the faulting thread's registers: the signal is delivered again
// once the handler returns) and systemd's Restart= behave as without it.
//
// Everything the handler needs is ready before it can run: the record's path
// is copied into a static buffer, backtrace() is called once (its first call
// dlopens libgcc, which allocates), each ModuleSite has formatted its lines.
// The handler calls only async-signal-safe functions: open, write, fsync,
// close, clock_gettime, sigaction, raise, nanosleep, and backtrace /
// backtrace_symbols_fd once warmed up (glibc documents the latter for
// exactly this use).
//
// Recursion: the five signals are blocked while the handler runs, so a fault
// inside it is fatal at once (the kernel applies the default action to a
// blocked synchronous fault). A second thread that crashes while the first
// writes waits (at most kConcurrentCrashWait) for the first to end the
// process, so that one record describes one crash.
//
// exit() called from module code (a static initialiser that gives up, a
// module that calls exit on error) ends moltd as surely as a signal. An
// on_exit() handler writes the same record, cause "exit" with the status
// exit() was given, when the exiting thread is inside a ModuleCodeScope; from
// host code it does nothing. It runs among the atexit handlers, after those
// registered later than install_crash_handler. _exit() and quick_exit() are
// not seen; abort() is, as SIGABRT (and so is std::terminate).
//
// Stack overflow: the handler runs on an alternate signal stack, or it could
// not run at all. A thread has one only if it asks: install_crash_handler
// gives one to its caller, other threads call prepare_thread_for_crash_reports
// when they start. A thread without one still gets its record for every
// other crash.
#pragma once

#include <chrono>
#include <filesystem>

#include "molt/host/common/error.hpp"

namespace molt::host {

/// How long a thread that crashes while another writes the record waits
/// for that one to end the process before it ends it itself.
inline constexpr std::chrono::seconds kConcurrentCrashWait{10};

/// Installs the handlers described above, to write crash_record_path(run_dir).
/// Once per process, on the main thread, early: before the threads start
/// and before any module is loaded (static initialisers run at load), but
/// after the previous run's record has been read and moved aside
/// (read_crash_record, move_crash_record_aside): a crash overwrites it.
/// Fails when called a second time, when the path is longer than PATH_MAX,
/// or when sigaltstack or sigaction fails.
[[nodiscard]] Result<void> install_crash_handler(const std::filesystem::path& run_dir);

/// Gives the calling thread an alternate signal stack (64 KiB and a guard
/// page, released when the thread ends), so that the crash handler also
/// runs when the thread overflows its stack. Keeps one of 16 KiB or more
/// that the thread already has (the sanitizers' runtime gives each thread
/// its own).
/// Call it first thing in a thread that runs module code.
[[nodiscard]] Result<void> prepare_thread_for_crash_reports();

}  // namespace molt::host
