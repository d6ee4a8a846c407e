// The crash handler (see the header for what it does and promises).
//
// Two entry points, one writer:
//   on_fatal_signal   sigaction handler of the five fatal signals: claim the
//                     crash, write the record, re-raise.
//   on_module_exit    glibc on_exit() handler: writes the record only when
//                     exit() was called inside a ModuleCodeScope.
//   write_record      both write through it: a stack buffer, integers by
//                     hand, the site's preformatted lines. No allocation, no
//                     lock, no stdio; only async-signal-safe calls.
//
// Invariant: everything static here is written by install_crash_handler
// before sigaction and on_exit publish the handlers, and never again.
#include "molt/host/daemon/crash_handler.hpp"

#include <execinfo.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>
#include <system_error>

#include "molt/host/common/signal_name.hpp"
#include "molt/host/common/crash_record.hpp"
#include "molt/host/common/module_site.hpp"

namespace molt::host {
namespace {

constexpr int kFatalSignals[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
constexpr int kMaxFrames = 64;
constexpr std::size_t kAltStackBytes = 64 * 1024;
/// An alternate stack a thread already has is kept from this size: the
/// handler needs a few KiB (its buffers, the unwinder, dladdr). The
/// sanitizers' runtime gives each thread one of about 32 KiB, and unmaps at
/// thread exit whichever is current: replacing it would leak it.
constexpr std::size_t kEnoughAltStackBytes = 16 * 1024;

char g_record_path[PATH_MAX];       ///< crash_record_path(run_dir), NUL-terminated
std::atomic<bool> g_installed{false};
/// The thread writing the crash record, or 0. Claimed once: the process
/// ends after it (a signal re-raised, or exit going on).
std::atomic<pid_t> g_crashing_thread{0};
static_assert(std::atomic<pid_t>::is_always_lock_free);

pid_t thread_id() noexcept { return static_cast<pid_t>(::syscall(SYS_gettid)); }

/// The signal's fixed name (common/signal_name.hpp), "SIGUNKNOWN" for another.
std::string_view crash_signal_name(int sig) noexcept {
  const std::string_view name = signal_name(sig);
  return name.empty() ? std::string_view("SIGUNKNOWN") : name;
}

/// Text into a stack buffer, written to `fd` as it fills. Integers are
/// formatted by hand: snprintf is not async-signal-safe.
class RecordWriter {
 public:
  explicit RecordWriter(int fd) noexcept : fd_(fd) {}
  ~RecordWriter() { flush(); }
  RecordWriter(const RecordWriter&) = delete;
  RecordWriter& operator=(const RecordWriter&) = delete;

  RecordWriter& text(std::string_view s) noexcept {
    for (char c : s) {
      if (size_ == sizeof buffer_) flush();
      buffer_[size_++] = c;
    }
    return *this;
  }
  RecordWriter& c_string(const char* s) noexcept { return text(s == nullptr ? std::string_view() : std::string_view(s)); }
  /// A string from module or host code that may hold what a line must not;
  /// its first 64 bytes (a hook's name is a short literal).
  RecordWriter& field(const char* s) noexcept {
    char escaped[256];
    return text({escaped, escape_record_field(s == nullptr ? "" : std::string_view(s, ::strnlen(s, 64)), escaped,
                                              sizeof escaped)});
  }
  RecordWriter& decimal(long long n) noexcept {
    char digits[24];
    std::size_t count = 0;
    unsigned long long magnitude = n < 0 ? 0ULL - static_cast<unsigned long long>(n) : static_cast<unsigned long long>(n);
    do {
      digits[count++] = static_cast<char>('0' + magnitude % 10);
      magnitude /= 10;
    } while (magnitude != 0);
    if (n < 0) text("-");
    while (count > 0) text({&digits[--count], 1});
    return *this;
  }
  RecordWriter& hex(unsigned long long n) noexcept {
    static constexpr char kHex[] = "0123456789abcdef";
    char digits[16];
    std::size_t count = 0;
    do {
      digits[count++] = kHex[n & 0xf];
      n >>= 4;
    } while (n != 0);
    text("0x");
    while (count > 0) text({&digits[--count], 1});
    return *this;
  }
  void flush() noexcept {
    std::size_t done = 0;
    while (done < size_) {
      const ssize_t n = ::write(fd_, buffer_ + done, size_ - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // nothing else to do in a dying process
      done += static_cast<std::size_t>(n);
    }
    size_ = 0;
  }

 private:
  int fd_;
  std::size_t size_ = 0;
  char buffer_[1024];
};

/// What ended the process: a signal (with its siginfo) or exit(status).
struct Cause {
  int signal = 0;
  const siginfo_t* info = nullptr;
  int exit_status = 0;
};

/// Writes the record (format: crash_record.hpp), then one line to stderr.
/// Async-signal-safe.
void write_record(const Cause& cause) noexcept {
  const int saved_errno = errno;
  const ModuleCode code = module_code_on_this_thread();
  // O_NOFOLLOW: the run directory is the host's; a link there points where it did not choose.
  const int fd = ::open(g_record_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    timespec now{};
    ::clock_gettime(CLOCK_REALTIME, &now);
    {
      RecordWriter out(fd);
      out.text(kCrashRecordFormat).text("\ntime_ms ").decimal(static_cast<long long>(now.tv_sec) * 1000 + now.tv_nsec / 1'000'000);
      out.text("\npid ").decimal(::getpid()).text("\ntid ").decimal(thread_id());
      if (cause.info != nullptr) {
        const siginfo_t& info = *cause.info;
        out.text("\ncause signal\nsignal ").decimal(cause.signal).text(" ").text(crash_signal_name(cause.signal));
        out.text("\ncode ").decimal(info.si_code);
        // si_addr is the fault's only when the kernel raised it (si_code > 0);
        // si_pid only when a process sent it.
        if (info.si_code > 0 && cause.signal != SIGABRT)
          out.text("\naddress ").hex(reinterpret_cast<unsigned long long>(info.si_addr));
        if (info.si_code == SI_USER || info.si_code == SI_TKILL || info.si_code == SI_QUEUE)
          out.text("\nsender ").decimal(info.si_pid);
      } else {
        out.text("\ncause exit\nstatus ").decimal(cause.exit_status);
      }
      if (code.site != nullptr) {
        out.text("\nin module\n").text(code.site->record_lines()).text("hook ").field(code.hook);
      } else {
        out.text("\nin host");
      }
      out.text("\nbacktrace\n");
    }
    void* frames[kMaxFrames];
    const int depth = ::backtrace(frames, kMaxFrames);
    ::backtrace_symbols_fd(frames, depth, fd);
    ::fsync(fd);
    ::close(fd);
  }

  RecordWriter err(STDERR_FILENO);
  err.text("moltd: ");
  if (cause.info != nullptr) err.text(crash_signal_name(cause.signal));
  else err.text("exit(").decimal(cause.exit_status).text(")");
  if (code.site != nullptr) err.text(" in ").text(code.site->label()).text(" in ").field(code.hook);
  else err.text(" in the host (no module code on the crashing thread)");
  if (fd >= 0) err.text("; crash record ").c_string(g_record_path).text("\n");
  else err.text("; could not write the crash record ").c_string(g_record_path).text("\n");
  err.flush();
  errno = saved_errno;
}

/// Dies of `sig`: its default action from now on, raised again. The signal
/// is blocked while its handler runs, so it is delivered when the handler
/// returns; a fault then also re-executes the faulting instruction, so the
/// core shows the thread where it was.
void die_of(int sig) noexcept {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  ::sigaction(sig, &dfl, nullptr);
  ::raise(sig);
}

/// Claims the crash for this thread. False when another thread has already
/// claimed it, after waiting for that one to end the process (or the wait
/// to run out), or when this thread did (a fault while it writes).
bool claim_crash() noexcept {
  const pid_t self = thread_id();
  pid_t owner = 0;
  if (g_crashing_thread.compare_exchange_strong(owner, self)) return true;
  if (owner == self) return false;
  constexpr long kStepNs = 50'000'000;
  for (long waited = 0; waited < std::chrono::nanoseconds(kConcurrentCrashWait).count(); waited += kStepNs) {
    timespec step{0, kStepNs};
    ::nanosleep(&step, nullptr);
  }
  return false;
}

void on_fatal_signal(int sig, siginfo_t* info, void* /*context*/) {
  if (claim_crash()) write_record(Cause{sig, info, 0});
  die_of(sig);
}

void on_module_exit(int status, void* /*arg*/) {
  if (module_code_on_this_thread().site == nullptr) return;  // the host exits: not a crash
  if (claim_crash()) write_record(Cause{0, nullptr, status});
}

/// This thread's alternate signal stack, when it is ours: disabled, then
/// unmapped, when the thread ends.
struct AltStack {
  void* mapping = nullptr;
  std::size_t mapping_size = 0;

  ~AltStack() {
    if (mapping == nullptr) return;
    stack_t current{};
    if (::sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_ONSTACK) == 0 &&
        current.ss_sp == static_cast<char*>(mapping) + page_size()) {
      stack_t off{};
      off.ss_flags = SS_DISABLE;
      ::sigaltstack(&off, nullptr);
      ::munmap(mapping, mapping_size);
    }
  }
  static std::size_t page_size() noexcept { return static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)); }
};
thread_local AltStack t_alt_stack;

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

Error crash_handler_error(std::string reason) { return Error{{}, {}, {}, Phase::Start, "crash handler: " + std::move(reason)}; }

}  // namespace

Result<void> prepare_thread_for_crash_reports() {
  if (t_alt_stack.mapping != nullptr) return {};
  stack_t current{};
  if (::sigaltstack(nullptr, &current) != 0) return crash_handler_error("sigaltstack: " + errno_text(errno));
  if ((current.ss_flags & SS_DISABLE) == 0 && current.ss_size >= kEnoughAltStackBytes) return {};  // the thread has one
  // The lowest page is a guard: an overflow of the alternate stack faults
  // (and, the signals being blocked, kills) instead of writing below it.
  const std::size_t page = AltStack::page_size();
  const std::size_t size = kAltStackBytes + page;
  void* mapping = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (mapping == MAP_FAILED) return crash_handler_error("cannot map an alternate signal stack: " + errno_text(errno));
  if (::mprotect(mapping, page, PROT_NONE) != 0) {
    const int err = errno;
    ::munmap(mapping, size);
    return crash_handler_error("mprotect: " + errno_text(err));
  }
  stack_t stack{};
  stack.ss_sp = static_cast<char*>(mapping) + page;
  stack.ss_size = kAltStackBytes;
  if (::sigaltstack(&stack, nullptr) != 0) {
    const int err = errno;
    ::munmap(mapping, size);
    return crash_handler_error("sigaltstack: " + errno_text(err));
  }
  t_alt_stack.mapping = mapping;
  t_alt_stack.mapping_size = size;
  return {};
}

Result<void> install_crash_handler(const std::filesystem::path& run_dir) {
  const std::string path = crash_record_path(run_dir).string();
  if (path.size() >= sizeof g_record_path)
    return crash_handler_error("the path " + path + " is longer than " + std::to_string(sizeof g_record_path - 1) + " bytes");
  if (g_installed.exchange(true)) return crash_handler_error("already installed");
  std::memcpy(g_record_path, path.c_str(), path.size() + 1);

  // backtrace()'s first call loads libgcc_s (dlopen, malloc): not in a handler.
  void* warm_up[2];
  (void)::backtrace(warm_up, 2);

  if (auto prepared = prepare_thread_for_crash_reports(); !prepared) return prepared;

  struct sigaction action {};
  action.sa_sigaction = on_fatal_signal;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  for (int sig : kFatalSignals) sigaddset(&action.sa_mask, sig);
  for (int sig : kFatalSignals)
    if (::sigaction(sig, &action, nullptr) != 0)
      return crash_handler_error("sigaction(" + std::string(crash_signal_name(sig)) + "): " + errno_text(errno));
  if (::on_exit(on_module_exit, nullptr) != 0) return crash_handler_error("on_exit failed");
  return {};
}

}  // namespace molt::host
