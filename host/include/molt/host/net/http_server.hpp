// The HTTP/1.1 listener (Boost.Beast over Asio): keep-alive, bounded request
// sizes, a bounded number of connections (503 past it), a small thread pool,
// and a graceful stop that finishes every request it has started to read.
#pragma once

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"
#include "molt/host/config/host_config.hpp"
#include "molt/message.hpp"

namespace molt::host {

struct HttpOptions {
  Endpoint listen{"127.0.0.1", 8080};
  unsigned threads = 4;
  std::uint64_t max_body_bytes = 1 << 20;      ///< larger bodies get 413
  std::uint32_t max_header_bytes = 16 * 1024;  ///< larger headers get 431... reported as 413
  std::chrono::seconds idle_timeout{60};       ///< a keep-alive connection with no request is closed
  /// Connections open at once; the next one gets 503 with a JSON error and
  /// Connection: close (host.maxclients).
  std::uint32_t max_clients = 10000;
  /// A listening TCP socket to serve instead of binding `listen` (one
  /// systemd passed: socket activation); the server owns it. -1: bind.
  int listen_fd = -1;
};

/// What the server sends for one request: the host's or a module's
/// response, and the headers only the host sets.
struct HttpReply {
  HttpReply(api::Response r) : response(std::move(r)) {}  // NOLINT: a plain response is a reply
  api::Response response;
  std::string location;  ///< a Location header (a redirect's), when not empty
};

class HttpServer {
 public:
  using Handler = std::function<HttpReply(const api::Request&)>;

  HttpServer(HttpOptions options, Handler handler, std::shared_ptr<spdlog::logger> log);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  /// Binds and listens (or takes options.listen_fd); connections wait in the
  /// backlog until serve().
  [[nodiscard]] Result<void> listen();
  /// The address actually bound (the port is chosen when 0 was asked).
  [[nodiscard]] Endpoint local_endpoint() const;
  /// Starts accepting, on `threads` threads.
  void serve();
  /// Stops accepting; closes idle connections; lets requests in progress
  /// finish (their responses say Connection: close), waiting up to `grace`;
  /// then closes what is left and joins the threads. False when a thread
  /// was still inside a module call a second later: it is left running
  /// (detached), so this server must then never be destroyed.
  bool stop(std::chrono::milliseconds grace);
  // Hot restart (handover/hot_restart.hpp). Requests in progress finish here;
  // connections waiting for their next request move.

  /// Stops accepting (new connections wait in the backlog), lets the
  /// requests in progress be answered until `deadline`, and returns the
  /// listening socket and every connection then waiting for a request, with
  /// the bytes of the next one already received. `busy`: how many were
  /// still answering a request at the deadline (they stay here). Nothing is
  /// closed: thaw() resumes as before. After serve().
  struct Frozen {
    int listen_fd = -1;  ///< the server's own
    std::vector<std::pair<int, std::string>> connections;  ///< fd (the server's own), input received
    std::size_t busy = 0;
  };
  [[nodiscard]] Frozen freeze(std::chrono::steady_clock::time_point deadline);
  /// Undoes freeze(): accepts and reads again.
  void thaw();
  /// On a successor, after serve(): serves a connection a predecessor froze;
  /// `input` is the start of its next request. Takes `fd` (closed on error).
  [[nodiscard]] Result<void> adopt_connection(int fd, std::string_view input);

  /// Connections open now.
  [[nodiscard]] std::size_t connections() const;
  /// Connections turned away (503) past maxclients since start.
  [[nodiscard]] std::uint64_t refused() const;
  /// On a successor: adds a predecessor's refused() (counters go on).
  void carry_over_refused(std::uint64_t refused);
  /// Posts a no-op to the I/O threads; the future is ready once one of them
  /// has run it (the watchdog's proof that they are not all stuck).
  [[nodiscard]] std::future<void> probe();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace molt::host
