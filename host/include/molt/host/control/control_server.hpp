// The control socket: a Unix stream socket in the run directory, mode 0600,
// answering only peers with the daemon's own uid, or root (SO_PEERCRED).
//
// Wire format, one exchange per connection:
//   client -> server  one JSON object and '\n'; at most max_request_bytes
//   server -> client  when the request has "progress": true, zero or more
//                     {"progress":{...}} lines first (upgrades' phases);
//                     one JSON object and '\n'; if it has "attachment_bytes":
//                     N, exactly N raw bytes follow; then the server closes.
// Replies are written with json_text(): never an exception for a string.
//
// Limits, against clients that are slow, stuck or hostile (docs/operations.md,
// "Control socket limits"):
//   - the peer's credentials are checked first, at accept;
//   - a request must be complete, its '\n' received, within request_timeout
//     of the accept (a deadline for the whole request, not for each read),
//     and at most max_request_bytes long; otherwise an error reply, one log
//     line, and the connection is closed;
//   - connections still sending their request are read by the accept thread
//     itself, with poll(): a slow client costs a descriptor and its bytes so
//     far, never a thread; at most max_pending of them, and a connection past
//     that gets a "busy" reply at once;
//   - only complete requests get a thread, at most max_running at once; one
//     more gets a "busy" reply;
//   - at the descriptor limit (EMFILE, ENFILE) one descriptor kept in reserve
//     (an open /dev/null) is given up to accept a control connection, so an
//     operator can still ask; without it, accepting pauses for fd_backoff
//     rather than spin, logged once per 10 s.
// A request that is refused, and any exception while one runs, gets an error
// reply when the socket still takes one; the daemon carries on.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <list>
#include <mutex>
#include <string>
#include <thread>

#include "molt/host/common/bounded_call.hpp"
#include <vector>

#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"
#include "molt/host/control/control_handler.hpp"

namespace molt::host {

struct ControlServerOptions {
  std::filesystem::path socket_path;
  std::size_t max_request_bytes = 256 * 1024;        ///< room for an upgrade script (64 KiB) in JSON
  std::chrono::milliseconds request_timeout{10000};  ///< from the accept until the request's '\n'
  std::chrono::milliseconds write_timeout{10000};    ///< per write of a reply
  unsigned max_running = 16;                         ///< requests running at once; more are "busy"
  unsigned max_pending = 64;                         ///< connections still sending their request
  std::chrono::milliseconds fd_backoff{250};         ///< out of descriptors, no spare: accept again after this
};

class ControlServer {
 public:
  ControlServer(ControlServerOptions options, ControlHandler& handler, std::shared_ptr<spdlog::logger> log);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  /// Creates the socket (replacing a stale one) and starts accepting.
  [[nodiscard]] Result<void> start();
  /// Stops accepting, closes connections still sending, waits up to `wait`
  /// for requests in progress, removes the socket. False when a request was
  /// still running then (inside a module call): its thread is left running,
  /// so this server must then never be destroyed. `remove_socket` false: the
  /// path is left alone (a hot restart's successor has bound it anew).
  bool stop(std::chrono::milliseconds wait = std::chrono::seconds(1), bool remove_socket = true);

 private:
  using Clock = std::chrono::steady_clock;

  /// A connection whose request has not fully arrived. Accept thread only.
  struct Pending {
    int fd = -1;
    pid_t pid = 0;            ///< the peer's, for the log
    Clock::time_point deadline;  ///< accept + request_timeout
    std::string request;      ///< bytes so far, no '\n' among them
  };
  /// A thread running one complete request.
  struct Connection {
    DeadlineThread thread;
    std::atomic<bool> done{false};
  };
  /// At most one log line per interval for what a client can repeat at will.
  struct Throttle {
    Clock::time_point next{};
    unsigned skipped = 0;  ///< lines not written since the last one
    bool allow(Clock::time_point now);
  };

  void accept_loop();
  void accept_ready(Clock::time_point now);
  void admit(int fd, Clock::time_point now);
  /// Reads what `pending_[index]` sent; starts it or closes it when it is complete, too large or gone.
  void read_pending(std::size_t index);
  void expire_pending(Clock::time_point now);
  void close_pending(std::size_t index);
  /// Hands a complete request to a thread of its own (or refuses it: busy).
  void dispatch(int fd, pid_t pid, std::string request);
  /// On that thread: answers the request; never throws.
  void run(int fd, pid_t pid, const std::string& request) noexcept;
  /// Joins and forgets threads that have finished.
  void reap(bool all);
  void wake() noexcept;

  ControlServerOptions options_;
  ControlHandler& handler_;
  std::shared_ptr<spdlog::logger> log_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};  ///< written by stop() and by finished requests
  int spare_fd_ = -1;            ///< /dev/null, kept for accepting at EMFILE; -1 while given up
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;

  // Accept thread only:
  std::vector<Pending> pending_;
  Clock::time_point accept_paused_until_{};  ///< out of descriptors: listen_fd_ not polled until then
  Throttle spare_log_, fd_limit_log_, busy_log_;

  std::mutex connections_mutex_;
  std::list<Connection> connections_;  ///< a list: threads refer to their element
  std::atomic<unsigned> running_{0};
};

/// The client side, used by moltctl and the tests.
struct ControlResponse {
  nlohmann::json body;
  std::string attachment;
};

/// Sends one request to the socket at `path` and reads the reply. Progress
/// lines that come first (a request with "progress": true) go to
/// `on_progress`, their "progress" object each.
[[nodiscard]] Result<ControlResponse> control_call(
    const std::filesystem::path& path, const nlohmann::json& request,
    std::chrono::milliseconds timeout = std::chrono::minutes(5),
    const std::function<void(const nlohmann::json&)>& on_progress = {});

}  // namespace molt::host
