// Threads: one worker per I/O thread, each with its own io_context and its
// own connections. Every listener has one listening socket, on worker 0 (an
// exclusive bind: a second moltd on the same port fails to start instead of
// sharing it). Worker 0 accepts, releases the descriptor and posts it to the
// worker whose turn it is, which adopts it on its own thread. So a socket is
// registered, used and closed on one thread only, and the reactors run
// without locks (BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO); other threads reach
// a worker only through post(), which keeps the scheduler's own lock: one
// cross-thread post per connection, none per request.
#include "molt/host/net/stream_server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <functional>
#include <future>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_set>

#include <boost/asio.hpp>

#include "molt/host/net/listen_socket.hpp"

namespace molt::host {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

class StreamServer::Impl {
 public:
  class Connection;
  struct Worker;

  struct Listener {
    std::shared_ptr<ModuleSlot> slot;  ///< reset on worker 0 when the module is removed
    Endpoint endpoint;                 ///< as bound
    std::string module;
    std::atomic<std::size_t> open{0};
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<bool> closed{false};
  };

  /// One I/O thread and everything that lives on it.
  struct Worker {
    explicit Worker(Impl& owner) : server(owner), io(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO), guard(asio::make_work_guard(io)) {}
    Impl& server;
    // Declared before `io`, so it outlives it: destroying `io` destroys
    // pending handlers, whose connections erase themselves from here.
    std::unordered_set<Connection*> connections;  ///< touched on this worker's thread only
    asio::io_context io;
    asio::executor_work_guard<asio::io_context::executor_type> guard;
    std::vector<std::pair<Listener*, std::unique_ptr<tcp::acceptor>>> acceptors;  ///< worker 0 only; before `io`
    std::thread thread;

    void accept(Listener& listener, tcp::acceptor& acceptor);
    /// On this worker's thread: wraps an accepted descriptor and starts it.
    void adopt(Listener& listener, std::shared_ptr<ModuleSlot> slot, tcp::socket::native_handle_type fd, tcp protocol);
    /// On this worker's thread: closes `module`'s acceptors (worker 0) and connections.
    void close_module(const std::string& module);
    void close_idle();  ///< on this thread: stop accepting, close connections with nothing in progress
    void close_all();   ///< on this thread
  };

  /// A listening socket handed over at start (StreamServer::adopt), kept
  /// open for the server's life: each listener that serves it gets a dup.
  struct Adopted {
    int fd = -1;
    tcp protocol = tcp::v4();
    Endpoint endpoint;
    bool claimed = false;  ///< a module has served it
  };

  Impl(StreamOptions options, std::shared_ptr<spdlog::logger> log) : options_(options), log_(std::move(log)) {
    for (unsigned i = 0; i < std::max(1u, options_.threads); ++i) workers_.push_back(std::make_unique<Worker>(*this));
  }

  ~Impl() {
    for (const auto& [module, sockets] : adopted_)
      for (const auto& socket : sockets) ::close(socket.fd);
  }

  /// Adds a listener for `slot`'s module, on worker 0, whose acceptor `open`
  /// opens (bound or adopted). `endpoint`: what was asked, until it is open.
  Result<Endpoint> add_listener(const std::shared_ptr<ModuleSlot>& slot, const Endpoint& endpoint,
                                const std::function<Result<void>(tcp::acceptor&)>& open);

  void connection_closed() {
    {
      std::lock_guard lock(open_mutex_);
      --open_;
    }
    open_changed_.notify_all();
  }

  Worker& next_worker() { return *workers_[next_worker_++ % workers_.size()]; }

  StreamOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::atomic<bool> stopping_{false};
  std::size_t next_worker_ = 0;  ///< touched by worker 0's thread only
  std::mutex open_mutex_;
  std::condition_variable open_changed_;
  std::size_t open_ = 0;  ///< connections alive, all workers (guarded by open_mutex_)
  mutable std::mutex listeners_mutex_;
  std::vector<std::unique_ptr<Listener>> listeners_;  ///< never erased: connections refer to them
  mutable std::mutex adopted_mutex_;
  std::map<std::string, std::vector<Adopted>, std::less<>> adopted_;  ///< by module (guarded by adopted_mutex_)
  std::vector<std::unique_ptr<Worker>> workers_;  // last: destroyed first, with the sockets they own
  std::atomic<bool> serving_{false};
  static inline std::atomic<api::ConnectionId> next_id_{1};
};

/// One client connection: read what arrives, hand the module everything it
/// has not consumed, send what it wrote, repeat. Lives on one worker.
class StreamServer::Impl::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Worker& worker, Listener& listener, std::shared_ptr<ModuleSlot> slot, tcp::socket socket)
      : worker_(worker), listener_(listener), slot_(std::move(slot)), socket_(std::move(socket)), id_(next_id_++) {
    buffer_.resize(kChunk);
    output_.reserve(kChunk);
  }

  ~Connection() {
    --listener_.open;
    worker_.connections.erase(this);
    worker_.server.connection_closed();
  }

  void start() {
    ++listener_.open;
    {
      std::lock_guard lock(worker_.server.open_mutex_);
      ++worker_.server.open_;
    }
    worker_.connections.insert(this);
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);  // small replies, sent at once
    if (auto connected = slot_->stream_connect(id_); !connected) {
      slot_->log().error("{}", connected.error().to_string());
      return close();
    }
    connected_ = true;
    read();
  }

  [[nodiscard]] const Listener& listener() const noexcept { return listener_; }

  /// At stop: close now unless bytes are being processed or sent.
  void close_if_idle() {
    if (reading_ && begin_ == end_) close();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    if (connected_) slot_->stream_disconnect(id_);
  }

 private:
  static constexpr std::size_t kChunk = 16 * 1024;

  /// StreamOutput over this connection's output buffer.
  struct Output final : api::StreamOutput {
    Connection& c;
    explicit Output(Connection& connection) : c(connection) {}
    void write(std::string_view bytes) override { c.output_.append(bytes); }
    void close_after_write() override { c.close_after_write_ = true; }
    bool has_room() const override { return true; }
  };

  void read() {
    if (worker_.server.stopping_ || close_after_write_) return close();
    // Room for the next chunk: move unconsumed bytes to the front, then grow.
    if (buffer_.size() - end_ < kChunk) {
      if (begin_ > 0) {
        std::memmove(buffer_.data(), buffer_.data() + begin_, end_ - begin_);
        end_ -= begin_;
        begin_ = 0;
      }
      if (buffer_.size() - end_ < kChunk) buffer_.resize(buffer_.size() * 2);
    }
    reading_ = true;
    socket_.async_read_some(asio::buffer(buffer_.data() + end_, buffer_.size() - end_),
                            [self = shared_from_this()](error_code ec, std::size_t n) {
                              self->reading_ = false;
                              self->on_read(ec, n);
                            });
  }

  void on_read(error_code ec, std::size_t n) {
    if (ec) return close();
    end_ += n;
    Output out(*this);
    auto consumed = slot_->stream_data(id_, std::string_view(buffer_.data() + begin_, end_ - begin_), out);
    if (!consumed) {
      slot_->log().error("{}; closing connection {}", consumed.error().to_string(), id_);
      close_after_write_ = true;
    } else {
      begin_ += consumed.value();
      if (begin_ == end_) begin_ = end_ = 0;
      if (end_ - begin_ > worker_.server.options_.max_input_bytes) {
        slot_->log().warn("connection {}: {} bytes buffered and not consumed, more than the limit of {}; closing",
                                   id_, end_ - begin_, worker_.server.options_.max_input_bytes);
        close_after_write_ = true;
      }
    }
    if (output_.empty()) return read();
    asio::async_write(socket_, asio::buffer(output_), [self = shared_from_this()](error_code write_ec, std::size_t) {
      self->output_.clear();  // keeps its capacity
      if (write_ec) return self->close();
      self->read();
    });
  }

  Worker& worker_;
  Listener& listener_;
  std::shared_ptr<ModuleSlot> slot_;  ///< this connection's own: keeps a removed module alive until it closes
  tcp::socket socket_;
  const api::ConnectionId id_;
  std::vector<char> buffer_;  ///< [begin_, end_) is read and not consumed yet
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::string output_;
  bool close_after_write_ = false;
  bool reading_ = false;
  bool connected_ = false;
  bool closed_ = false;
};

void StreamServer::Impl::Worker::accept(Listener& listener, tcp::acceptor& acceptor) {
  acceptor.async_accept(io, [this, &listener, &acceptor](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (!ec) {
      ++listener.accepted;
      Worker& owner = server.next_worker();
      if (&owner == this) {
        std::make_shared<Connection>(*this, listener, listener.slot, std::move(socket))->start();
      } else {
        const tcp protocol = socket.local_endpoint(ec).protocol();
        error_code released;
        const auto fd = socket.release(released);  // deregistered here, on our thread
        if (!released)
          asio::post(owner.io, [&owner, &listener, slot = listener.slot, fd, protocol] {
            owner.adopt(listener, slot, fd, protocol);
          });
      }
    }
    if (!server.stopping_ && !listener.closed) accept(listener, acceptor);
  });
}

void StreamServer::Impl::Worker::adopt(Listener& listener, std::shared_ptr<ModuleSlot> slot,
                                       tcp::socket::native_handle_type fd, tcp protocol) {
  tcp::socket socket(io);
  error_code ec;
  socket.assign(protocol, fd, ec);  // registered with this worker's reactor, on its thread
  if (ec) {
    ::close(fd);
    return;
  }
  if (server.stopping_ || listener.closed) return;  // closed by ~socket
  std::make_shared<Connection>(*this, listener, std::move(slot), std::move(socket))->start();
}

void StreamServer::Impl::Worker::close_idle() {
  for (auto& [listener, acceptor] : acceptors) {
    error_code ignored;
    acceptor->close(ignored);
  }
  // close() may end a connection's last handler, which erases it: iterate a copy.
  const std::vector<Connection*> open(connections.begin(), connections.end());
  for (Connection* connection : open) connection->close_if_idle();
}

void StreamServer::Impl::Worker::close_module(const std::string& module) {
  for (auto& [listener, acceptor] : acceptors) {
    if (listener->module != module) continue;
    error_code ignored;
    acceptor->close(ignored);
    listener->slot.reset();  // no new connection can take it now
  }
  const std::vector<Connection*> open(connections.begin(), connections.end());
  for (Connection* connection : open)
    if (connection->listener().module == module) connection->close();
}

void StreamServer::Impl::Worker::close_all() {
  const std::vector<Connection*> open(connections.begin(), connections.end());
  for (Connection* connection : open) connection->close();
}

StreamServer::StreamServer(StreamOptions options, std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(options, std::move(log))) {}

StreamServer::~StreamServer() { stop(std::chrono::milliseconds(0)); }

Result<Endpoint> StreamServer::Impl::add_listener(const std::shared_ptr<ModuleSlot>& slot, const Endpoint& endpoint,
                                                  const std::function<Result<void>(tcp::acceptor&)>& open) {
  Worker& first = *workers_.front();
  auto listener = std::make_unique<Listener>(slot, endpoint, slot->name());
  Listener& bound_listener = *listener;
  // The acceptor belongs to worker 0; once that runs, only its thread may
  // touch its reactor, so the bind happens there.
  auto bind = [&]() -> Result<Endpoint> {
    auto acceptor = std::make_unique<tcp::acceptor>(first.io);
    if (auto opened = open(*acceptor); !opened) return opened.error();
    error_code ec;
    const auto bound = acceptor->local_endpoint(ec);
    bound_listener.endpoint = Endpoint{bound.address().to_string(), bound.port()};
    first.acceptors.emplace_back(&bound_listener, std::move(acceptor));
    if (serving_) first.accept(bound_listener, *first.acceptors.back().second);
    return bound_listener.endpoint;
  };
  Result<Endpoint> result = Error{};
  if (serving_) {
    std::promise<Result<Endpoint>> done;
    asio::post(first.io, [&] { done.set_value(bind()); });
    result = done.get_future().get();
  } else {
    result = bind();
  }
  if (result) {
    std::lock_guard lock(listeners_mutex_);
    listeners_.push_back(std::move(listener));
  }
  return result;
}

Result<Endpoint> StreamServer::listen(const Endpoint& endpoint, std::shared_ptr<ModuleSlot> slot) {
  auto fail = [&](const std::string& what, const error_code& ec) {
    return Error{slot->name(), {}, endpoint.to_string(), Phase::Start, "listen: " + what + ": " + ec.message()};
  };
  error_code address_error;
  const auto address = asio::ip::make_address(endpoint.host, address_error);
  if (address_error) return fail("bad address", address_error);
  return impl_->add_listener(slot, endpoint, [&](tcp::acceptor& acceptor) -> Result<void> {
    error_code ec;
    const tcp::endpoint bind_to(address, endpoint.port);
    acceptor.open(bind_to.protocol(), ec);
    if (ec) return fail("open", ec);
    acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    acceptor.bind(bind_to, ec);
    if (ec) return fail("bind", ec);
    acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return fail("listen", ec);
    return {};
  });
}

Result<std::vector<Endpoint>> StreamServer::listen_module(const std::vector<Endpoint>& endpoints,
                                                          std::shared_ptr<ModuleSlot> slot) {
  std::vector<Impl::Adopted> adopted;
  {
    std::lock_guard lock(impl_->adopted_mutex_);
    if (const auto it = impl_->adopted_.find(slot->name()); it != impl_->adopted_.end())
      for (auto& socket : it->second) {
        socket.claimed = true;
        adopted.push_back(socket);
      }
  }
  std::vector<Endpoint> serving;
  if (adopted.empty()) {
    for (const auto& endpoint : endpoints) {
      auto bound = listen(endpoint, slot);
      if (!bound) return std::move(bound).error();
      serving.push_back(bound.value());
    }
    return serving;
  }
  std::string instead;
  for (const auto& endpoint : endpoints) instead += (instead.empty() ? "" : ", ") + endpoint.to_string();
  for (const auto& socket : adopted) {
    const auto fail = [&](const std::string& why) {
      return Error{slot->name(), {}, socket.endpoint.to_string(), Phase::Start,
                   "listen: socket handed over at start (fd " + std::to_string(socket.fd) + "): " + why};
    };
    // A dup, so that closing the module's listener (a removal) leaves the
    // socket open for the module's return, with connections in its backlog.
    const int fd = ::fcntl(socket.fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return fail(std::strerror(errno));
    auto served = impl_->add_listener(slot, socket.endpoint, [&](tcp::acceptor& acceptor) -> Result<void> {
      error_code ec;
      acceptor.assign(socket.protocol, fd, ec);
      if (ec) {
        ::close(fd);
        return fail(ec.message());
      }
      return {};
    });
    if (!served) return std::move(served).error();
    slot->log().info("serving the socket handed over at start on {} (fd {}){}", served->to_string(), socket.fd,
                     instead.empty() ? "" : ", instead of binding " + instead);
    serving.push_back(served.value());
  }
  return serving;
}

Result<Endpoint> StreamServer::adopt(const std::string& module, int fd) {
  const auto family = listening_tcp_family(fd, module);
  if (!family) {
    ::close(fd);
    return family.error();
  }
  const tcp protocol = family.value() == AF_INET6 ? tcp::v6() : tcp::v4();
  tcp::endpoint bound(protocol, 0);
  socklen_t length = static_cast<socklen_t>(bound.capacity());
  ::getsockname(fd, bound.data(), &length);  // cannot fail: listening_tcp_family asked the same
  bound.resize(length);
  const Endpoint endpoint{bound.address().to_string(), bound.port()};
  std::lock_guard lock(impl_->adopted_mutex_);
  impl_->adopted_[module].push_back(Impl::Adopted{fd, protocol, endpoint, false});
  return endpoint;
}

std::vector<std::string> StreamServer::close_unclaimed() {
  std::vector<std::string> closed;
  std::lock_guard lock(impl_->adopted_mutex_);
  for (auto it = impl_->adopted_.begin(); it != impl_->adopted_.end();) {
    if (it->second.front().claimed) {
      ++it;
      continue;
    }
    for (const auto& socket : it->second) {
      closed.push_back(it->first + " (fd " + std::to_string(socket.fd) + ", " + socket.endpoint.to_string() + ")");
      ::close(socket.fd);
    }
    it = impl_->adopted_.erase(it);
  }
  return closed;
}

std::future<void> StreamServer::probe() {
  struct Countdown {
    std::promise<void> done;
    std::atomic<std::size_t> left{0};
  };
  auto countdown = std::make_shared<Countdown>();
  countdown->left = impl_->workers_.size();
  auto answered = countdown->done.get_future();
  for (auto& worker : impl_->workers_)
    asio::post(worker->io, [countdown] {
      if (--countdown->left == 0) countdown->done.set_value();
    });
  return answered;
}

void StreamServer::close_module(std::string_view module) {
  Impl& s = *impl_;
  {
    std::lock_guard lock(s.listeners_mutex_);
    for (auto& listener : s.listeners_)
      if (listener->module == module) listener->closed = true;
  }
  if (!s.serving_) return;
  for (auto& worker : s.workers_) {
    std::promise<void> done;
    asio::post(worker->io, [&w = *worker, name = std::string(module), &done] {
      w.close_module(name);
      done.set_value();
    });
    done.get_future().wait();
  }
}

void StreamServer::serve() {
  impl_->serving_ = true;
  for (auto& worker : impl_->workers_) {
    for (auto& [listener, acceptor] : worker->acceptors) worker->accept(*listener, *acceptor);
    worker->thread = std::thread([&io = worker->io] { io.run(); });
  }
}

void StreamServer::stop(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  if (!s.serving_) return;
  s.serving_ = false;
  s.stopping_ = true;  // from now on every connection closes after its current reply
  for (auto& worker : s.workers_) asio::post(worker->io, [&w = *worker] { w.close_idle(); });
  {
    std::unique_lock lock(s.open_mutex_);
    s.open_changed_.wait_for(lock, grace, [&s] { return s.open_ == 0; });
    if (s.open_ > 0)
      s.log_->warn("streams: closing {} connection(s) still busy after the {} ms grace period", s.open_, grace.count());
  }
  for (auto& worker : s.workers_) {
    asio::post(worker->io, [&w = *worker] { w.close_all(); });
    worker->guard.reset();  // run() returns once the worker's last handler has run
  }
  for (auto& worker : s.workers_) worker->thread.join();
}

std::vector<ListenerInfo> StreamServer::listeners() const {
  std::vector<ListenerInfo> out;
  std::lock_guard lock(impl_->listeners_mutex_);
  for (const auto& listener : impl_->listeners_)
    if (!listener->closed)
      out.push_back({listener->module, listener->endpoint, listener->open.load(), listener->accepted.load()});
  return out;
}

}  // namespace molt::host
