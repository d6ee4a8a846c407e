// moltd under systemd, without libsystemd: the notification protocol
// (sd_notify: one datagram per message to $NOTIFY_SOCKET), the watchdog
// ($WATCHDOG_USEC) and socket activation ($LISTEN_FDS). Each reads its
// variables once, at start, before any thread runs, and unsets them: nothing
// moltd starts later (a module's child process) speaks to systemd in
// moltd's name or takes its sockets.
//
// What moltd tells systemd (docs/operations.md, "Running under systemd"):
//   READY=1, STATUS=...      every module serves; HTTP and the control socket are up
//   RELOADING=1, MONOTONIC_USEC=..., STATUS=...
//                            a change of what runs begins: reload, rollback,
//                            restore, release install, probation rollback
//   READY=1, STATUS=...      that change is over, however it went
//   STATUS=...               only the release's status changed (it became permanent)
//   STOPPING=1, STATUS=...   SIGTERM or SIGINT: shutting down
//   WATCHDOG=1               every half WatchdogSec, while the I/O threads answer
// Every one is a no-op when moltd does not run under systemd.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"

namespace molt::host::systemd {

/// Sends notifications to systemd's socket. Thread-safe: each message is one
/// datagram, sent whole or not at all.
class Notifier {
 public:
  /// From $NOTIFY_SOCKET, which is unset afterwards; disabled when it is not set.
  static Notifier from_environment(std::shared_ptr<spdlog::logger> log);
  /// Sends to `address`: a socket path, or "@name" in the abstract namespace.
  /// Disabled when empty; disabled with a warning when it is neither.
  Notifier(std::string address, std::shared_ptr<spdlog::logger> log);
  ~Notifier();
  Notifier(const Notifier&) = delete;
  Notifier& operator=(const Notifier&) = delete;

  [[nodiscard]] bool enabled() const noexcept { return fd_ >= 0; }
  /// NOTIFY_SOCKET as it was given (a hot restart's successor gets it again); empty when disabled.
  [[nodiscard]] const std::string& address() const noexcept { return address_; }

  /// READY=1 and STATUS=`status`.
  void ready(std::string_view status);
  /// RELOADING=1, MONOTONIC_USEC=<CLOCK_MONOTONIC now, in µs> and STATUS=`status`.
  void reloading(std::string_view status);
  /// STOPPING=1 and STATUS=`status`.
  void stopping(std::string_view status);
  /// STATUS=`status`.
  void status(std::string_view status);
  /// WATCHDOG=1.
  void watchdog();

  /// Sends `message` (NAME=VALUE lines) as one datagram. Returns whether it
  /// went out; a failure is logged once, until a message goes out again.
  bool send(std::string_view message);

 private:
  std::string address_;  ///< as given; '@' stands for the leading NUL of an abstract name
  int fd_ = -1;          ///< our datagram socket; -1: disabled
  std::shared_ptr<spdlog::logger> log_;
  std::atomic<bool> failing_{false};  ///< the last send failed (and was logged)
};

/// CLOCK_MONOTONIC now, in µs: the clock MONOTONIC_USEC= is read against.
[[nodiscard]] std::uint64_t monotonic_usec();

/// WatchdogSec= as systemd passes it: $WATCHDOG_USEC, when $WATCHDOG_PID is
/// unset or names this process. Nothing when there is no watchdog. Unsets both.
[[nodiscard]] std::optional<std::chrono::microseconds> watchdog_interval();
/// The rule above on the variables' values (null: unset), for tests.
[[nodiscard]] std::optional<std::chrono::microseconds> parse_watchdog(const char* usec, const char* pid, pid_t self);

/// A socket systemd passed to moltd (socket activation).
struct ListenFd {
  int fd = -1;       ///< 3, 4, ...; close-on-exec; owned by whoever takes it
  std::string name;  ///< the socket unit's FileDescriptorName= ("unknown" without $LISTEN_FDNAMES)
};

/// The sockets systemd passed: $LISTEN_FDS of them from fd 3 on, named by
/// $LISTEN_FDNAMES, when $LISTEN_PID is this process. Makes each close-on-exec
/// and unsets the three variables. None when they are unset or meant for
/// another process; an error when they do not parse (the fds are then left alone).
[[nodiscard]] Result<std::vector<ListenFd>> listen_fds();
/// The rule above on the variables' values (null: unset), without touching any fd, for tests.
[[nodiscard]] Result<std::vector<ListenFd>> parse_listen_fds(const char* pid, const char* fds, const char* names,
                                                             pid_t self);

/// When moltd's main loop sends WATCHDOG=1: every half interval, and only
/// once every part has answered the probe sent with the last ping. A probe
/// posts a no-op to a part's threads and returns a future that becomes ready
/// when one of them has run it; so an I/O loop that hangs stops the pings,
/// and systemd restarts moltd once WatchdogSec passes without one.
class Watchdog {
 public:
  using Clock = std::chrono::steady_clock;
  struct Part {
    std::string name;                          ///< for the log: "http", "streams"
    std::function<std::future<void>()> probe;  ///< posts the no-op
  };

  /// `ping` sends WATCHDOG=1 (Notifier::watchdog in moltd).
  Watchdog(std::chrono::microseconds interval, std::vector<Part> parts, std::function<void()> ping,
           std::shared_ptr<spdlog::logger> log);

  /// From the main loop, as often as it likes: pings when half the interval
  /// has passed since the last tick that did something and every part
  /// answered; probes them again. Returns when it next has something to do.
  Clock::time_point tick(Clock::time_point now);

 private:
  std::chrono::microseconds period_;  ///< half the interval
  std::vector<Part> parts_;
  std::vector<std::future<void>> answers_;  ///< one per part; invalid until first probed
  std::function<void()> ping_;
  std::shared_ptr<spdlog::logger> log_;
  Clock::time_point next_{};             ///< the tick before this does nothing
  std::optional<Clock::time_point> stuck_since_;  ///< a part has not answered since then (logged)
};

}  // namespace molt::host::systemd
