#include "molt/host/control/control_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <algorithm>
#include <system_error>
#include <utility>

#include "molt/host/common/json_text.hpp"
#include "molt/host/common/threads.hpp"

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

/// Sends what the socket takes now, without waiting: for refusals from the
/// accept thread, which must never block on a client.
void send_now(int fd, std::string_view bytes) noexcept {
  (void)!::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

std::string reply_line(const std::string& error) { return json_text(error_reply(error)) + '\n'; }

int open_spare() noexcept { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }

/// Milliseconds from `now` until `then`, rounded up, for poll().
int ms_until(std::chrono::steady_clock::time_point now, std::chrono::steady_clock::time_point then) {
  if (then <= now) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(then - now).count();
  return static_cast<int>(std::min<long long>(ms, 60'000));
}

}  // namespace

bool ControlServer::Throttle::allow(Clock::time_point now) {
  if (now < next) {
    ++skipped;
    return false;
  }
  next = now + std::chrono::seconds(10);
  return true;
}

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

  // Non-blocking: the accept thread accepts until EAGAIN and must never wait in accept().
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (listen_fd_ < 0) return control_error(path, "socket: " + errno_text(errno));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    return control_error(path, "bind: " + errno_text(errno));
  // The run directory is 0700 already; 0600 keeps the socket private even if
  // someone loosens the directory.
  if (::chmod(path.c_str(), 0600) != 0) return control_error(path, "chmod: " + errno_text(errno));
  if (::listen(listen_fd_, 64) != 0) return control_error(path, "listen: " + errno_text(errno));
  if (::pipe2(wake_pipe_, O_CLOEXEC | O_NONBLOCK) != 0) return control_error(path, "pipe: " + errno_text(errno));
  spare_fd_ = open_spare();
  if (spare_fd_ < 0) return control_error(path, "cannot open /dev/null (the spare descriptor): " + errno_text(errno));
  stopping_ = false;
  acceptor_ = std::thread([this] {
    name_this_thread("molt-ctl-accept");
    accept_loop();
  });
  return {};
}

bool ControlServer::stop(std::chrono::milliseconds wait, bool remove_socket) {
  if (acceptor_.joinable()) {
    stopping_ = true;
    wake();
    acceptor_.join();
  }
  for (const auto& pending : pending_) ::close(pending.fd);
  pending_.clear();
  bool all = true;
  {
    const auto deadline = Clock::now() + wait;
    std::lock_guard lock(connections_mutex_);
    for (auto it = connections_.begin(); it != connections_.end();) {
      if (it->thread.join_until(deadline)) {
        it = connections_.erase(it);
      } else {
        all = false;  // its thread still refers to its element: it stays
        ++it;
      }
    }
  }
  if (!all) log_->warn("control socket: a request is still running (inside a module call); not waiting for it");
  for (int* fd : {&listen_fd_, &wake_pipe_[0], &wake_pipe_[1], &spare_fd_}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
  std::error_code ec;
  if (remove_socket && !options_.socket_path.empty()) std::filesystem::remove(options_.socket_path, ec);
  return all;
}

void ControlServer::wake() noexcept {
  const char byte = 0;
  (void)!::write(wake_pipe_[1], &byte, 1);  // non-blocking: a full pipe wakes the loop already
}

// One thread reads every request still arriving, so that a client sending a
// byte at a time holds a descriptor and its bytes, never a thread; requests
// that are complete run on threads of their own. The loop wakes for the wake
// pipe (stop, a request finished), a new connection, bytes from a pending
// one, or the nearest deadline.
void ControlServer::accept_loop() {
  std::vector<pollfd> fds;
  while (true) {
    try {
      const auto now = Clock::now();
      expire_pending(now);
      // Given up at EMFILE: taken back as soon as a descriptor is free again.
      if (spare_fd_ < 0) spare_fd_ = open_spare();
      const bool accepting = now >= accept_paused_until_;

      int timeout = accepting ? -1 : ms_until(now, accept_paused_until_);
      fds.clear();
      fds.push_back({wake_pipe_[0], POLLIN, 0});
      fds.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});  // poll() skips a negative fd
      for (const auto& pending : pending_) {
        fds.push_back({pending.fd, POLLIN, 0});
        const int left = ms_until(now, pending.deadline);
        timeout = timeout < 0 ? left : std::min(timeout, left);
      }
      if (::poll(fds.data(), fds.size(), timeout) < 0) {
        if (errno == EINTR) continue;
        log_->error("control socket: poll: {}", errno_text(errno));
        ::poll(nullptr, 0, 100);  // ENOMEM: try again, slowly
        continue;
      }
      if (fds[0].revents != 0) {
        char drained[64];
        while (::read(wake_pipe_[0], drained, sizeof drained) > 0) {
        }
        if (stopping_) return;
        reap(/*all=*/false);
      }
      // Backwards: read_pending() may remove the entry it reads, and only
      // entries after it (already seen) move.
      for (std::size_t i = std::min(pending_.size(), fds.size() - 2); i-- > 0;)
        if (fds[i + 2].revents != 0) read_pending(i);
      if (fds[1].revents != 0) accept_ready(Clock::now());
    } catch (const std::exception& e) {
      // Out of memory, most likely: the control socket must outlive it.
      log_->error("control socket: {}; carrying on", e.what());
      ::poll(nullptr, 0, 100);
    } catch (...) {
      log_->error("control socket: an unknown exception; carrying on");
      ::poll(nullptr, 0, 100);
    }
  }
}

void ControlServer::accept_ready(Clock::time_point now) {
  // A bounded batch, so that a flood of connections cannot starve the requests already arriving.
  for (unsigned n = 0; n < 64; ++n) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      if (err == EINTR || err == ECONNABORTED) continue;
      if ((err == EMFILE || err == ENFILE) && spare_fd_ >= 0) {
        // Out of descriptors: the spare is this connection's, so that an
        // operator can still ask what is going on. It comes back (above)
        // once a descriptor is free.
        ::close(spare_fd_);
        spare_fd_ = -1;
        fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        spare_fd_ = open_spare();
        if (fd >= 0 && spare_log_.allow(now))
          log_->warn("control socket: out of file descriptors ({}): accepted a control connection with the spare one",
                     errno_text(err));
      }
      if (fd < 0) {
        // The listen socket stays readable: without a pause, poll() would spin on it.
        accept_paused_until_ = now + options_.fd_backoff;
        if (fd_limit_log_.allow(now))
          log_->error("control socket: accept: {}; accepting again every {} ms ({} more like this)", errno_text(err),
                      options_.fd_backoff.count(), std::exchange(fd_limit_log_.skipped, 0));
        return;
      }
    }
    admit(fd, now);
  }
}

void ControlServer::admit(int fd, Clock::time_point now) {
  ucred peer{};
  socklen_t length = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    log_->warn("control socket: cannot read peer credentials: {}", errno_text(errno));
    ::close(fd);
    return;
  }
  if (peer.uid != ::geteuid() && peer.uid != 0) {
    log_->warn("control socket: refused a connection from uid {} (pid {}): only uid {} and root may control moltd",
               peer.uid, peer.pid, ::geteuid());
    send_now(fd, reply_line("permission denied: uid " + std::to_string(peer.uid) + " may not control this moltd"));
    ::close(fd);
    return;
  }
  if (pending_.size() >= options_.max_pending) {
    if (busy_log_.allow(now))
      log_->warn("control socket: busy: {} connections still sending their request; refused pid {} ({} more like "
                 "this)", pending_.size(), peer.pid, std::exchange(busy_log_.skipped, 0));
    send_now(fd, reply_line("busy: " + std::to_string(options_.max_pending) +
                            " control connections still sending their request"));
    ::close(fd);
    return;
  }
  pending_.push_back(Pending{fd, peer.pid, now + options_.request_timeout, {}});
  read_pending(pending_.size() - 1);  // moltctl sends at once: often the request is there already
}

void ControlServer::read_pending(std::size_t index) {
  Pending& pending = pending_[index];
  char buffer[16384];
  // At most 256 KiB a turn, so that one fast client cannot hold the loop.
  for (int reads = 0; reads < 16; ++reads) {
    const ssize_t n = ::recv(pending.fd, buffer, sizeof buffer, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {  // gone before its request was complete: nothing to answer
      close_pending(index);
      return;
    }
    const std::size_t scanned = pending.request.size();
    pending.request.append(buffer, static_cast<std::size_t>(n));
    const auto newline = pending.request.find('\n', scanned);
    const std::size_t line_bytes = newline == std::string::npos ? pending.request.size() : newline;
    if (line_bytes > options_.max_request_bytes) {
      log_->warn("control socket: refused a request larger than {} bytes (pid {})", options_.max_request_bytes,
                 pending.pid);
      send_now(pending.fd, reply_line("request larger than " + std::to_string(options_.max_request_bytes) + " bytes"));
      close_pending(index);
      return;
    }
    if (newline != std::string::npos) {
      pending.request.resize(newline);  // bytes after the '\n' are ignored: one request per connection
      const int fd = pending.fd;
      const pid_t pid = pending.pid;
      std::string request = std::move(pending.request);
      pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(index));
      dispatch(fd, pid, std::move(request));
      return;
    }
  }
}

void ControlServer::expire_pending(Clock::time_point now) {
  for (std::size_t i = pending_.size(); i-- > 0;) {
    const Pending& pending = pending_[i];
    if (pending.deadline > now) continue;
    log_->warn("control socket: closed a connection (pid {}) that sent {} bytes but no complete request in {} ms",
               pending.pid, pending.request.size(), options_.request_timeout.count());
    send_now(pending.fd,
             reply_line("request not complete within " + std::to_string(options_.request_timeout.count()) + " ms"));
    close_pending(i);
  }
}

void ControlServer::close_pending(std::size_t index) {
  ::close(pending_[index].fd);
  pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(index));
}

void ControlServer::dispatch(int fd, pid_t pid, std::string request) {
  if (running_.load() >= options_.max_running) {
    if (busy_log_.allow(Clock::now()))
      log_->warn("control socket: busy: {} requests running; refused one from pid {} ({} more like this)",
                 options_.max_running, pid, std::exchange(busy_log_.skipped, 0));
    send_now(fd, reply_line("busy: " + std::to_string(options_.max_running) + " control requests in progress"));
    ::close(fd);
    return;
  }
  reap(/*all=*/false);
  std::lock_guard lock(connections_mutex_);
  bool listed = false;
  try {
    Connection& connection = connections_.emplace_back();
    listed = true;
    ++running_;
    connection.thread = DeadlineThread([this, fd, pid, request = std::move(request), &connection] {
      name_this_thread("molt-control");
      run(fd, pid, request);
      ::close(fd);
      --running_;
      connection.done = true;
      wake();  // so that the accept thread joins it, and takes the spare back if it was this one's
    });
  } catch (const std::exception& e) {  // no thread to be had (std::system_error), or no memory
    if (listed) {
      connections_.pop_back();
      --running_;
    }
    log_->error("control socket: cannot start a thread for a request from pid {}: {}", pid, e.what());
    send_now(fd, "{\"error\":\"cannot start a thread for the request\",\"ok\":false}\n");
    ::close(fd);
  }
}

void ControlServer::reap(bool all) {
  std::lock_guard lock(connections_mutex_);
  for (auto it = connections_.begin(); it != connections_.end();) {
    if (all || it->done) {
      (void)it->thread.join_until(Clock::now() + std::chrono::seconds(1));  // done: returns at once
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void ControlServer::run(int fd, pid_t pid, const std::string& request) noexcept {
  bool replying = false;  // once the reply has started, another line would garble it
  try {
    // Blocking from here, each write bounded by write_timeout: the reply
    // (a snapshot's archive) may be larger than the socket's buffer.
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    timeval tv{static_cast<time_t>(options_.write_timeout.count() / 1000),
               static_cast<suseconds_t>((options_.write_timeout.count() % 1000) * 1000)};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    // Progress lines go out as they come, never waiting for a slow client:
    // the upgrade reporting them may be in its pause. One that does not fit
    // into the socket buffer is dropped (the next one tells the same story).
    ControlReply reply = handler_.handle(request, [fd](const nlohmann::json& update) {
      send_now(fd, json_text(update) + '\n');
    });
    const std::string error = reply.body.value("ok", false) ? std::string() : reply.body.value("error", std::string());
    if (!reply.exception.empty())
      log_->error("control socket: a request from pid {} threw, a bug in moltd: {}", pid, error);
    else if (!error.empty())
      log_->debug("control: {} -> {}", request, error);
    const std::string line = json_text(reply.body) + '\n';
    replying = true;
    send_all(fd, line) && send_all(fd, reply.attachment);
  } catch (const std::exception& e) {
    log_->error("control socket: a request from pid {} failed: {}", pid, e.what());
    try {
      if (!replying) send_now(fd, reply_line(std::string("internal error: ") + e.what()));
    } catch (...) {
    }
  } catch (...) {
    log_->error("control socket: a request from pid {} failed: an unknown exception", pid);
    if (!replying) send_now(fd, "{\"error\":\"internal error\",\"ok\":false}\n");
  }
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
  const bool sent = send_all(fd, json_text(request) + '\n');
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
