#include "molt/host/net/http_server.hpp"

#include "molt/host/common/bounded_call.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <future>
#include <optional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "molt/host/net/client_limits.hpp"
#include "molt/host/net/listen_socket.hpp"
#include "molt/host/common/threads.hpp"

namespace molt::host {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

/// A client past max_clients gets this, whatever it asked.
constexpr std::string_view kTooManyClients =
    "HTTP/1.1 503 Service Unavailable\r\n"
    "Server: molt\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 42\r\n"
    "Connection: close\r\n"
    "Retry-After: 1\r\n"
    "\r\n"
    "{\"error\":\"max number of clients reached\"}\n";
/// A refused client's request is read and dropped for up to this long after
/// the 503 (a lingering close: closing with its request unread would answer
/// with a reset, which may destroy the 503 before the client reads it).
constexpr std::chrono::seconds kRefusalLinger{1};
/// At most this many refused connections linger at once; past it they are
/// closed right after the 503 is written, so a flood cannot use up descriptors.
constexpr int kMostLingering = 64;
/// Repeated conditions are logged at most this often.
constexpr std::chrono::seconds kLogEvery{10};

api::Request to_api(http::request<http::string_body>&& in) {
  api::Request out;
  out.method = std::string(in.method_string());
  const std::string_view target(in.target().data(), in.target().size());
  const auto question = target.find('?');
  out.path = std::string(target.substr(0, question));
  if (question != std::string_view::npos) out.query = std::string(target.substr(question + 1));
  out.headers.reserve(static_cast<std::size_t>(std::distance(in.begin(), in.end())));
  for (const auto& field : in) out.headers.push_back({std::string(field.name_string()), std::string(field.value())});
  out.body = std::move(in.body());
  return out;
}

}  // namespace

class HttpServer::Impl {
 public:
  class Session;

  class Refusal;

  Impl(HttpOptions options, Handler handler, std::shared_ptr<spdlog::logger> log)
      : options_(std::move(options)), handler_(std::move(handler)), log_(std::move(log)),
        io_(static_cast<int>(options_.threads)), acceptor_(asio::make_strand(io_)),
        backoff_timer_(acceptor_.get_executor()) {}

  std::vector<std::shared_ptr<Session>> open_sessions() const;

  Result<void> listen();
  void serve();
  bool stop(std::chrono::milliseconds grace);
  void accept();
  /// options_.listen becomes the address bound (for the log lines).
  void remember_bound() {
    beast::error_code ec;
    const auto bound = acceptor_.local_endpoint(ec);
    if (!ec) options_.listen = Endpoint{bound.address().to_string(), bound.port()};
  }
  /// On the acceptor's strand: answers 503 and closes (max_clients).
  void refuse(tcp::socket socket);

  HttpOptions options_;
  Handler handler_;
  std::shared_ptr<spdlog::logger> log_;
  // Declared before io_ so they outlive it: destroying io_ destroys pending
  // handlers, which destroys sessions, which unregister themselves here.
  mutable std::mutex sessions_mutex_;
  std::condition_variable sessions_changed_;
  std::unordered_map<Session*, std::weak_ptr<Session>> sessions_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> freezing_{false};  ///< hot restart: no accept, no next request read
  /// While frozen: io_.run() returns once no operation is pending, and a
  /// frozen server has none.
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> frozen_work_;
  std::atomic<int> lingering_{0};  ///< refused connections still being closed
  asio::io_context io_;
  tcp::acceptor acceptor_;
  // On the acceptor's strand:
  asio::steady_timer backoff_timer_;  ///< while accept() fails for want of descriptors
  AcceptBackoff backoff_;
  std::atomic<std::uint64_t> refused_{0};  ///< written on the strand, read by the metrics
  std::uint64_t refused_logged_ = 0;
  std::optional<std::chrono::steady_clock::time_point> refusal_logged_;
  std::vector<DeadlineThread> threads_;
};

/// A connection turned away: the 503 is written, the connection's sending
/// side shut, and what the client sends read and dropped until it closes or
/// kRefusalLinger passes.
class HttpServer::Impl::Refusal : public std::enable_shared_from_this<Refusal> {
 public:
  Refusal(Impl& server, tcp::socket socket) : server_(server), stream_(std::move(socket)) { ++server_.lingering_; }
  ~Refusal() { --server_.lingering_; }

  void start() {
    stream_.expires_after(kRefusalLinger);
    asio::async_write(stream_, asio::buffer(kTooManyClients.data(), kTooManyClients.size()),
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        if (ec) return self->stream_.close();
                        beast::error_code ignored;
                        self->stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
                        self->drain();
                      });
  }

 private:
  void drain() {
    stream_.async_read_some(asio::buffer(scratch_), [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->stream_.close();  // the client closed, or the time is up
      self->drain();
    });
  }

  Impl& server_;
  beast::tcp_stream stream_;
  std::array<char, 4096> scratch_{};
};

/// One connection. Runs on its own strand; reads a request, answers it,
/// and reads the next one while the client keeps the connection alive.
class HttpServer::Impl::Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Impl& server, tcp::socket socket) : server_(server), stream_(std::move(socket)) {}

  ~Session() {
    {
      std::lock_guard lock(server_.sessions_mutex_);
      server_.sessions_.erase(this);
    }
    server_.sessions_changed_.notify_all();
  }

  void start() {
    {
      std::lock_guard lock(server_.sessions_mutex_);
      server_.sessions_.emplace(this, weak_from_this());
    }
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

  /// Called at stop: close now if waiting for a request that has not begun.
  void close_if_idle() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (self->reading_ && !self->parser_->got_some() && self->buffer_.size() == 0) self->close();
    });
  }

  /// Hot restart, on the session's strand: an idle connection stops
  /// reading now; a busy one once its response is written (write()).
  void freeze() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      // Only between requests: once the parser has some of a request, it
      // holds what it parsed (the bytes are gone from buffer_), so that
      // request is answered here first (it is busy until then).
      if (self->reading_ && !self->parser_->got_some() && self->buffer_.size() == 0) {
        self->parked_ = true;
        self->held_parked_ = self;  // no operation will be pending to keep it
        beast::error_code ignored;
        self->stream_.socket().cancel(ignored);
      }
    });
  }

  /// On the strand: the connection and its input once parked and its read
  /// cancelled; nothing while it is busy.
  std::optional<std::pair<int, std::string>> frozen() const {
    if (!parked_ || reading_ || !stream_.socket().is_open()) return std::nullopt;
    std::string input(beast::buffers_to_string(buffer_.data()));
    return std::pair<int, std::string>{const_cast<beast::tcp_stream&>(stream_).socket().native_handle(), std::move(input)};
  }

  void thaw() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->parked_) return;
      self->parked_ = false;
      self->held_parked_.reset();  // `self` holds it until the read below does
      if (!self->reading_ && self->stream_.socket().is_open()) self->read();
    });
  }

  /// A predecessor's connection: `input` is the start of its next request.
  void start_with(std::string_view input) {
    if (!input.empty()) {  // memcpy from the null data() of an empty view is undefined
      auto room = buffer_.prepare(input.size());
      std::memcpy(room.data(), input.data(), input.size());
      buffer_.commit(input.size());
    }
    start();
  }

  [[nodiscard]] auto executor() { return stream_.get_executor(); }

  /// Called when the grace period is over.
  void close_now() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

 private:
  void read() {
    if (server_.stopping_) return close();
    parser_.emplace();
    parser_->body_limit(server_.options_.max_body_bytes);
    parser_->header_limit(server_.options_.max_header_bytes);
    stream_.expires_after(server_.options_.idle_timeout);
    reading_ = true;
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      self->reading_ = false;
      self->on_read(ec);
    });
  }

  void on_read(beast::error_code ec) {
    if (parked_ && ec == asio::error::operation_aborted) return;  // frozen for a hot restart
    if (ec == http::error::body_limit || ec == http::error::header_limit) {
      return reply_and_close(413, "request larger than " + std::to_string(server_.options_.max_body_bytes) + " bytes");
    }
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted ||
        ec == asio::error::connection_reset || ec == asio::error::bad_descriptor)
      return close();
    if (ec) {
      if (parser_->got_some()) return reply_and_close(400, "malformed request: " + ec.message());
      return close();
    }
    auto request = parser_->release();
    const bool keep_alive = request.keep_alive() && !server_.stopping_;
    const unsigned version = request.version();
    HttpReply answer = api::Response{};
    try {
      answer = server_.handler_(to_api(std::move(request)));
    } catch (const std::exception& e) {  // the router catches module errors; this is a host bug
      server_.log_->error("http: handler failed: {}", e.what());
      answer = api::Response::json(R"({"error":"internal error"})", 500);
    }
    write(std::move(answer), version, keep_alive && !server_.stopping_);
  }

  void reply_and_close(int status, const std::string& message) {
    write(api::Response::json(R"({"error":")" + message + "\"}\n", status), 11, false);
  }

  void write(HttpReply answer, unsigned version, bool keep_alive) {
    auto response = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(answer.response.status), version);
    response->set(http::field::server, "molt");
    response->set(http::field::content_type, answer.response.content_type);
    if (!answer.location.empty()) response->set(http::field::location, answer.location);
    response->body() = std::move(answer.response.body);
    response->keep_alive(keep_alive);
    response->prepare_payload();
    stream_.expires_after(std::chrono::seconds(30));
    http::async_write(stream_, *response, [self = shared_from_this(), response](beast::error_code ec, std::size_t) {
      if (ec || !response->keep_alive()) return self->close();
      if (self->server_.freezing_) {
        self->parked_ = true;  // its next request goes to the successor, or here again after thaw()
        self->held_parked_ = self;
        return;
      }
      self->read();
    });
  }

  Impl& server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool reading_ = false;  ///< an async_read is pending (touched only on the strand)
  bool parked_ = false;   ///< frozen for a hot restart: no read until thaw() (on the strand)
  std::shared_ptr<Session> held_parked_;  ///< itself, while parked: nothing else holds it then
};

Result<void> HttpServer::Impl::listen() {
  auto fail = [&](const std::string& what, const beast::error_code& ec) {
    return Error{{}, {}, options_.listen.to_string(), Phase::Start, "http: " + what + ": " + ec.message()};
  };
  beast::error_code ec;
  if (options_.listen_fd >= 0) {  // handed over at start: already bound and listening
    const int fd = std::exchange(options_.listen_fd, -1);
    const auto family = listening_tcp_family(fd, "http");
    if (!family) {
      ::close(fd);
      return family.error();
    }
    acceptor_.assign(family.value() == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
    if (ec) {
      ::close(fd);
      return fail("socket handed over at start (fd " + std::to_string(fd) + ")", ec);
    }
    remember_bound();
    return {};
  }
  if (const auto failed = bind_and_listen(acceptor_, options_.listen)) return fail(failed->step, failed->reason);
  remember_bound();
  return {};
}

void HttpServer::Impl::serve() {
  accept();
  for (unsigned i = 0; i < options_.threads; ++i) threads_.emplace_back([this] {
    name_this_thread("molt-http");
    io_.run();
  });
}

void HttpServer::Impl::accept() {
  acceptor_.async_accept(asio::make_strand(io_), [this](beast::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
    if (!ec) {
      if (const auto failures = backoff_.succeeded())
        log_->info("http: accept on {} works again, after {} failure(s) for want of file descriptors",
                   options_.listen.to_string(), failures);
      std::size_t open = 0;
      {
        std::lock_guard lock(sessions_mutex_);
        open = sessions_.size();
      }
      if (open >= options_.max_clients) refuse(std::move(socket));
      else std::make_shared<Session>(*this, std::move(socket))->start();
    } else if (ec.category() == boost::system::system_category() && out_of_descriptors(ec.value())) {
      // The connection stays in the backlog and the socket stays readable:
      // trying again at once would spin on a core.
      const auto step = backoff_.failed(std::chrono::steady_clock::now());
      if (step.log)
        log_->error("http: accept on {}: {}: out of file descriptors (RLIMIT_NOFILE, or fs.file-max); backing off {} "
                    "ms, up to {} ms ({} failure(s) since this was last logged; logged at most every {} s)",
                    options_.listen.to_string(), ec.message(), step.delay.count(), AcceptBackoff::kMost.count(),
                    step.failures, kLogEvery.count());
      backoff_timer_.expires_after(step.delay);
      backoff_timer_.async_wait([this](beast::error_code wait_ec) {
        if (!wait_ec && acceptor_.is_open() && !stopping_) accept();
      });
      return;
    }
    if (!stopping_) accept();
  });
}

void HttpServer::Impl::refuse(tcp::socket socket) {
  ++refused_;
  if (lingering_ < kMostLingering) {
    std::make_shared<Refusal>(*this, std::move(socket))->start();
  } else {  // too many lingering already: the 503 if the socket takes it now, then close
    (void)::send(socket.native_handle(), kTooManyClients.data(), kTooManyClients.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    beast::error_code ignored;
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    socket.close(ignored);
  }
  const auto now = std::chrono::steady_clock::now();
  if (!refusal_logged_ || now - *refusal_logged_ >= kLogEvery) {
    log_->warn("http: maxclients ({}) reached on {}: answering new connections 503 ({} since this was last logged; "
               "logged at most every {} s)",
               options_.max_clients, options_.listen.to_string(), refused_ - refused_logged_, kLogEvery.count());
    refusal_logged_ = now;
    refused_logged_ = refused_;
  }
}

std::vector<std::shared_ptr<HttpServer::Impl::Session>> HttpServer::Impl::open_sessions() const {
  std::vector<std::shared_ptr<Session>> open;
  std::lock_guard lock(sessions_mutex_);
  for (const auto& [raw, weak] : sessions_)
    if (auto session = weak.lock()) open.push_back(std::move(session));
  return open;
}

bool HttpServer::Impl::stop(std::chrono::milliseconds grace) {
  if (threads_.empty()) return true;
  stopping_ = true;  // from now on every session closes after its current response
  asio::post(acceptor_.get_executor(), [this] {
    beast::error_code ignored;
    acceptor_.close(ignored);
    backoff_timer_.cancel();
  });
  // Idle connections close now; busy ones after their response. A request
  // still arriving gets to finish.
  for (const auto& session : open_sessions()) session->close_if_idle();
  {
    std::unique_lock lock(sessions_mutex_);
    sessions_changed_.wait_for(lock, grace, [this] { return sessions_.empty(); });
  }
  if (const auto left = open_sessions(); !left.empty()) {
    log_->warn("http: closing {} connection(s) still busy after the {} ms grace period", left.size(), grace.count());
    for (const auto& session : left) session->close_now();
  }
  // Returns once the last handler has run: the acceptor is closed and every
  // session is closing, so no new work arrives.
  // A thread still inside a module's handle is given up on after a second.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  bool all = true;
  for (auto& thread : threads_) all = thread.join_until(deadline) && all;
  threads_.clear();
  if (!all) log_->warn("http: a thread is still inside a module call; not waiting for it");
  return all;
}

HttpServer::HttpServer(HttpOptions options, Handler handler, std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(handler), std::move(log))) {}

HttpServer::~HttpServer() { stop(std::chrono::milliseconds(0)); }

Result<void> HttpServer::listen() { return impl_->listen(); }

void HttpServer::serve() { impl_->serve(); }

Endpoint HttpServer::local_endpoint() const {
  beast::error_code ec;
  const auto endpoint = impl_->acceptor_.local_endpoint(ec);
  return Endpoint{endpoint.address().to_string(), endpoint.port()};
}

bool HttpServer::stop(std::chrono::milliseconds grace) { return impl_->stop(grace); }

HttpServer::Frozen HttpServer::freeze(std::chrono::steady_clock::time_point deadline) {
  Impl& s = *impl_;
  s.frozen_work_.emplace(s.io_.get_executor());
  s.freezing_ = true;
  Frozen out;
  {
    std::promise<void> done;
    asio::dispatch(s.acceptor_.get_executor(), [&] {
      beast::error_code ignored;
      s.acceptor_.cancel(ignored);
      s.backoff_timer_.cancel();
      out.listen_fd = s.acceptor_.native_handle();
      done.set_value();
    });
    done.get_future().wait();
  }
  for (const auto& session : s.open_sessions()) session->freeze();
  // Until every connection is parked (or the deadline): the busy ones park
  // once their response is written.
  while (true) {
    // Every session asked at once, on its own strand; then the answers.
    const auto sessions = s.open_sessions();
    std::vector<std::future<std::optional<std::pair<int, std::string>>>> answers;
    answers.reserve(sessions.size());
    for (const auto& session : sessions) {
      auto asked = std::make_shared<std::promise<std::optional<std::pair<int, std::string>>>>();
      answers.push_back(asked->get_future());
      asio::dispatch(session->executor(), [asked, session] { asked->set_value(session->frozen()); });
    }
    out.connections.clear();
    out.busy = 0;
    for (auto& answer : answers) {
      // Not answered by the deadline: its strand is inside a module call.
      if (answer.wait_until(deadline) != std::future_status::ready) ++out.busy;
      else if (auto frozen = answer.get()) out.connections.push_back(std::move(*frozen));
      else ++out.busy;
    }
    if (out.busy == 0 || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return out;
}

void HttpServer::thaw() {
  Impl& s = *impl_;
  s.freezing_ = false;
  asio::dispatch(s.acceptor_.get_executor(), [&s] {
    if (s.acceptor_.is_open() && !s.stopping_) s.accept();
  });
  for (const auto& session : s.open_sessions()) session->thaw();
  s.frozen_work_.reset();  // after the thawed sessions' reads are pending
}

Result<void> HttpServer::adopt_connection(int fd, std::string_view input) {
  Impl& s = *impl_;
  sockaddr_storage local{};
  socklen_t length = sizeof local;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) {
    const int error = errno;
    ::close(fd);
    return Error{{}, {}, {}, Phase::HotRestart, std::string("http: a connection from the previous moltd: getsockname: ") +
                                                    std::strerror(error)};
  }
  tcp::socket socket(asio::make_strand(s.io_));
  beast::error_code ec;
  socket.assign(local.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
  if (ec) {
    ::close(fd);
    return Error{{}, {}, {}, Phase::HotRestart, "http: a connection from the previous moltd: " + ec.message()};
  }
  std::make_shared<Impl::Session>(s, std::move(socket))->start_with(input);
  return {};
}

std::future<void> HttpServer::probe() {
  auto answered = std::make_shared<std::promise<void>>();
  auto future = answered->get_future();
  asio::post(impl_->io_, [answered] { answered->set_value(); });
  return future;
}

std::uint64_t HttpServer::refused() const { return impl_->refused_.load(std::memory_order_relaxed); }

void HttpServer::carry_over_refused(std::uint64_t refused) { impl_->refused_ += refused; }

std::size_t HttpServer::connections() const {
  std::lock_guard lock(impl_->sessions_mutex_);
  return impl_->sessions_.size();
}

}  // namespace molt::host
