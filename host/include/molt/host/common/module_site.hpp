// Which module code runs on this thread, for the crash handler.
//
// When moltd dies of a fatal signal, the record it leaves (crash_record.hpp)
// names the module, version and image that were running on the crashing
// thread, and the hook they were in. The handler that writes it runs in a
// signal context: it may not allocate, lock, format numbers with printf or
// touch anything that lazily initialises itself. So the knowledge is kept in
// a form it can only copy:
//
//  - ModuleSite, made once per loaded image (or instance), formats at
//    construction the record's lines about the image into a fixed buffer
//    inside itself: fields escaped (a newline in a module name cannot forge
//    a record line) and truncated (a record has a bounded size).
//  - ModuleCodeScope, an RAII object around every call into module code,
//    points a thread_local at itself (site and hook) and puts the previous
//    one back on exit. Scopes nest: a module's start() may run a job step.
//  - module_code_on_this_thread() reads that pointer; async-signal-safe.
//
// Why the thread_local is safe to read in a signal handler: it is a single
// pointer, constant-initialised (constinit, so there is no lazy
// initialisation and no TLS wrapper function), and declared with the
// initial-exec TLS model, so reading it is one load relative to %fs: no call
// to __tls_get_addr, which may allocate and is not async-signal-safe. molt_host
// is compiled as position-independent code, whose default model for an extern
// thread_local is global-dynamic (that call); hence the attribute. Initial-exec
// is right because molt_host is linked into the program (moltd, the tests);
// were it ever dlopen'ed, the 8 bytes would come from glibc's static TLS
// reserve. One pointer, rather than a (site, hook) pair, so that a signal
// between two stores never sees half of a scope.
//
// It is read and written with the __atomic builtins (lock-free, as a signal
// handler needs; relaxed: only this thread and its own signal handlers read
// it), not as a std::atomic: UBSan checks a std::atomic's `this` for null
// before each member call, and GCC 12 branches on the flags of the
// `add x@gottpoff(%rip)` that computes that address; the linker relaxes the
// add to a `lea`, which sets no flags, so under MOLT_SANITIZE the check read
// stale flags and failed ("member call on null pointer of type 'struct
// atomic'"). A builtin takes the address without a check.
#pragma once

#include <atomic>
#include <cstddef>
#include <string_view>

#include "molt/types.hpp"

namespace molt::host {

/// The names of the places module code runs, as crash records and the log
/// show them ("... in load_state: SIGSEGV"). The plugin API's names where it
/// has one, so that a module's author finds the function.
namespace module_hook {
inline constexpr const char* kStaticInit = "static initialisation";  ///< dlopen runs the image's static constructors
inline constexpr const char* kConstructor = "constructor";            ///< the image's factory: a new instance
inline constexpr const char* kStart = "start";
inline constexpr const char* kHandle = "handle";
inline constexpr const char* kOnConnect = "on_connect";
inline constexpr const char* kOnData = "on_data";
inline constexpr const char* kOnDisconnect = "on_disconnect";
inline constexpr const char* kOnTimer = "on_timer";
inline constexpr const char* kRunJobStep = "run_job_step";
inline constexpr const char* kHealth = "health";
inline constexpr const char* kRefusalReply = "refusal_reply";
inline constexpr const char* kSaveState = "save_state";
inline constexpr const char* kLoadState = "load_state";
inline constexpr const char* kDetachState = "detach_state";
inline constexpr const char* kAttachState = "attach_state";
inline constexpr const char* kStop = "stop";
inline constexpr const char* kTransferBegin = "transfer_begin";
inline constexpr const char* kTransferChunk = "transfer_chunk";
inline constexpr const char* kTransferDelta = "transfer_delta";
inline constexpr const char* kTransferFinal = "transfer_final";
inline constexpr const char* kTransferEnd = "transfer_end";
inline constexpr const char* kReceivePart = "receive_part";
inline constexpr const char* kDestructor = "destructor";  ///< an instance deleted through its image
inline constexpr const char* kUnload = "unload";          ///< dlclose runs the image's static destructors
inline constexpr const char* kThread = "a thread it started";  ///< the body of a thread the image's code created
}  // namespace module_hook

/// One loaded image as a crash record names it, formatted once, here, so
/// that the crash handler only copies bytes. Neither copied nor moved: scopes
/// point at it, so it lives where the image's owner keeps it (construct it in
/// place, e.g. std::optional::emplace) until no scope can name it.
class ModuleSite {
 public:
  /// Longest part of each field kept (bytes, before escaping); a longer one
  /// is cut at a UTF-8 character boundary and marked with "…". The file keeps
  /// its end, where its base name is; the others keep their start.
  static constexpr std::size_t kMaxModule = 128;
  static constexpr std::size_t kMaxFile = 512;
  static constexpr std::size_t kMaxSha256 = 64;

  /// `file` is the operator's file (Image::source()), not the private copy;
  /// `sha256` its lowercase hex digest. Allocates nothing after it returns.
  ModuleSite(std::string_view module, api::ModuleVersion version, std::string_view file,
             std::string_view sha256) noexcept;
  ModuleSite(const ModuleSite&) = delete;
  ModuleSite& operator=(const ModuleSite&) = delete;

  /// The record's lines about the image, each ending in '\n':
  /// "module NAME", "version N", "file PATH", "sha256 HEX"; fields escaped
  /// as escape_record_field does.
  [[nodiscard]] std::string_view record_lines() const noexcept { return {record_, record_size_}; }
  /// "notes v4 (notes-4.so)": the image in the one line the handler writes
  /// to stderr; the file by its base name, escaped and truncated the same way.
  [[nodiscard]] std::string_view label() const noexcept { return {label_, label_size_}; }
  [[nodiscard]] api::ModuleVersion version() const noexcept { return version_; }

  /// Threads this image's code started (inside one of its scopes) that are
  /// still running. Counted only where the program interposes
  /// pthread_create (moltd: host/moltd/module_threads.cpp); 0 elsewhere. An
  /// image is never unloaded while it is not 0 (loader.cpp).
  [[nodiscard]] std::size_t threads() const noexcept { return threads_.load(std::memory_order_acquire); }
  void thread_started() const noexcept { threads_.fetch_add(1, std::memory_order_relaxed); }
  void thread_ended() const noexcept { threads_.fetch_sub(1, std::memory_order_release); }

 private:
  // An escaped byte takes at most 4; then the keys, ellipses and separators.
  static constexpr std::size_t kRecordCapacity = 4 * (kMaxModule + kMaxFile + kMaxSha256) + 64;
  static constexpr std::size_t kLabelCapacity = 4 * (kMaxModule + kMaxFile) + 32;

  api::ModuleVersion version_;
  mutable std::atomic<std::size_t> threads_{0};
  std::size_t record_size_ = 0;
  std::size_t label_size_ = 0;
  char record_[kRecordCapacity];
  char label_[kLabelCapacity];
};

class ModuleCodeScope;

namespace detail {
/// The innermost ModuleCodeScope of this thread, or null. See the header
/// comment for why it is declared this way; only ModuleCodeScope writes it.
extern constinit thread_local const ModuleCodeScope* innermost_module_code __attribute__((tls_model("initial-exec")));
}  // namespace detail

/// Marks the running thread as inside module code (`site`, in `hook`) for
/// its lifetime; restores what was there before when it ends, also when an
/// exception leaves it. Costs one thread-local load and two stores, inlined,
/// no call (bench/call_bench.cpp, BM_Call_ModuleCodeScope against
/// BM_Call_Bare: well under a nanosecond). `site` and `hook` (a string
/// literal, such as module_hook::kLoadState) must outlive the scope.
class ModuleCodeScope {
 public:
  ModuleCodeScope(const ModuleSite& site, const char* hook) noexcept
      : site_(&site), hook_(hook), outer_(__atomic_load_n(&detail::innermost_module_code, __ATOMIC_RELAXED)) {
    // The fields above are written before the pointer to them, as a signal
    // handler on this thread sees it (a compiler barrier, no instruction).
    std::atomic_signal_fence(std::memory_order_release);
    __atomic_store_n(&detail::innermost_module_code, this, __ATOMIC_RELAXED);
  }
  ~ModuleCodeScope() { __atomic_store_n(&detail::innermost_module_code, outer_, __ATOMIC_RELAXED); }
  ModuleCodeScope(const ModuleCodeScope&) = delete;
  ModuleCodeScope& operator=(const ModuleCodeScope&) = delete;

  [[nodiscard]] const ModuleSite& site() const noexcept { return *site_; }
  [[nodiscard]] const char* hook() const noexcept { return hook_; }

 private:
  const ModuleSite* site_;
  const char* hook_;
  const ModuleCodeScope* outer_;  ///< the scope this one is nested in, or null
};

/// Marks the running thread as back in host code inside a call into a
/// module: a callback the module's call made into the host (a state sink
/// being written to). What the host does there is the host's: a crash is
/// the host's, and a thread it starts is not the module's.
class HostCodeScope {
 public:
  HostCodeScope() noexcept : outer_(__atomic_load_n(&detail::innermost_module_code, __ATOMIC_RELAXED)) {
    __atomic_store_n(&detail::innermost_module_code, nullptr, __ATOMIC_RELAXED);
  }
  ~HostCodeScope() { __atomic_store_n(&detail::innermost_module_code, outer_, __ATOMIC_RELAXED); }
  HostCodeScope(const HostCodeScope&) = delete;
  HostCodeScope& operator=(const HostCodeScope&) = delete;

 private:
  const ModuleCodeScope* outer_;
};

/// Where module code runs on this thread: the innermost scope's site and
/// hook, or both null outside module code.
struct ModuleCode {
  const ModuleSite* site = nullptr;
  const char* hook = nullptr;
};

/// The calling thread's innermost ModuleCodeScope. Async-signal-safe: the
/// crash handler and the exit handler call it.
[[nodiscard]] inline ModuleCode module_code_on_this_thread() noexcept {
  const ModuleCodeScope* scope = __atomic_load_n(&detail::innermost_module_code, __ATOMIC_RELAXED);
  std::atomic_signal_fence(std::memory_order_acquire);
  if (scope == nullptr) return {};
  return {&scope->site(), scope->hook()};
}

/// `field` as a crash record line holds it: '\\' becomes "\\\\", newline
/// "\\n", carriage return "\\r", any other byte below 0x20 and 0x7f "\\xNN";
/// other bytes (UTF-8 or not) unchanged. Writes at most `capacity` bytes to
/// `out`, never part of an escape; returns how many. Async-signal-safe.
std::size_t escape_record_field(std::string_view field, char* out, std::size_t capacity) noexcept;

}  // namespace molt::host
