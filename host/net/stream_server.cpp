#include "molt/host/net/stream_server.hpp"

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <boost/asio.hpp>

namespace molt::host {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;

class StreamServer::Impl {
 public:
  class Connection;
  struct Listener {
    std::shared_ptr<ModuleSlot> slot;
    tcp::acceptor acceptor;
    Endpoint endpoint;
    std::atomic<std::size_t> open{0};
    std::atomic<std::uint64_t> accepted{0};
  };

  Impl(StreamOptions options, std::shared_ptr<spdlog::logger> log) : options_(options), log_(std::move(log)) {
    for (unsigned i = 0; i < std::max(1u, options_.threads); ++i) {
      ios_.push_back(std::make_unique<asio::io_context>(1));  // one thread each: no locking inside asio
      guards_.emplace_back(asio::make_work_guard(*ios_.back()));
    }
  }

  void accept(Listener& listener);
  asio::io_context& next_io() { return *ios_[next_io_++ % ios_.size()]; }

  StreamOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  // Declared before the io_contexts: destroying those destroys pending
  // handlers, whose connections unregister themselves here.
  mutable std::mutex connections_mutex_;
  std::condition_variable connections_changed_;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections_;
  std::atomic<bool> stopping_{false};
  std::vector<std::unique_ptr<asio::io_context>> ios_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::thread> threads_;
  std::size_t next_io_ = 0;  ///< touched only by the accepting thread
  static inline std::atomic<api::ConnectionId> next_id_{1};
};

/// One client connection: read what arrives, hand the module everything it
/// has not consumed, send what it wrote, repeat. Lives on one io_context.
class StreamServer::Impl::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Impl& server, Listener& listener, tcp::socket socket)
      : server_(server), listener_(listener), socket_(std::move(socket)), id_(next_id_++) {
    buffer_.resize(kChunk);
    output_.reserve(kChunk);
  }

  ~Connection() {
    --listener_.open;
    {
      std::lock_guard lock(server_.connections_mutex_);
      server_.connections_.erase(this);
    }
    server_.connections_changed_.notify_all();
  }

  [[nodiscard]] auto executor() { return socket_.get_executor(); }

  void start() {
    ++listener_.open;
    {
      std::lock_guard lock(server_.connections_mutex_);
      server_.connections_.emplace(this, weak_from_this());
    }
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);  // small replies, sent at once
    if (auto connected = listener_.slot->stream_connect(id_); !connected) {
      listener_.slot->log().error("{}", connected.error().to_string());
      return close();
    }
    connected_ = true;
    read();
  }

  /// At stop: close now unless bytes are being processed or sent.
  void close_if_idle() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] {
      if (self->reading_ && self->begin_ == self->end_) self->close();
    });
  }
  void close_now() {
    asio::dispatch(socket_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

 private:
  static constexpr std::size_t kChunk = 16 * 1024;

  /// StreamOutput over this connection's output buffer.
  struct Output final : api::StreamOutput {
    Connection& c;
    explicit Output(Connection& connection) : c(connection) {}
    void write(std::string_view bytes) override { c.output_.append(bytes); }
    void close_after_write() override { c.close_after_write_ = true; }
  };

  void read() {
    if (server_.stopping_ || close_after_write_) return close();
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
    auto consumed = listener_.slot->stream_data(id_, std::string_view(buffer_.data() + begin_, end_ - begin_), out);
    if (!consumed) {
      listener_.slot->log().error("{}; closing connection {}", consumed.error().to_string(), id_);
      close_after_write_ = true;
    } else {
      begin_ += consumed.value();
      if (begin_ == end_) begin_ = end_ = 0;
      if (end_ - begin_ > server_.options_.max_input_bytes) {
        listener_.slot->log().warn("connection {}: {} bytes buffered and not consumed, more than the limit of {}; closing",
                                   id_, end_ - begin_, server_.options_.max_input_bytes);
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

  void close() {
    if (closed_) return;
    closed_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    if (connected_) listener_.slot->stream_disconnect(id_);
  }

  Impl& server_;
  Listener& listener_;
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

void StreamServer::Impl::accept(Listener& listener) {
  listener.acceptor.async_accept(next_io(), [this, &listener](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !listener.acceptor.is_open()) return;
    if (!ec) {
      ++listener.accepted;
      auto connection = std::make_shared<Connection>(*this, listener, std::move(socket));
      // Start on the connection's own thread: on_connect runs there.
      asio::dispatch(connection->executor(), [connection] { connection->start(); });
    }
    if (!stopping_) accept(listener);
  });
}

StreamServer::StreamServer(StreamOptions options, std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(options, std::move(log))) {}

StreamServer::~StreamServer() { stop(std::chrono::milliseconds(0)); }

Result<Endpoint> StreamServer::listen(const Endpoint& endpoint, std::shared_ptr<ModuleSlot> slot) {
  auto fail = [&](const std::string& what, const error_code& ec) {
    return Error{slot->name(), {}, endpoint.to_string(), Phase::Start, "listen: " + what + ": " + ec.message()};
  };
  error_code ec;
  const auto address = asio::ip::make_address(endpoint.host, ec);
  if (ec) return fail("bad address", ec);
  auto listener = std::make_unique<Impl::Listener>(std::move(slot), tcp::acceptor(*impl_->ios_.front()), endpoint);
  const tcp::endpoint bind_to(address, endpoint.port);
  listener->acceptor.open(bind_to.protocol(), ec);
  if (ec) return fail("open", ec);
  listener->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  listener->acceptor.bind(bind_to, ec);
  if (ec) return fail("bind", ec);
  listener->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return fail("listen", ec);
  const auto bound = listener->acceptor.local_endpoint(ec);
  listener->endpoint = Endpoint{bound.address().to_string(), bound.port()};
  impl_->listeners_.push_back(std::move(listener));
  return impl_->listeners_.back()->endpoint;
}

void StreamServer::serve() {
  for (auto& listener : impl_->listeners_) impl_->accept(*listener);
  for (auto& io : impl_->ios_) impl_->threads_.emplace_back([&io] { io->run(); });
}

void StreamServer::stop(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  if (s.threads_.empty()) return;
  s.stopping_ = true;
  for (auto& listener : s.listeners_)
    asio::post(listener->acceptor.get_executor(), [&listener = *listener] {
      error_code ignored;
      listener.acceptor.close(ignored);
    });
  auto open = [&s] {
    std::vector<std::shared_ptr<Impl::Connection>> out;
    std::lock_guard lock(s.connections_mutex_);
    for (const auto& [raw, weak] : s.connections_)
      if (auto connection = weak.lock()) out.push_back(std::move(connection));
    return out;
  };
  for (const auto& connection : open()) connection->close_if_idle();
  {
    std::unique_lock lock(s.connections_mutex_);
    s.connections_changed_.wait_for(lock, grace, [&s] { return s.connections_.empty(); });
  }
  if (const auto left = open(); !left.empty()) {
    s.log_->warn("streams: closing {} connection(s) still busy after the {} ms grace period", left.size(), grace.count());
    for (const auto& connection : left) connection->close_now();
  }
  s.guards_.clear();  // io_contexts return once their last handler has run
  for (auto& thread : s.threads_) thread.join();
  s.threads_.clear();
}

std::vector<ListenerInfo> StreamServer::listeners() const {
  std::vector<ListenerInfo> out;
  for (const auto& listener : impl_->listeners_)
    out.push_back({listener->slot->name(), listener->endpoint, listener->open.load(), listener->accepted.load()});
  return out;
}

}  // namespace molt::host
