// The control socket: a Unix stream socket in the run directory, mode 0600,
// answering only peers with the daemon's own uid, or root (SO_PEERCRED).
//
// Wire format, one exchange per connection:
//   client -> server  one JSON object and '\n'; at most max_request_bytes
//   server -> client  when the request has "progress": true, zero or more
//                     {"progress":{...}} lines first (upgrades' phases);
//                     one JSON object and '\n'; if it has "attachment_bytes":
//                     N, exactly N raw bytes follow; then the server closes.
// A request that is too large, malformed, or from another user gets an error
// reply and the connection is closed; the daemon carries on.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <list>
#include <mutex>
#include <thread>

#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"
#include "molt/host/control/control_handler.hpp"

namespace molt::host {

struct ControlServerOptions {
  std::filesystem::path socket_path;
  std::size_t max_request_bytes = 256 * 1024;  ///< room for an upgrade script (64 KiB) in JSON
  std::chrono::milliseconds io_timeout{10000};  ///< per read or write on a connection
  unsigned max_connections = 16;                ///< more at once are refused
};

class ControlServer {
 public:
  ControlServer(ControlServerOptions options, ControlHandler& handler, std::shared_ptr<spdlog::logger> log);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  /// Creates the socket (replacing a stale one) and starts accepting.
  [[nodiscard]] Result<void> start();
  /// Stops accepting, waits for connections in progress, removes the socket.
  void stop();

 private:
  void accept_loop();
  void serve(int fd);

  ControlServerOptions options_;
  ControlHandler& handler_;
  std::shared_ptr<spdlog::logger> log_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};  ///< written by stop() to end the accept loop
  std::thread acceptor_;
  struct Connection {
    std::thread thread;
    std::atomic<bool> done{false};
  };
  /// Joins and forgets connections that have finished.
  void reap(bool all);

  std::mutex connections_mutex_;
  std::list<Connection> connections_;  ///< a list: threads refer to their element
  std::atomic<unsigned> active_{0};
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
