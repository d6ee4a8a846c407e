#include "molt/host/daemon/systemd.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace molt::host::systemd {
namespace {

/// `text` as a whole unsigned number, or nothing.
template <class T>
std::optional<T> number(std::string_view text) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

/// STATUS= is one line: a newline would start another assignment.
std::string one_line(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c == '\n' || c == '\r') c = ' ';
  return out;
}

Error activation_error(std::string reason) {
  return Error{{}, {}, {}, Phase::Start, "socket activation: " + std::move(reason)};
}

}  // namespace

// --- notifications ------------------------------------------------------------

Notifier Notifier::from_environment(std::shared_ptr<spdlog::logger> log) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  std::string address = socket != nullptr ? socket : "";
  ::unsetenv("NOTIFY_SOCKET");
  return Notifier(std::move(address), std::move(log));
}

Notifier::Notifier(std::string address, std::shared_ptr<spdlog::logger> log)
    : address_(std::move(address)), log_(std::move(log)) {
  if (address_.empty()) return;
  if ((address_[0] != '/' && address_[0] != '@') || address_.size() < 2 || address_.size() >= sizeof(sockaddr_un{}.sun_path)) {
    log_->warn("systemd: NOTIFY_SOCKET '{}' is neither a socket path nor an @abstract name that fits; not notifying",
               address_);
    return;
  }
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) log_->warn("systemd: cannot create the notification socket: {}; not notifying", std::strerror(errno));
}

Notifier::~Notifier() {
  if (fd_ >= 0) ::close(fd_);
}

bool Notifier::send(std::string_view message) {
  if (fd_ < 0) return false;
  sockaddr_un to{};
  to.sun_family = AF_UNIX;
  std::memcpy(to.sun_path, address_.data(), address_.size());  // fits: checked at construction
  if (to.sun_path[0] == '@') to.sun_path[0] = '\0';
  // An abstract name is exactly as long as given (no terminating NUL); a path is NUL-terminated.
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address_.size() +
                                             (address_[0] == '@' ? 0 : 1));
  // Never blocking: a systemd that does not read its socket (10 datagrams
  // queued) must not stop the thread that notifies, which is moltd's main
  // thread. A second of retries, then the message is dropped with a warning.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  ssize_t sent = -1;
  while (true) {
    sent = ::sendto(fd_, message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&to),
                    length);
    if (sent >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ||
        std::chrono::steady_clock::now() >= give_up)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (sent == static_cast<ssize_t>(message.size())) {
    if (failing_.exchange(false)) log_->info("systemd: notifications to {} go out again", address_);
    return true;
  }
  const int error = sent < 0 ? errno : EMSGSIZE;
  if (!failing_.exchange(true))
    log_->warn("systemd: notification to {} not sent: {} (systemd may restart moltd or time out its start)", address_,
               std::strerror(error));
  return false;
}

void Notifier::ready(std::string_view status) { send("READY=1\nSTATUS=" + one_line(status)); }

void Notifier::reloading(std::string_view status) {
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()) + "\nSTATUS=" + one_line(status));
}

void Notifier::stopping(std::string_view status) { send("STOPPING=1\nSTATUS=" + one_line(status)); }

void Notifier::status(std::string_view status) { send("STATUS=" + one_line(status)); }

void Notifier::watchdog() { send("WATCHDOG=1"); }

std::uint64_t monotonic_usec() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000u + static_cast<std::uint64_t>(now.tv_nsec) / 1000u;
}

// --- watchdog -------------------------------------------------------------------

std::optional<std::chrono::microseconds> parse_watchdog(const char* usec, const char* pid, pid_t self) {
  if (usec == nullptr) return std::nullopt;
  if (pid != nullptr && number<pid_t>(pid) != self) return std::nullopt;  // another process's watchdog
  const auto interval = number<std::uint64_t>(usec);
  if (!interval || *interval == 0) return std::nullopt;
  return std::chrono::microseconds(*interval);
}

std::optional<std::chrono::microseconds> watchdog_interval() {
  auto interval = parse_watchdog(std::getenv("WATCHDOG_USEC"), std::getenv("WATCHDOG_PID"), ::getpid());
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  return interval;
}

Watchdog::Watchdog(std::chrono::microseconds interval, std::vector<Part> parts, std::function<void()> ping,
                   std::shared_ptr<spdlog::logger> log)
    : period_(interval / 2), parts_(std::move(parts)), answers_(parts_.size()), ping_(std::move(ping)),
      log_(std::move(log)) {}

Watchdog::Clock::time_point Watchdog::tick(Clock::time_point now) {
  if (now < next_) return next_;
  next_ = now + period_;
  std::string silent;  // the parts that have not answered yet
  for (std::size_t i = 0; i < parts_.size(); ++i)
    if (answers_[i].valid() && answers_[i].wait_for(std::chrono::seconds(0)) != std::future_status::ready)
      silent += (silent.empty() ? "" : ", ") + parts_[i].name;
  if (!silent.empty()) {
    // No new probe: the question stays the one this part has not answered.
    if (!stuck_since_) {
      stuck_since_ = now;
      log_->warn("watchdog: {} has not run a no-op posted {} ms ago; not telling systemd we are alive (it restarts "
                 "moltd if this lasts WatchdogSec)",
                 silent, std::chrono::duration_cast<std::chrono::milliseconds>(period_).count());
    }
    return next_;
  }
  if (stuck_since_) {
    log_->info("watchdog: every part answers again, after {} ms",
               std::chrono::duration_cast<std::chrono::milliseconds>(now - *stuck_since_).count());
    stuck_since_.reset();
  }
  ping_();
  for (std::size_t i = 0; i < parts_.size(); ++i) answers_[i] = parts_[i].probe();
  return next_;
}

// --- socket activation ------------------------------------------------------------

Result<std::vector<ListenFd>> parse_listen_fds(const char* pid, const char* fds, const char* names, pid_t self) {
  if (pid == nullptr || fds == nullptr) return std::vector<ListenFd>{};
  const auto for_pid = number<pid_t>(pid);
  if (!for_pid) return activation_error(std::string("LISTEN_PID='") + pid + "' is not a process id");
  if (*for_pid != self) return std::vector<ListenFd>{};  // inherited from a parent that was activated
  const auto count = number<unsigned>(fds);
  if (!count || *count > 1024) return activation_error(std::string("LISTEN_FDS='") + fds + "' is not a number of sockets");
  std::vector<std::string> split;
  if (names != nullptr) {
    std::string_view rest(names);
    while (true) {
      const auto colon = rest.find(':');
      split.emplace_back(rest.substr(0, colon));
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
    if (split.size() != *count)
      return activation_error(std::string("LISTEN_FDNAMES='") + names + "' names " + std::to_string(split.size()) +
                              " socket(s), LISTEN_FDS says " + std::to_string(*count));
  }
  std::vector<ListenFd> out;
  for (unsigned i = 0; i < *count; ++i)
    out.push_back(ListenFd{static_cast<int>(3 + i), names != nullptr ? split[i] : "unknown"});
  return out;
}

Result<std::vector<ListenFd>> listen_fds() {
  auto parsed = parse_listen_fds(std::getenv("LISTEN_PID"), std::getenv("LISTEN_FDS"), std::getenv("LISTEN_FDNAMES"),
                                 ::getpid());
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  if (!parsed) return parsed;
  for (const auto& listen : parsed.value()) {
    const int flags = ::fcntl(listen.fd, F_GETFD);
    if (flags < 0 || ::fcntl(listen.fd, F_SETFD, flags | FD_CLOEXEC) < 0)
      return activation_error("fd " + std::to_string(listen.fd) + " ('" + listen.name + "'): " + std::strerror(errno));
  }
  return parsed;
}

}  // namespace molt::host::systemd
