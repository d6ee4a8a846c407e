#include "molt/host/control/control_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

namespace molt::host {
namespace {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

Error control_error(const std::filesystem::path& socket, std::string reason) {
  return Error{{}, {}, socket.string(), Phase::Control, std::move(reason)};
}

void set_timeouts(int fd, std::chrono::milliseconds timeout) {
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

bool send_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

enum class LineStatus { Complete, TooLarge, Closed, Failed };

/// Reads up to and excluding '\n' into `line`; `rest` gets bytes after it.
LineStatus read_line(int fd, std::size_t max_bytes, std::string& line, std::string& rest) {
  char buffer[4096];
  while (true) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return LineStatus::Failed;
    if (n == 0) return LineStatus::Closed;
    const std::string_view chunk(buffer, static_cast<std::size_t>(n));
    const auto newline = chunk.find('\n');
    line.append(chunk.substr(0, newline));
    if (line.size() > max_bytes) return LineStatus::TooLarge;
    if (newline != std::string_view::npos) {
      rest.assign(chunk.substr(newline + 1));
      return LineStatus::Complete;
    }
  }
}

}  // namespace

ControlServer::ControlServer(ControlServerOptions options, ControlHandler& handler, std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)), handler_(handler), log_(std::move(log)) {}

ControlServer::~ControlServer() { stop(); }

Result<void> ControlServer::start() {
  const auto& path = options_.socket_path;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.string().size() >= sizeof address.sun_path)
    return control_error(path, "socket path longer than " + std::to_string(sizeof address.sun_path - 1) + " bytes");
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);

  // A socket file left by a daemon that died: the run directory lock (held
  // by the caller) guarantees no live daemon listens on it.
  std::error_code ec;
  if (std::filesystem::is_socket(path, ec)) std::filesystem::remove(path, ec);

  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return control_error(path, "socket: " + errno_text(errno));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    return control_error(path, "bind: " + errno_text(errno));
  // The run directory is 0700 already; 0600 keeps the socket private even if
  // someone loosens the directory.
  if (::chmod(path.c_str(), 0600) != 0) return control_error(path, "chmod: " + errno_text(errno));
  if (::listen(listen_fd_, 64) != 0) return control_error(path, "listen: " + errno_text(errno));
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0) return control_error(path, "pipe: " + errno_text(errno));
  acceptor_ = std::thread([this] { accept_loop(); });
  return {};
}

void ControlServer::stop() {
  if (acceptor_.joinable()) {
    const char byte = 0;
    (void)!::write(wake_pipe_[1], &byte, 1);
    acceptor_.join();
  }
  reap(/*all=*/true);
  for (int* fd : {&listen_fd_, &wake_pipe_[0], &wake_pipe_[1]}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  std::error_code ec;
  if (!options_.socket_path.empty()) std::filesystem::remove(options_.socket_path, ec);
}

void ControlServer::accept_loop() {
  while (true) {
    pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_pipe_[0], POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      log_->error("control socket: poll: {}", errno_text(errno));
      return;
    }
    if (fds[1].revents != 0) return;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    set_timeouts(fd, options_.io_timeout);
    if (active_.load() >= options_.max_connections) {
      send_all(fd, error_reply("busy: " + std::to_string(options_.max_connections) + " control requests in progress")
                           .dump() + '\n');
      ::close(fd);
      continue;
    }
    ++active_;
    reap(/*all=*/false);
    std::lock_guard lock(connections_mutex_);
    Connection& connection = connections_.emplace_back();
    connection.thread = std::thread([this, fd, &connection] {
      serve(fd);
      ::close(fd);
      --active_;
      connection.done = true;
    });
  }
}

void ControlServer::reap(bool all) {
  std::lock_guard lock(connections_mutex_);
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (all || it->done) {
      it->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void ControlServer::serve(int fd) {
  ucred peer{};
  socklen_t length = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    log_->warn("control socket: cannot read peer credentials: {}", errno_text(errno));
    return;
  }
  if (peer.uid != ::geteuid() && peer.uid != 0) {
    log_->warn("control socket: refused a connection from uid {} (pid {}): only uid {} and root may control moltd",
               peer.uid, peer.pid, ::geteuid());
    send_all(fd, error_reply("permission denied: uid " + std::to_string(peer.uid) + " may not control this moltd")
                         .dump() + '\n');
    return;
  }
  std::string line, rest;
  switch (read_line(fd, options_.max_request_bytes, line, rest)) {
    case LineStatus::Complete: break;
    case LineStatus::TooLarge:
      log_->warn("control socket: refused a request larger than {} bytes (pid {})", options_.max_request_bytes, peer.pid);
      send_all(fd, error_reply("request larger than " + std::to_string(options_.max_request_bytes) + " bytes").dump() + '\n');
      return;
    case LineStatus::Closed:
    case LineStatus::Failed: return;  // the client went away or timed out: nothing to answer
  }
  // Progress lines go out as they come, never waiting for a slow client:
  // the upgrade reporting them may be in its pause. One that does not fit
  // into the socket buffer is dropped (the next one tells the same story).
  ControlReply reply = handler_.handle(line, [fd](const nlohmann::json& update) {
    const std::string text = update.dump() + '\n';
    (void)!::send(fd, text.data(), text.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  });
  if (reply.body.value("ok", false) == false) log_->debug("control: {} -> {}", line, reply.body.value("error", ""));
  send_all(fd, reply.body.dump() + '\n') && send_all(fd, reply.attachment);
}

Result<ControlResponse> control_call(const std::filesystem::path& path, const nlohmann::json& request,
                                     std::chrono::milliseconds timeout,
                                     const std::function<void(const nlohmann::json&)>& on_progress) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.string().size() >= sizeof address.sun_path) return control_error(path, "socket path too long");
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return control_error(path, "socket: " + errno_text(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const int err = errno;
    return control_error(path, "cannot connect: " + errno_text(err) +
                                   (err == ENOENT || err == ECONNREFUSED ? " (is moltd running? see --socket)" : ""));
  }
  set_timeouts(fd, timeout);
  // moltd may answer and close before reading the request (it refuses a
  // peer by its credentials at once), so a failed send still reads the reply.
  const bool sent = send_all(fd, request.dump() + '\n');
  const int send_errno = errno;

  // Progress lines (only if asked for), then the reply line, then its attachment.
  std::string line, attachment;
  ControlResponse response;
  while (true) {
    line.clear();
    if (const auto newline = attachment.find('\n'); newline != std::string::npos) {
      line = attachment.substr(0, newline);  // a line already received with the previous one
      attachment.erase(0, newline + 1);
    } else {
      line = std::move(attachment);  // the start of a line, received with the previous one
      attachment.clear();
      const LineStatus status = read_line(fd, 256u << 20, line, attachment);
      const int read_errno = errno;
      if (status == LineStatus::TooLarge) return control_error(path, "reply too large");
      if (status != LineStatus::Complete) {
        if (!sent) return control_error(path, "cannot send: " + errno_text(send_errno));
        if (status == LineStatus::Closed) return control_error(path, "moltd closed the connection without a reply");
        return control_error(path, "no reply: " + errno_text(read_errno));
      }
    }
    response.body = nlohmann::json::parse(line, nullptr, false);
    if (response.body.is_discarded()) return control_error(path, "malformed reply");
    if (!response.body.is_object() || !response.body.contains("progress")) break;
    if (on_progress) on_progress(response.body["progress"]);
  }
  const std::uint64_t expected = response.body.value("attachment_bytes", std::uint64_t{0});
  char buffer[65536];
  while (attachment.size() < expected) {
    const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return control_error(path, "reply cut short");
    attachment.append(buffer, static_cast<std::size_t>(n));
  }
  if (attachment.size() != expected) return control_error(path, "reply longer than announced");
  response.attachment = std::move(attachment);
  return response;
}

}  // namespace molt::host
