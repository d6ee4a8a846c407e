// Threads: one worker per I/O thread, each with its own io_context and its
// own connections. Every listener has one listening socket, on worker 0 (an
// exclusive bind: a second moltd on the same port fails to start instead of
// sharing it). Worker 0 accepts, releases the descriptor and posts it to the
// worker whose turn it is, which adopts it on its own thread. So a socket is
// registered, used and closed on one thread only, and the reactors run
// without locks (BOOST_ASIO_CONCURRENCY_HINT_UNSAFE_IO); other threads reach
// a worker only through post(), which keeps the scheduler's own lock: one
// cross-thread post per connection, none per request.
//
// Memory: every connection's buffers are counted in one budget (an atomic,
// touched only when a buffer changes size). Choosing whom to close when it
// runs out needs every connection's size, so connections also sit in one
// registry under a mutex, taken when a connection starts or ends and when
// the budget runs out, never per request. The chosen ones are closed by
// their own threads (a post); the asker waits for their memory to come back.
#include "molt/host/net/stream_server.hpp"

#include "molt/host/common/bounded_call.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <new>
#include <optional>
#include <random>
#include <thread>
#include <unordered_set>

#include <boost/asio.hpp>

#include "molt/host/net/client_limits.hpp"
#include "molt/host/net/listen_socket.hpp"
#include "op_memory.hpp"
#include "molt/host/common/threads.hpp"

namespace molt::host {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

namespace {

/// A read's working size: buffers start here and come back to it.
constexpr std::size_t kChunk = 16 * 1024;
/// Below this much free room a read first compacts, then grows the buffer.
constexpr std::size_t kMinRead = kChunk / 2;
/// An empty buffer larger than this goes back to kChunk (a large message
/// has been consumed, or a large reply sent). Smaller ones stay: a client
/// whose messages are a few kB long causes no allocation per message.
constexpr std::size_t kShrinkAbove = 64 * 1024;
/// Output is sent during a module call once this much is waiting, so that a
/// long batch of replies is on its way while the module still produces.
constexpr std::size_t kFlushAt = kChunk;
/// Buffers at least this large are mapped pages of their own (mmap), not
/// heap: freeing one gives its memory back to the system at once, and
/// growing one moves pages (mremap) instead of copying bytes.
constexpr std::size_t kMapAt = 128 * 1024;
/// How often each I/O thread looks for connections idle past their timeout.
constexpr std::chrono::milliseconds kSweepEvery{250};
/// A connection waiting for the connections being closed for the memory
/// budget to let go of theirs retries this often (doubling), and gives up
/// after kMemoryWaitMost.
constexpr std::chrono::milliseconds kMemoryRetryFirst{1};
constexpr std::chrono::milliseconds kMemoryRetryMost{50};
constexpr std::chrono::seconds kMemoryWaitMost{5};
/// Repeated conditions (maxclients reached) are logged at most this often.
constexpr std::chrono::seconds kLogEvery{10};

/// Bytes whose capacity the connection sets exactly (the memory budget
/// counts capacities), never zero-filled: pages are touched only as bytes
/// arrive. `size()` bytes are used.
class Bytes {
 public:
  Bytes() = default;
  ~Bytes() { free(); }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;

  [[nodiscard]] char* data() noexcept { return data_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::size_t room() const noexcept { return capacity_ - size_; }

  /// Precondition: `bytes.size() <= room()`.
  void append(std::string_view bytes) noexcept {
    if (bytes.empty()) return;  // data_ and bytes.data() may be null: memcpy of them is undefined
    std::memcpy(data_ + size_, bytes.data(), bytes.size());
    size_ += bytes.size();
  }
  void grew(std::size_t n) noexcept { size_ += n; }  ///< `n` bytes were written past size()
  void clear() noexcept { size_ = 0; }
  /// Drops the first `n` bytes, moving the rest to the front.
  void drop_front(std::size_t n) noexcept {
    std::memmove(data_, data_ + n, size_ - n);
    size_ -= n;
  }
  void swap(Bytes& other) noexcept {
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    std::swap(capacity_, other.capacity_);
  }

  /// Makes the capacity exactly `capacity` (at least size()), keeping the
  /// bytes; 0 frees them. Throws std::bad_alloc.
  void reallocate(std::size_t capacity) {
    if (capacity == capacity_) return;
    if (capacity == 0) {
      free();
      size_ = capacity_ = 0;
      return;
    }
    if (capacity_ >= kMapAt && capacity >= kMapAt) {
      void* moved = ::mremap(data_, capacity_, capacity, MREMAP_MAYMOVE);
      if (moved == MAP_FAILED) throw std::bad_alloc();
      data_ = static_cast<char*>(moved);
    } else {
      char* fresh = allocate(capacity);
      if (size_ > 0) std::memcpy(fresh, data_, size_);
      free();
      data_ = fresh;
    }
    capacity_ = capacity;
  }

 private:
  static char* allocate(std::size_t capacity) {
    if (capacity >= kMapAt) {
      void* pages = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (pages == MAP_FAILED) throw std::bad_alloc();
      return static_cast<char*>(pages);
    }
    void* heap = std::malloc(capacity);
    if (heap == nullptr) throw std::bad_alloc();
    return static_cast<char*>(heap);
  }
  void free() noexcept {
    if (data_ == nullptr) return;
    if (capacity_ >= kMapAt) ::munmap(data_, capacity_);
    else std::free(data_);
    data_ = nullptr;
  }

  char* data_ = nullptr;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
};

}  // namespace

class StreamServer::Impl {
 public:
  class Connection;
  struct Worker;

  struct Listener {
    std::shared_ptr<ModuleSlot> slot;  ///< reset on worker 0 when the module is removed
    Endpoint endpoint;                 ///< as bound
    std::string module;
    ClientLimits limits;               ///< as configured
    std::atomic<std::uint32_t> maxclients{0};  ///< in effect: limits.maxclients, or less (cap_maxclients)
    std::atomic<std::size_t> open{0};  ///< counted from accept, so that a burst cannot overshoot maxclients
    std::atomic<std::uint64_t> accepted{0};
    std::atomic<std::uint64_t> refused{0};
    std::array<std::atomic<std::uint64_t>, kLimitCloses> closed_by_limit{};  ///< indexed by LimitClose
    std::atomic<bool> closed{false};
    /// Where the module went (module_moved), "" while it runs here; whether
    /// new connections are forwarded there until `forward_until` (else
    /// answered -MOVED). Touched on worker 0's thread only (admit).
    std::string moved_to;
    bool forward_new = false;
    Clock::time_point forward_until;
  };

  /// A listening socket on worker 0 and its accept loop's state.
  struct Acceptor {
    Acceptor(Listener& l, asio::io_context& io) : listener(l), socket(io), backoff_timer(io) {}
    Listener& listener;
    tcp::acceptor socket;
    asio::steady_timer backoff_timer;  ///< while accept() fails for want of descriptors
    AcceptBackoff backoff;
    std::optional<Clock::time_point> refusal_logged;  ///< maxclients reached, last said
    std::uint64_t refused_logged = 0;                   ///< listener.refused then
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
    std::vector<std::unique_ptr<Acceptor>> acceptors;  ///< worker 0 only
    asio::steady_timer sweep_timer{io};                ///< idle connections (timeout)
    bool sweeping = true;                              ///< false once stopping: the timer is not armed again
    DeadlineThread thread;

    void accept(Acceptor& acceptor);
    /// On worker 0: takes an accepted connection, or refuses it (maxclients).
    void admit(Acceptor& acceptor, tcp::socket socket);
    void refuse(Acceptor& acceptor, tcp::socket& socket);
    /// Writes `reply` (if any) without waiting, then closes `socket`.
    static void redirect(tcp::socket& socket, std::string_view reply);
    /// On this worker's thread: wraps an accepted descriptor and starts it.
    void adopt(Listener& listener, std::shared_ptr<ModuleSlot> slot, tcp::socket::native_handle_type fd, tcp protocol);
    /// On this worker's thread: closes `module`'s acceptors (worker 0) and connections.
    void close_module(const std::string& module);
    /// On this worker's thread: `module` moved; see StreamServer::module_moved.
    void module_moved(const std::string& module, const MovedModule& moved);
    void close_idle();  ///< on this thread: stop accepting, close connections with nothing in progress
    void close_all();   ///< on this thread
    void sweep();       ///< closes the connections idle past their listener's timeout, and re-arms
    // Hot restart, each on this worker's thread:
    void freeze();         ///< stops accepting (worker 0) and reading; writes in progress go on
    void stop_flushing();  ///< stops the writes still in progress where they are
    [[nodiscard]] bool writing() const;  ///< whether a connection still has a write in progress
    /// Appends every connection, or false while one still has an operation
    /// to hear back from (freeze's and stop_flushing's cancellations).
    bool capture(std::vector<FrozenConnection>& out);
    void thaw();
    /// Serves a connection a predecessor froze, on `listener`.
    void adopt_frozen(Listener& listener, std::shared_ptr<ModuleSlot> slot, FrozenConnection frozen, tcp protocol);
    bool is_frozen = false;  ///< between freeze() and thaw()
  };

  /// A listening socket handed over at start (StreamServer::adopt), kept
  /// open for the server's life: each listener that serves it gets a dup.
  struct Adopted {
    int fd = -1;
    tcp protocol = tcp::v4();
    Endpoint endpoint;
    bool claimed = false;  ///< a module has served it
  };

  Impl(StreamOptions options, std::shared_ptr<spdlog::logger> log)
      : options_(std::move(options)), log_(std::move(log)), budget_(options_.max_memory) {
    for (unsigned i = 0; i < std::max(1u, options_.threads); ++i) workers_.push_back(std::make_unique<Worker>(*this));
  }

  ~Impl() {
    join_adopters();
    join_reapers();
    for (const auto& [module, sockets] : adopted_)
      for (const auto& socket : sockets) ::close(socket.fd);
  }

  /// Waits for the threads freeing instances that moved away (revive).
  void join_reapers() {
    std::vector<std::thread> reapers;
    {
      std::lock_guard lock(reapers_mutex_);
      reapers.swap(reapers_);
    }
    for (auto& t : reapers) t.join();
  }
  std::mutex reapers_mutex_;
  std::vector<std::thread> reapers_;  ///< guarded by reapers_mutex_; joined by stop() and the destructor

  /// Adds a listener for `slot`'s module, on worker 0, whose acceptor `open`
  /// opens (bound or adopted). `endpoint`: what was asked, until it is open.
  Result<Endpoint> add_listener(const std::string& module, const std::shared_ptr<ModuleSlot>& slot,
                                const Endpoint& endpoint, const std::function<Result<void>(tcp::acceptor&)>& open,
                                const std::string& moved_to = {});
  /// `module`'s listeners: on the sockets adopted for it, if any, else bound
  /// on `endpoints`; serving `slot`, or (no slot) answering -MOVED to `moved_to`.
  Result<std::vector<Endpoint>> listen_on(const std::string& module, const std::vector<Endpoint>& endpoints,
                                          const std::shared_ptr<ModuleSlot>& slot, const std::string& moved_to);

  /// The listeners of `slot`'s module left open when it moved away
  /// (module_moved, listen_moved), serving `slot` again: the module came
  /// back. Empty if there are none.
  std::vector<Endpoint> revive(const std::shared_ptr<ModuleSlot>& slot) {
    if (!serving_) return {};
    Worker& first = *workers_.front();
    std::promise<std::vector<Endpoint>> done;
    std::vector<std::shared_ptr<ModuleSlot>> left;  // the instance that moved away, kept by its listener
    asio::post(first.io, [&] {
      std::vector<Endpoint> revived;
      for (auto& acceptor : first.acceptors) {
        Listener& l = acceptor->listener;
        if (l.module != slot->name() || l.closed || l.moved_to.empty()) continue;
        l.moved_to.clear();
        l.forward_new = false;
        if (l.slot) left.push_back(std::move(l.slot));
        l.slot = slot;
        revived.push_back(l.endpoint);
      }
      done.set_value(std::move(revived));
    });
    auto endpoints = done.get_future().get();
    // Freeing its state (a million keys: hundreds of ms) is no part of the
    // handoff that brings the module back: it happens beside it.
    if (!left.empty()) {
      std::lock_guard lock(reapers_mutex_);
      reapers_.emplace_back([old = std::move(left)]() mutable { old.clear(); });
    }
    return endpoints;
  }

  void connection_closed() {
    {
      std::lock_guard lock(open_mutex_);
      --open_;
    }
    open_changed_.notify_all();
  }

  Worker& next_worker() { return *workers_[next_worker_++ % workers_.size()]; }

  /// The outcome of asking the budget for bytes it does not have.
  enum class Room { Reserved, Wait, CloseAsker };
  /// The slow path of a reservation: under registry_mutex_, tries again,
  /// else picks the connections to close (largest first), has their
  /// threads close them, and says whether `asker` gets the bytes now, waits
  /// for theirs to come back, or is to close itself.
  Room make_room(Connection& asker, std::uint64_t bytes);

  StreamOptions options_;
  std::shared_ptr<spdlog::logger> log_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> any_timeout_{false};  ///< a listener has a timeout: the sweeps look
  std::atomic<std::uint32_t> maxclients_cap_{UINT32_MAX};
  std::size_t next_worker_ = 0;  ///< touched by worker 0's thread only
  std::mutex open_mutex_;
  std::condition_variable open_changed_;
  std::size_t open_ = 0;  ///< connections alive, all workers (guarded by open_mutex_)
  MemoryBudget budget_;
  /// Every connection, for the eviction to compare them; touched when one
  /// starts or ends, and by make_room (rare), never per request.
  std::mutex registry_mutex_;
  std::unordered_set<Connection*> registry_;  ///< guarded by registry_mutex_
  mutable std::mutex listeners_mutex_;
  std::vector<std::unique_ptr<Listener>> listeners_;  ///< never erased: connections refer to them
  mutable std::mutex adopted_mutex_;
  std::map<std::string, std::vector<Adopted>, std::less<>> adopted_;  ///< by module (guarded by adopted_mutex_)
  std::vector<std::unique_ptr<Worker>> workers_;  // last: destroyed first, with the sockets they own
  std::atomic<bool> serving_{false};
  /// Ids start at a random multiple of 2^32 in each process (below 2^63: a
  /// RESP integer), so that a client a handoff's target adopts keeps its id
  /// there without meeting one of the target's own (adopt_forwarded).
  static api::ConnectionId first_id() {
    std::random_device random;
    return (static_cast<api::ConnectionId>(random() & 0x7fffffffu) << 32) + 1;
  }
  static inline std::atomic<api::ConnectionId> next_id_{first_id()};

  /// The threads that open forwarded clients' connections on a handoff's
  /// target (MovedModule::adopt): made at the first handoff, joined by stop().
  asio::thread_pool& adopters() {
    std::lock_guard lock(adopters_mutex_);
    if (!adopters_) adopters_ = std::make_unique<asio::thread_pool>(2);
    return *adopters_;
  }
  void join_adopters() {
    std::unique_ptr<asio::thread_pool> pool;
    {
      std::lock_guard lock(adopters_mutex_);
      pool = std::move(adopters_);
    }
    if (pool) pool->join();
  }
  std::mutex adopters_mutex_;
  std::unique_ptr<asio::thread_pool> adopters_;  ///< guarded by adopters_mutex_

  /// Serves `frozen` on `module`'s first listener, under its id.
  Result<void> adopt(FrozenConnection frozen, const std::string& whence, bool advance_ids);
};

/// One client connection: read what arrives, hand the module everything it
/// has not consumed, send what it wrote while reading on; stop reading while
/// too much output waits for the client. Lives on one worker.
///
/// States, all on the worker's thread: reading (a read is pending), in a
/// call (the module has the input), paused (unsent output at the soft
/// limit: no read, no call, until a write drains it), waiting for memory
/// (the budget is full and other connections are being closed to make
/// room), closing after the output is sent. A write may be pending in any.
class StreamServer::Impl::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Worker& worker, Listener& listener, std::shared_ptr<ModuleSlot> slot, tcp::socket socket)
      : Connection(worker, listener, std::move(slot), std::move(socket), next_id_++) {}
  /// With the id it had in a predecessor (hot restart).
  Connection(Worker& worker, Listener& listener, std::shared_ptr<ModuleSlot> slot, tcp::socket socket,
             api::ConnectionId id)
      : worker_(worker), server_(worker.server), listener_(listener), slot_(std::move(slot)),
        socket_(std::move(socket)), id_(id), quiet_since_(Clock::now()) {}

  ~Connection() {
    if (!closed_) close();  // not reached in normal operation: every path closes or has an operation pending
    {
      std::lock_guard lock(server_.registry_mutex_);
      server_.registry_.erase(this);
    }
    const std::uint64_t held = held_.load(std::memory_order_relaxed);
    input_.reallocate(0);
    filling_.reallocate(0);
    sending_.reallocate(0);
    server_.budget_.release(held);  // after the memory is gone, so the total never undercounts
    --listener_.open;
    worker_.connections.erase(this);
    server_.connection_closed();
  }

  void start() { start_with({}, {}); }

  /// Counts the connection as open, in the server's registry and its
  /// worker's set (the destructor undoes each), and sends small replies at once.
  void enroll() {
    {
      std::lock_guard lock(server_.open_mutex_);
      ++server_.open_;
    }
    {
      std::lock_guard lock(server_.registry_mutex_);
      server_.registry_.insert(this);
    }
    worker_.connections.insert(this);
    error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
  }

  /// start(), for a connection with bytes already (a predecessor froze it):
  /// sends `output`, then gives the module `input`, then reads on.
  void start_with(std::string_view input, std::string_view output) {
    enroll();
    if (auto connected = slot_->stream_connect(id_); !connected) {
      slot_->log().error("{}", connected.error().to_string());
      return close();
    }
    connected_ = true;
    if (worker_.is_frozen) {
      freeze_state_ = Freeze::Flushing;
      held_frozen_ = shared_from_this();
    }
    if (!input.empty() || !output.empty()) {
      const std::size_t capacity = std::max<std::size_t>(input.size(), kChunk);
      if (!reserve(capacity, Growth::Output) || !reserve(std::max<std::size_t>(output.size(), kChunk), Growth::Output))
        return;  // closed for memory
      input_.reallocate(capacity);
      input_.append(input);
      filling_.reallocate(std::max<std::size_t>(output.size(), kChunk));
      filling_.append(output);
      send_pending();
      if (!input.empty() && unsent() < server_.options_.output_soft_limit) return dispatch();
      if (unsent() >= server_.options_.output_soft_limit) return pause();
    }
    read();
  }

  // --- hot restart ---------------------------------------------------------

  /// Stops reading; a write in progress goes on (on_written), and the read
  /// pending is cancelled once nothing is being written.
  void freeze() {
    if (forward_) return close();  // a forwarded connection is not handed over: its client reconnects
    if (closed_ || freeze_state_ != Freeze::None) return;
    freeze_state_ = Freeze::Flushing;
    held_frozen_ = shared_from_this();  // no operation will be pending to keep it
    if (!writing_ && reading_) cancel_operations();
  }

  /// Stops the write in progress where it is (on_written keeps the rest).
  void stop_flushing() {
    if (closed_) return;
    freeze_state_ = Freeze::Stopped;
    if (reading_ || writing_) cancel_operations();
  }

  [[nodiscard]] bool writing() const noexcept { return !closed_ && writing_; }
  /// Whether no operation is pending: the buffers are what the connection has.
  [[nodiscard]] bool still() const noexcept { return closed_ || (!reading_ && !writing_); }

  [[nodiscard]] std::optional<FrozenConnection> frozen() {
    if (closed_) return std::nullopt;
    FrozenConnection out{listener_.module, socket_.native_handle(), id_,
                         std::string(input_.data() + begin_, input_.size() - begin_), {}, close_after_write_};
    out.output.reserve(unsent());
    out.output.append(sending_.data(), sending_.size());
    out.output.append(filling_.data(), filling_.size());
    return out;
  }

  void thaw() {
    const auto self = std::move(held_frozen_);  // the operations started below hold it from here
    if (closed_) return;
    freeze_state_ = Freeze::None;
    send_pending();
    if (paused_) return;  // on_written resumes it once its output drains
    if (close_after_write_) {
      if (unsent() == 0) close();
      return;
    }
    read();
  }

  [[nodiscard]] const Listener& listener() const noexcept { return listener_; }
  [[nodiscard]] Worker& worker() const noexcept { return worker_; }
  [[nodiscard]] api::ConnectionId id() const noexcept { return id_; }
  /// Bytes reserved in the budget for this connection's buffers (any thread).
  [[nodiscard]] std::uint64_t held() const noexcept { return held_.load(std::memory_order_relaxed); }
  /// Chosen to be closed for the memory budget (any thread, under registry_mutex_).
  [[nodiscard]] bool evicting() const noexcept { return evicting_.load(std::memory_order_relaxed); }
  void mark_evicting() noexcept { evicting_.store(true, std::memory_order_relaxed); }
  void close_after_write() noexcept { close_after_write_ = true; }

  /// At stop: close now unless bytes are being processed or sent.
  void close_if_idle() {
    if ((reading_ && begin_ == input_.size() && unsent() == 0) || waiting_for_memory_) close();
  }

  /// On this worker's thread, at a sweep: closes the connection if nothing
  /// was received or sent since `timeout` ago and nothing waits to be sent.
  void close_if_idle_since(Clock::time_point now) {
    const auto timeout = listener_.limits.timeout;
    if (closed_ || timeout.count() == 0 || freeze_state_ != Freeze::None) return;
    if (activity_ != seen_activity_ || unsent() > 0 || waiting_for_memory_) {
      seen_activity_ = activity_;
      quiet_since_ = now;
      return;
    }
    if (now - quiet_since_ < timeout) return;
    slot_->log().debug("connection {}: idle for {} s (timeout); closing", id_, timeout.count());
    close_for(LimitClose::Timeout);
  }

  /// Closes the connection for the memory budget (another connection asked
  /// for room and this one holds the most), saying so once.
  void evict() {
    if (closed_) return;
    slot_->log().warn("connection {}: {} bytes in its buffers, the most of any connection; closing it to keep all "
                      "connections' buffers within max_connection_memory ({} bytes)",
                      id_, held(), server_.budget_.budget());
    close_for(LimitClose::Memory);
  }

  /// Closes the connection for one of the host's limits, counting it.
  void close_for(LimitClose why) {
    if (closed_) return;
    listener_.closed_by_limit[static_cast<std::size_t>(why)].fetch_add(1, std::memory_order_relaxed);
    close();
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    if (memory_timer_) memory_timer_->cancel();
    if (forward_) {
      forward_->upstream.close(ignored);
      forward_->drain_timer.cancel();
    }
    if (connected_) slot_->stream_disconnect(id_);
    // It may be all that keeps this object alive: let it go from the event
    // loop, not under whoever called close().
    if (awaiting_forward_) asio::post(worker_.io, [keep = std::move(awaiting_forward_)] {});
  }

  // --- forwarding (the module moved to another moltd) ------------------------
  // The client's bytes go to the module's new home on a connection of our
  // own, and its replies come back on this one, in order: a byte proxy, one
  // write upstream at a time (the client is not read meanwhile), upstream
  // not read while the client's output is at the soft limit. After the
  // drain, the connection closes at a moment nothing is in progress.

  /// A connection of a module that moved: forwards what it has not
  /// consumed, and all that comes, to `to` (HOST:PORT) until `until`; on a
  /// connection `adopt` opens, when given and the module knew this one.
  void forward_to(const std::string& to, Clock::time_point until,
                  const std::function<FileDescriptor(api::ConnectionId)>& adopt = {}) {
    const auto self = std::move(awaiting_forward_);  // the connect below holds it from here
    if (closed_ || forward_) return;
    forward_ = std::make_unique<Forward>(worker_.io);
    forward_->to = to;
    forward_->until = until;
    paused_ = false;  // upstream_paused bounds the output from now on
    if (adopt && connected_) {  // its state on the target is under its id: open a connection adopted there
      asio::post(server_.adopters(), [self = shared_from_this(), adopt] {
        FileDescriptor upstream = self->server_.stopping_ ? FileDescriptor() : adopt(self->id_);
        asio::post(self->worker_.io, [self, fd = upstream.release()] { self->adopted(FileDescriptor(fd)); });
      });
      return;
    }
    connect_upstream();
  }

  /// The connection MovedModule::adopt opened, or none: then a new one.
  void adopted(FileDescriptor upstream) {
    if (closed_) return;
    if (!upstream.valid()) return connect_upstream();
    sockaddr_storage local{};
    socklen_t length = sizeof local;
    error_code ec;
    if (::getsockname(upstream.get(), reinterpret_cast<sockaddr*>(&local), &length) == 0)
      forward_->upstream.assign(local.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), upstream.get(), ec);
    else
      ec = error_code(errno, asio::error::get_system_category());
    if (ec) {
      slot_->log().warn("connection {}: forwarding to {}: {}; closing it", id_, forward_->to, ec.message());
      return close();
    }
    (void)upstream.release();  // the socket owns it now
    slot_->log().debug("connection {}: adopted by {} under its id", id_, forward_->to);
    upstream_connected();
  }

  void connect_upstream() {
    const std::string& to = forward_->to;
    error_code ec;
    const auto colon = to.rfind(':');
    const auto address = asio::ip::make_address(to.substr(0, colon), ec);
    if (ec || colon == std::string::npos) {
      slot_->log().warn("connection {}: cannot forward to '{}': {}; closing it", id_, to, ec ? ec.message() : "no port");
      return close();
    }
    const tcp::endpoint upstream(address, static_cast<unsigned short>(std::stoi(to.substr(colon + 1))));
    forward_->upstream.async_connect(upstream, [self = shared_from_this()](error_code connect_ec) {
      if (self->closed_) return;
      if (connect_ec) {
        self->slot_->log().warn("connection {}: forwarding to {}: {}; closing it", self->id_, self->forward_->to,
                                connect_ec.message());
        return self->close();
      }
      self->upstream_connected();
    });
  }

  void upstream_connected() {
    error_code ignored;
    forward_->upstream.set_option(tcp::no_delay(true), ignored);
    forward_->connected = true;
    arm_drain(forward_->until);
    read_upstream();
    forward_input();
  }

  /// A new connection to the listener of a module that moved, forwarded from the start.
  void start_forwarding(const std::string& to, Clock::time_point until) {
    enroll();
    forward_to(to, until);
    read();
  }

 private:
  struct Forward {
    explicit Forward(asio::io_context& io) : upstream(io), drain_timer(io) {}
    tcp::socket upstream;
    asio::steady_timer drain_timer;
    std::string to;
    Clock::time_point until;
    bool connected = false;
    bool writing = false;       ///< client bytes on their way upstream
    bool reading = false;       ///< a read of upstream pending
    bool upstream_paused = false;  ///< the client's output is at the soft limit
    bool draining = false;      ///< past the drain: closes at the first moment nothing is in progress
    bool last_read_full = false;  ///< the last read of upstream filled the buffer: more of a reply may follow
    Clock::time_point last_sent{}, last_reply{};
    std::array<char, 16384> buffer{};
  };

  void forward_input() {
    if (closed_ || !forward_->connected || forward_->writing) return;
    if (begin_ == input_.size()) return read();
    forward_->writing = true;
    forward_->last_sent = Clock::now();
    ++activity_;
    const std::size_t n = input_.size() - begin_;
    asio::async_write(forward_->upstream, asio::buffer(input_.data() + begin_, n),
                      [self = shared_from_this(), n](error_code ec, std::size_t) {
                        self->forward_->writing = false;
                        if (self->closed_) return;
                        if (ec) return self->close();
                        self->begin_ += n;
                        self->forward_input();
                      });
  }

  void read_upstream() {
    if (closed_ || forward_->reading || forward_->upstream_paused) return;
    forward_->reading = true;
    forward_->upstream.async_read_some(asio::buffer(forward_->buffer),
                                       [self = shared_from_this()](error_code ec, std::size_t n) {
                                         self->forward_->reading = false;
                                         if (self->closed_) return;
                                         if (ec) {  // the new home closed it: so do we, once its replies are sent
                                           self->close_after_write_ = true;
                                           if (self->unsent() == 0) self->close();
                                           return;
                                         }
                                         self->forward_->last_reply = Clock::now();
                                         self->forward_->last_read_full = n == self->forward_->buffer.size();
                                         ++self->activity_;
                                         self->write(std::string_view(self->forward_->buffer.data(), n));
                                         if (self->over_hard_limit_ != 0) return self->close_for(LimitClose::OutputBuffer);
                                         if (!self->writing_ && !self->filling_.empty()) self->start_write();
                                         if (self->unsent() >= self->server_.options_.output_soft_limit)
                                           self->forward_->upstream_paused = true;
                                         else
                                           self->read_upstream();
                                       });
  }

  /// Whether no request is in progress on this forwarded connection, as far
  /// as its bytes tell: nothing received from the client and not forwarded
  /// (nor waiting in the socket), the last bytes were a reply, all of it is
  /// sent, and nothing more of it is waiting or likely to follow.
  [[nodiscard]] bool forward_idle() {
    const Forward& f = *forward_;
    error_code ec;
    return !f.writing && begin_ == input_.size() && unsent() == 0 && f.last_reply >= f.last_sent &&
           !f.last_read_full && socket_.available(ec) == 0 && f.upstream.available(ec) == 0;
  }

  /// After the drain: closes at the first moment nothing is in progress
  /// (checked as each reply is sent, and every few ms).
  void close_if_drained() {
    if (closed_ || !forward_->draining || !forward_idle()) return;
    slot_->log().debug("connection {}: drained (forwarded to {}); closing it", id_, forward_->to);
    close();
  }

  void arm_drain(Clock::time_point when) {
    forward_->drain_timer.expires_at(when);
    forward_->drain_timer.async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->closed_) return;
      self->forward_->draining = true;
      self->close_if_drained();
      if (!self->closed_) self->arm_drain(Clock::now() + kDrainCheck);
    });
  }

  static constexpr std::chrono::milliseconds kDrainCheck{5};

 public:

 private:
  /// StreamOutput over this connection's output buffers.
  struct Output final : api::StreamOutput {
    Connection& c;
    explicit Output(Connection& connection) : c(connection) {}
    void write(std::string_view bytes) override { c.write(bytes); }
    void close_after_write() override { c.close_after_write_ = true; }
    /// As stream.hpp documents it: nothing unsent, or the unsent output plus
    /// a reply as large as the last one within the soft limit.
    bool has_room() const override {
      const std::uint64_t last = std::exchange(c.written_since_room_, 0);
      const std::uint64_t unsent = c.unsent();
      if (unsent == 0 || unsent + last <= c.server_.options_.output_soft_limit) return true;
      c.room_refused_ = true;
      return false;
    }
  };

  [[nodiscard]] std::uint64_t unsent() const noexcept { return sending_.size() + filling_.size(); }

  // --- memory -------------------------------------------------------------

  /// What a buffer is about to grow for. Input may wait for memory (the
  /// connection is not read meanwhile); output cannot: the module has
  /// written it.
  enum class Growth { Input, Output };

  /// Reserves `bytes` in the budget for a buffer about to grow. When the
  /// budget is full, the connections holding the most are closed first
  /// (make_room). On false the connection has closed, or waits for memory
  /// (input; a retry is scheduled).
  bool reserve(std::uint64_t bytes, Growth growth) {
    if (!server_.budget_.try_reserve(bytes)) {
      switch (server_.make_room(*this, bytes)) {
        case Room::Reserved:
          break;
        case Room::CloseAsker:
          close_for_memory(bytes);  // the module's further writes, if any, go nowhere
          return false;
        case Room::Wait:
          // Output, and a connection's first buffer, take the bytes now: the
          // connections chosen give back more once they are gone, and until
          // then the total passes the budget by what is written now, and by
          // one read buffer per connection opening meanwhile. A newcomer must
          // not queue behind the connections growing their buffers (they
          // would take the memory being freed first, for seconds).
          if (growth == Growth::Input && held() != 0) {
            wait_for_memory();
            return false;
          }
          server_.budget_.force_reserve(bytes);
          break;
      }
    }
    held_.fetch_add(bytes, std::memory_order_relaxed);
    return true;
  }

  void release(std::uint64_t bytes) noexcept {
    held_.fetch_sub(bytes, std::memory_order_relaxed);
    server_.budget_.release(bytes);
  }

  /// Resizes `buffer` to `capacity` bytes, accounting the difference; a
  /// shrink cannot fail, a growth (input's: output grows in write()) may.
  bool resize(Bytes& buffer, std::size_t capacity) {
    const std::size_t before = buffer.capacity();
    if (capacity > before && !reserve(capacity - before, Growth::Input)) return false;
    buffer.reallocate(capacity);
    if (capacity < before) release(before - capacity);
    return true;
  }

  void shrink_if_large(Bytes& buffer) {
    if (buffer.empty() && buffer.capacity() > kShrinkAbove) resize(buffer, kChunk);
  }

  void close_for_memory(std::uint64_t asking) {
    slot_->log().warn("connection {}: {} bytes in its buffers and {} more needed, the most of any connection; "
                      "closing it to keep all connections' buffers within max_connection_memory ({} bytes)",
                      id_, held(), asking, server_.budget_.budget());
    close_for(LimitClose::Memory);
  }

  /// Others are being closed to make room: try again shortly (the
  /// connection is not read meanwhile), up to kMemoryWaitMost.
  void wait_for_memory() {
    const auto now = Clock::now();
    if (!waiting_for_memory_) {
      waiting_for_memory_ = true;
      waiting_since_ = now;
      memory_retry_ = kMemoryRetryFirst;
    } else if (now - waiting_since_ > kMemoryWaitMost) {
      slot_->log().warn("connection {}: waited {} s for buffer memory (max_connection_memory, {} bytes) in vain; "
                        "closing it", id_, kMemoryWaitMost.count(), server_.budget_.budget());
      return close_for(LimitClose::Memory);
    } else {
      memory_retry_ = std::min(memory_retry_ * 2, kMemoryRetryMost);
    }
    if (!memory_timer_) memory_timer_ = std::make_unique<asio::steady_timer>(worker_.io);
    memory_timer_->expires_after(memory_retry_);
    memory_timer_->async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->closed_) return;
      self->read();  // resumes where the reservation failed
    });
  }

  // --- input --------------------------------------------------------------

  /// Makes room in the input buffer for a read: compacts, or grows within
  /// the connection's limit and the budget. False when the connection waits
  /// for memory or has closed.
  bool make_input_room() {
    const std::uint64_t limit = server_.options_.max_input_bytes;
    if (begin_ == input_.size()) {  // all consumed
      begin_ = 0;
      input_.clear();
      shrink_if_large(input_);
    }
    if (input_.capacity() == 0) return resize(input_, static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, limit)));
    if (input_.room() >= kMinRead) return true;
    if (begin_ > 0) {
      input_.drop_front(begin_);
      begin_ = 0;
      if (input_.room() >= kMinRead) return true;
    }
    // One frame fills the buffer: grow it, unless that would pass the limit.
    if (input_.size() >= limit) {
      slot_->log().warn("connection {}: {} bytes received and not consumed, the limit (client_query_buffer_limit); "
                        "closing it", id_, input_.size());
      close_for(LimitClose::QueryBuffer);
      return false;
    }
    if (input_.capacity() >= limit) return true;  // the last bytes up to the limit
    return resize(input_, static_cast<std::size_t>(std::min<std::uint64_t>(input_.capacity() * 2, limit)));
  }

  void read() {
    if (closed_ || reading_ || freeze_state_ != Freeze::None) return;
    if (evicting()) return evict();  // chosen by another connection's reservation: its thread posted this too
    if (server_.stopping_) close_after_write_ = true;
    if (close_after_write_) {
      if (unsent() == 0) close();
      return;  // closes once the output is sent (on_written)
    }
    if (!make_input_room()) return;
    waiting_for_memory_ = false;
    reading_ = true;
    socket_.async_read_some(asio::buffer(input_.data() + input_.size(), input_.room()),
                            with_op_memory([self = shared_from_this()](error_code ec, std::size_t n) {
                              self->reading_ = false;
                              self->on_read(ec, n);
                            }));
  }

  void on_read(error_code ec, std::size_t n) {
    if (closed_) return;
    if (freeze_state_ != Freeze::None) {  // the read was cancelled; what it got, if anything, is kept
      if (!ec) input_.grew(n);
      else if (ec != asio::error::operation_aborted) close();
      return;
    }
    if (ec) return close();
    input_.grew(n);
    ++activity_;
    dispatch();
  }

  /// Calls the module with everything not consumed, then sends, reads on,
  /// or pauses.
  void dispatch() {
    if (forward_) return forward_input();
    Output out(*this);
    room_refused_ = false;
    auto consumed = slot_->stream_data(id_, std::string_view(input_.data() + begin_, input_.size() - begin_), out);
    if (!consumed && slot_->retired()) {
      // The module moved to another moltd: this input waits, unconsumed, for
      // forward_to() (module_moved, posted to this thread right after).
      slot_->log().debug("connection {}: {}; its input waits to be forwarded", id_, consumed.error().reason);
      awaiting_forward_ = shared_from_this();  // no operation is pending to keep it until then
      return;
    }
    if (!consumed) {
      slot_->log().error("{}; closing connection {}", consumed.error().to_string(), id_);
      close_after_write_ = true;
    } else {
      begin_ += consumed.value();
    }
    if (over_hard_limit_) {
      slot_->log().warn("connection {}: {} bytes of output unsent, past client_output_buffer_hard_limit ({} bytes); "
                        "closing it", id_, over_hard_limit_, server_.options_.output_hard_limit);
      return close_for(LimitClose::OutputBuffer);
    }
    if (closed_) return;  // closed for memory while writing
    if (!writing_ && !filling_.empty()) start_write();
    if (server_.stopping_) close_after_write_ = true;
    if (freeze_state_ != Freeze::None) return;  // a predecessor's input, given while frozen: no more
    if (close_after_write_) {
      if (unsent() == 0) close();
      return;
    }
    // The module stopped because the client is not taking its replies:
    // wait for the output to drain before calling it again.
    if (unsent() >= server_.options_.output_soft_limit || (room_refused_ && unsent() > 0)) return pause();
    read();
  }

  void pause() {
    paused_ = true;
    shrink_if_large(filling_);  // what a paused connection holds is what it has to send, no more
  }

  /// Output drained below the soft limit: the unconsumed input first
  /// (replies the module held back), then new bytes.
  void resume() {
    if (freeze_state_ != Freeze::None) return;  // thaw() resumes it
    paused_ = false;
    if (server_.stopping_) {
      close_after_write_ = true;
      if (unsent() == 0) close();
      return;
    }
    if (begin_ < input_.size()) return dispatch();
    read();
  }

  // --- output -------------------------------------------------------------

  void write(std::string_view bytes) {
    written_since_room_ += bytes.size();
    if (closed_ || over_hard_limit_ != 0) return;
    const std::uint64_t hard = server_.options_.output_hard_limit;
    if (hard != 0 && unsent() + bytes.size() > hard) {
      over_hard_limit_ = unsent() + bytes.size();
      return;  // the connection closes after the call
    }
    if (filling_.room() < bytes.size()) {
      const std::size_t capacity = std::max({filling_.size() + bytes.size(), filling_.capacity() * 2, kChunk});
      if (!reserve(capacity - filling_.capacity(), Growth::Output)) return;
      filling_.reallocate(capacity);
    }
    filling_.append(bytes);
    if (!writing_ && filling_.size() >= kFlushAt && freeze_state_ != Freeze::Stopped) start_write();
  }

  /// Sends what waits: the rest of a write stopped by a freeze first.
  void send_pending() {
    if (writing_) return;
    if (!sending_.empty()) {
      writing_ = true;
      async_send();
    } else if (!filling_.empty()) {
      start_write();
    }
  }

  void async_send() {
    asio::async_write(socket_, asio::buffer(sending_.data(), sending_.size()),
                      with_op_memory([self = shared_from_this()](error_code ec, std::size_t n) { self->on_written(ec, n); }));
  }

  void cancel_operations() {
    error_code ignored;
    socket_.cancel(ignored);
  }

  /// Sends the filled buffer while the module may fill the other one.
  void start_write() {
    filling_.swap(sending_);
    writing_ = true;
    async_send();
  }

  void on_written(error_code ec, std::size_t n) {
    writing_ = false;
    if (freeze_state_ != Freeze::None && !closed_) return on_written_frozen(ec, n);
    sending_.clear();
    ++activity_;
    if (ec || closed_) return close();
    if (!filling_.empty()) {
      start_write();
    } else {  // everything sent: buffers back to their working size
      shrink_if_large(sending_);
      shrink_if_large(filling_);
    }
    if (close_after_write_) {
      if (unsent() == 0) close();
      return;
    }
    if (forward_) {
      if (forward_->upstream_paused && unsent() < server_.options_.output_soft_limit) {
        forward_->upstream_paused = false;
        read_upstream();
      }
      return close_if_drained();  // a reply just went out: the moment a drained connection may close
    }
    if (paused_ && unsent() < server_.options_.output_soft_limit) resume();
  }

  /// A write ended while frozen: flushing goes on until stop_flushing();
  /// a write it stopped keeps its unsent rest in front of the output.
  void on_written_frozen(error_code ec, std::size_t n) {
    if (ec == asio::error::operation_aborted) {
      sending_.drop_front(n);
      return;
    }
    sending_.clear();
    ++activity_;
    if (ec) return close();
    if (freeze_state_ == Freeze::Flushing && !filling_.empty()) return start_write();
    if (reading_) cancel_operations();
  }

  Worker& worker_;
  Impl& server_;
  Listener& listener_;
  std::shared_ptr<ModuleSlot> slot_;  ///< this connection's own: keeps a removed module alive until it closes
  tcp::socket socket_;
  const api::ConnectionId id_;
  Bytes input_;            ///< [begin_, size()) is read and not consumed yet
  std::size_t begin_ = 0;
  Bytes filling_;          ///< what the module writes; never being sent
  Bytes sending_;          ///< what an async write is sending; untouched until it completes
  /// input_, filling_ and sending_'s capacities: what the budget has for
  /// this connection. Written on this thread; read by others' evictions.
  std::atomic<std::uint64_t> held_{0};
  std::atomic<bool> evicting_{false};
  std::uint64_t written_since_room_ = 0;  ///< bytes written since the last has_room()
  bool room_refused_ = false;             ///< has_room() said no during this call
  std::uint64_t over_hard_limit_ = 0;     ///< unsent bytes that passed the hard limit; then closes
  // Idle timeout: activity_ counts reads and writes; a sweep that sees it
  // unchanged since quiet_since_ for `timeout` closes the connection.
  std::uint64_t activity_ = 0;
  std::uint64_t seen_activity_ = 0;
  Clock::time_point quiet_since_;
  // Waiting for memory.
  std::unique_ptr<asio::steady_timer> memory_timer_;
  std::chrono::milliseconds memory_retry_{0};
  Clock::time_point waiting_since_;
  bool waiting_for_memory_ = false;
  bool close_after_write_ = false;
  bool reading_ = false;
  bool writing_ = false;
  bool paused_ = false;
  bool connected_ = false;
  bool closed_ = false;
  /// Hot restart: Flushing after freeze() (writes go on, no reads or
  /// calls), Stopped after stop_flushing() (nothing goes on).
  enum class Freeze { None, Flushing, Stopped };
  Freeze freeze_state_ = Freeze::None;
  std::shared_ptr<Connection> held_frozen_;  ///< itself, while frozen: nothing else holds it then
  std::unique_ptr<Forward> forward_;  ///< set once the module moved (forward_to): a proxy from then on
  std::shared_ptr<Connection> awaiting_forward_;  ///< itself, from a call that found the module moved to forward_to()
};

StreamServer::Impl::Room StreamServer::Impl::make_room(Connection& asker, std::uint64_t bytes) {
  std::lock_guard lock(registry_mutex_);
  if (budget_.try_reserve(bytes)) return Room::Reserved;
  std::vector<Holder> holders;
  std::vector<Connection*> connections;
  holders.reserve(registry_.size());
  connections.reserve(registry_.size());
  std::size_t asker_index = SIZE_MAX;
  for (Connection* connection : registry_) {
    if (connection == &asker) asker_index = connections.size();
    holders.push_back(Holder{connection->held(), connection->evicting()});
    connections.push_back(connection);
  }
  const Eviction plan = plan_eviction(budget_.used(), budget_.budget(), bytes, holders, asker_index);
  for (const std::size_t i : plan.close) {
    Connection* victim = connections[i];
    victim->mark_evicting();
    // Its own thread closes it; the pointer is checked there first, since
    // it may be gone (and its address reused) by then.
    Worker& owner = victim->worker();
    asio::post(owner.io, [&owner, victim, id = victim->id()] {
      if (owner.connections.contains(victim) && victim->id() == id) victim->evict();
    });
  }
  if (plan.asker_closes) {
    asker.mark_evicting();
    return Room::CloseAsker;
  }
  return Room::Wait;
}

void StreamServer::Impl::Worker::accept(Acceptor& acceptor) {
  acceptor.socket.async_accept(io, [this, &acceptor](error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.socket.is_open()) return;
    Listener& listener = acceptor.listener;
    if (!ec) {
      if (const auto failures = acceptor.backoff.succeeded(); failures != 0 && listener.slot)
        listener.slot->log().info("accept on {} works again, after {} failure(s) for want of file descriptors",
                                  listener.endpoint.to_string(), failures);
      admit(acceptor, std::move(socket));
    } else if (ec.category() == boost::system::system_category() && out_of_descriptors(ec.value())) {
      // The connection stays in the backlog and the socket stays readable:
      // trying again at once would spin. Wait, and let the others work.
      const auto step = acceptor.backoff.failed(Clock::now());
      if (step.log && listener.slot)
        listener.slot->log().error(
            "accept on {}: {}: out of file descriptors (RLIMIT_NOFILE, or fs.file-max); backing off {} ms, up to "
            "{} ms ({} failure(s) since this was last logged; logged at most every {} s)",
            listener.endpoint.to_string(), ec.message(), step.delay.count(), AcceptBackoff::kMost.count(),
            step.failures, kLogEvery.count());
      acceptor.backoff_timer.expires_after(step.delay);
      acceptor.backoff_timer.async_wait([this, &acceptor](error_code wait_ec) {
        if (!wait_ec && acceptor.socket.is_open() && !server.stopping_ && !acceptor.listener.closed) accept(acceptor);
      });
      return;
    }
    if (!server.stopping_ && !listener.closed) accept(acceptor);
  });
}

void StreamServer::Impl::Worker::admit(Acceptor& acceptor, tcp::socket socket) {
  Listener& listener = acceptor.listener;
  ++listener.accepted;
  if (!listener.moved_to.empty()) {
    if (!listener.forward_new || Clock::now() >= listener.forward_until)
      return redirect(socket, "-MOVED 0 " + listener.moved_to + "\r\n");
    if (listener.open.load() >= listener.maxclients.load()) return refuse(acceptor, socket);
    ++listener.open;  // forwarded from this thread: the upstream connection lives here too
    std::make_shared<Connection>(*this, listener, listener.slot, std::move(socket))
        ->start_forwarding(listener.moved_to, listener.forward_until);
    return;
  }
  if (listener.open.load() >= listener.maxclients.load()) return refuse(acceptor, socket);
  ++listener.open;
  Worker& owner = server.next_worker();
  if (&owner == this) {
    std::make_shared<Connection>(*this, listener, listener.slot, std::move(socket))->start();
    return;
  }
  error_code ec;
  const tcp protocol = socket.local_endpoint(ec).protocol();
  error_code released;
  const auto fd = socket.release(released);  // deregistered here, on our thread
  if (released) {
    --listener.open;
    return;
  }
  asio::post(owner.io, [&owner, &listener, slot = listener.slot, fd, protocol] {
    owner.adopt(listener, slot, fd, protocol);
  });
}

void StreamServer::Impl::Worker::redirect(tcp::socket& socket, std::string_view reply) {
  const int fd = socket.native_handle();
  // Redis's way: the reply, written without waiting (a fresh socket's
  // buffer takes it), then close.
  if (!reply.empty()) (void)::send(fd, reply.data(), reply.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  // Take what the client sent already: closing a socket with unread bytes
  // answers with a reset, which may destroy the reply before it is read.
  char scratch[4096];
  for (int i = 0; i < 16 && ::recv(fd, scratch, sizeof scratch, MSG_DONTWAIT) > 0; ++i) {
  }
  error_code ignored;
  socket.shutdown(tcp::socket::shutdown_send, ignored);
  socket.close(ignored);
}

void StreamServer::Impl::Worker::refuse(Acceptor& acceptor, tcp::socket& socket) {
  Listener& listener = acceptor.listener;
  const auto refused = ++listener.refused;
  redirect(socket, listener.slot ? listener.slot->refusal_reply(api::Refusal::TooManyClients) : std::string());
  const auto now = Clock::now();
  if (listener.slot && (!acceptor.refusal_logged || now - *acceptor.refusal_logged >= kLogEvery)) {
    listener.slot->log().warn("maxclients ({}) reached on {}: refusing new connections ({} since this was last "
                              "logged; logged at most every {} s)",
                              listener.maxclients.load(), listener.endpoint.to_string(),
                              refused - acceptor.refused_logged, kLogEvery.count());
    acceptor.refusal_logged = now;
    acceptor.refused_logged = refused;
  }
}

void StreamServer::Impl::Worker::adopt(Listener& listener, std::shared_ptr<ModuleSlot> slot,
                                       tcp::socket::native_handle_type fd, tcp protocol) {
  tcp::socket socket(io);
  error_code ec;
  socket.assign(protocol, fd, ec);  // registered with this worker's reactor, on its thread
  if (ec) {
    ::close(fd);
    --listener.open;
    return;
  }
  if (server.stopping_ || listener.closed) {  // closed by ~socket
    --listener.open;
    return;
  }
  std::make_shared<Connection>(*this, listener, std::move(slot), std::move(socket))->start();
}

void StreamServer::Impl::Worker::close_idle() {
  for (auto& acceptor : acceptors) {
    error_code ignored;
    acceptor->socket.close(ignored);
    acceptor->backoff_timer.cancel();
  }
  // close() may end a connection's last handler, which erases it: iterate a copy.
  const std::vector<Connection*> open(connections.begin(), connections.end());
  for (Connection* connection : open) connection->close_if_idle();
}

void StreamServer::Impl::Worker::close_module(const std::string& module) {
  for (auto& acceptor : acceptors) {
    if (acceptor->listener.module != module) continue;
    error_code ignored;
    acceptor->socket.close(ignored);
    acceptor->backoff_timer.cancel();
    acceptor->listener.slot.reset();  // no new connection can take it now
  }
  const std::vector<Connection*> open(connections.begin(), connections.end());
  for (Connection* connection : open)
    if (connection->listener().module == module) connection->close();
}

void StreamServer::Impl::Worker::module_moved(const std::string& module, const MovedModule& moved) {
  const auto until = Clock::now() + moved.drain;
  for (auto& acceptor : acceptors) {
    Listener& l = acceptor->listener;
    if (l.module != module || l.closed) continue;
    l.moved_to = moved.redirect;
    l.forward_new = moved.forward_new;
    l.forward_until = until;
  }
  // Each goes on through the module's new home until the drain ends, then
  // closes when nothing is in progress; the calls that found the module
  // gone kept their input, which goes first.
  const std::vector<Connection*> open(connections.begin(), connections.end());
  for (Connection* connection : open)
    if (connection->listener().module == module) connection->forward_to(moved.redirect, until, moved.adopt);
}

void StreamServer::Impl::Worker::close_all() {
  sweeping = false;
  sweep_timer.cancel();
  const std::vector<Connection*> open(connections.begin(), connections.end());
  for (Connection* connection : open) connection->close();
}

void StreamServer::Impl::Worker::sweep() {
  if (server.any_timeout_) {
    const auto now = Clock::now();
    const std::vector<Connection*> open(connections.begin(), connections.end());
    for (Connection* connection : open) connection->close_if_idle_since(now);
  }
  sweep_timer.expires_after(kSweepEvery);
  sweep_timer.async_wait([this](error_code ec) {
    if (!ec && sweeping) sweep();
  });
}

void StreamServer::Impl::Worker::freeze() {
  is_frozen = true;
  for (auto& acceptor : acceptors) {  // the backlog keeps what arrives meanwhile
    error_code ignored;
    acceptor->socket.cancel(ignored);
    acceptor->backoff_timer.cancel();
  }
  for (Connection* connection : std::vector<Connection*>(connections.begin(), connections.end())) connection->freeze();
}

bool StreamServer::Impl::Worker::writing() const {
  return std::any_of(connections.begin(), connections.end(), [](const Connection* c) { return c->writing(); });
}

void StreamServer::Impl::Worker::stop_flushing() {
  for (Connection* connection : std::vector<Connection*>(connections.begin(), connections.end()))
    connection->stop_flushing();
}

bool StreamServer::Impl::Worker::capture(std::vector<FrozenConnection>& out) {
  for (Connection* connection : connections)
    if (!connection->still()) return false;
  for (Connection* connection : connections)
    if (auto frozen = connection->frozen()) out.push_back(std::move(*frozen));
  return true;
}

void StreamServer::Impl::Worker::thaw() {
  is_frozen = false;
  for (auto& acceptor : acceptors)
    if (acceptor->socket.is_open() && !acceptor->listener.closed) accept(*acceptor);
  for (Connection* connection : std::vector<Connection*>(connections.begin(), connections.end())) connection->thaw();
}

void StreamServer::Impl::Worker::adopt_frozen(Listener& listener, std::shared_ptr<ModuleSlot> slot,
                                              FrozenConnection frozen, tcp protocol) {
  tcp::socket socket(io);
  error_code ec;
  socket.assign(protocol, frozen.fd, ec);
  if (ec) {
    ::close(frozen.fd);
    --listener.open;
    return;
  }
  auto connection = std::make_shared<Connection>(*this, listener, std::move(slot), std::move(socket), frozen.id);
  if (frozen.close_after_write) connection->close_after_write();
  connection->start_with(frozen.input, frozen.output);
}

StreamServer::StreamServer(StreamOptions options, std::shared_ptr<spdlog::logger> log)
    : impl_(std::make_unique<Impl>(options, std::move(log))) {}

StreamServer::~StreamServer() { stop(std::chrono::milliseconds(0)); }

Result<Endpoint> StreamServer::Impl::add_listener(const std::string& module, const std::shared_ptr<ModuleSlot>& slot,
                                                  const Endpoint& endpoint,
                                                  const std::function<Result<void>(tcp::acceptor&)>& open,
                                                  const std::string& moved_to) {
  Worker& first = *workers_.front();
  auto listener = std::make_unique<Listener>();
  listener->slot = slot;
  listener->endpoint = endpoint;
  listener->module = module;
  listener->moved_to = moved_to;  // before its first accept
  const auto configured = options_.module_clients.find(listener->module);
  listener->limits = configured != options_.module_clients.end() ? configured->second : options_.clients;
  listener->maxclients = std::min(listener->limits.maxclients, maxclients_cap_.load());
  if (listener->limits.timeout.count() > 0) any_timeout_ = true;
  Listener& bound_listener = *listener;
  // The acceptor belongs to worker 0; once that runs, only its thread may
  // touch its reactor, so the bind happens there.
  auto bind = [&]() -> Result<Endpoint> {
    auto acceptor = std::make_unique<Acceptor>(bound_listener, first.io);
    if (auto opened = open(acceptor->socket); !opened) return opened.error();
    error_code ec;
    const auto bound = acceptor->socket.local_endpoint(ec);
    bound_listener.endpoint = Endpoint{bound.address().to_string(), bound.port()};
    first.acceptors.push_back(std::move(acceptor));
    if (serving_) first.accept(*first.acceptors.back());
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
  return impl_->add_listener(slot->name(), slot, endpoint, [&](tcp::acceptor& acceptor) -> Result<void> {
    if (const auto failed = bind_and_listen(acceptor, endpoint)) return fail(failed->step, failed->reason);
    return {};
  });
}

Result<std::vector<Endpoint>> StreamServer::listen_module(const std::vector<Endpoint>& endpoints,
                                                          std::shared_ptr<ModuleSlot> slot) {
  return impl_->listen_on(slot->name(), endpoints, slot, {});
}

Result<std::vector<Endpoint>> StreamServer::listen_moved(const std::string& module, const std::vector<Endpoint>& endpoints,
                                                         const std::string& redirect) {
  return impl_->listen_on(module, endpoints, nullptr, redirect);
}

Result<std::vector<Endpoint>> StreamServer::Impl::listen_on(const std::string& module,
                                                            const std::vector<Endpoint>& endpoints,
                                                            const std::shared_ptr<ModuleSlot>& slot,
                                                            const std::string& moved_to) {
  std::vector<Adopted> adopted;
  {
    std::lock_guard lock(adopted_mutex_);
    if (const auto it = adopted_.find(module); it != adopted_.end())
      for (auto& socket : it->second) {
        socket.claimed = true;
        adopted.push_back(socket);
      }
  }
  const auto log = [&](const std::string& line) {
    if (slot) slot->log().info("{}", line);
    else log_->info("{}: {}", module, line);
  };
  if (slot)  // the module came back to the listeners it left: they serve it again
    if (auto revived = revive(slot); !revived.empty()) return revived;
  std::vector<Endpoint> serving;
  if (adopted.empty()) {
    for (const auto& endpoint : endpoints) {
      auto bound = add_listener(module, slot, endpoint, [&](tcp::acceptor& acceptor) -> Result<void> {
        if (const auto failed = bind_and_listen(acceptor, endpoint))
          return Error{module, {}, endpoint.to_string(), Phase::Start, "listen: " + failed->step + ": " + failed->reason.message()};
        return {};
      }, moved_to);
      if (!bound) return std::move(bound).error();
      serving.push_back(bound.value());
    }
    return serving;
  }
  std::string instead;
  for (const auto& endpoint : endpoints) instead += (instead.empty() ? "" : ", ") + endpoint.to_string();
  for (const auto& socket : adopted) {
    const auto fail = [&](const std::string& why) {
      return Error{module, {}, socket.endpoint.to_string(), Phase::Start,
                   "listen: socket handed over at start (fd " + std::to_string(socket.fd) + "): " + why};
    };
    // A dup, so that closing the module's listener (a removal) leaves the
    // socket open for the module's return, with connections in its backlog.
    const int fd = ::fcntl(socket.fd, F_DUPFD_CLOEXEC, 3);
    if (fd < 0) return fail(std::strerror(errno));
    auto served = add_listener(module, slot, socket.endpoint, [&](tcp::acceptor& acceptor) -> Result<void> {
      error_code ec;
      acceptor.assign(socket.protocol, fd, ec);
      if (ec) {
        ::close(fd);
        return fail(ec.message());
      }
      return {};
    }, moved_to);
    if (!served) return std::move(served).error();
    log("serving the socket handed over at start on " + served->to_string() + " (fd " + std::to_string(socket.fd) + ")" +
        (instead.empty() ? "" : ", instead of binding " + instead));
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

void StreamServer::module_moved(std::string_view module, const MovedModule& moved) {
  Impl& s = *impl_;
  if (!s.serving_) return;
  for (auto& worker : s.workers_) {
    std::promise<void> done;
    asio::post(worker->io, [&w = *worker, name = std::string(module), &moved, &done] {
      w.module_moved(name, moved);
      done.set_value();
    });
    done.get_future().wait();
  }
}

void StreamServer::cap_maxclients(std::uint32_t cap) {
  impl_->maxclients_cap_ = cap;
  std::lock_guard lock(impl_->listeners_mutex_);
  for (auto& listener : impl_->listeners_) listener->maxclients = std::min(listener->limits.maxclients, cap);
}

void StreamServer::serve() {
  impl_->serving_ = true;
  for (auto& worker : impl_->workers_) {
    for (auto& acceptor : worker->acceptors) worker->accept(*acceptor);
    worker->sweep();  // arms its timer; runs on the worker's thread from now on
    worker->thread = DeadlineThread([&io = worker->io] {
      name_this_thread("molt-io");
      io.run();
    });
  }
}

bool StreamServer::stop(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  s.join_reapers();  // before the modules stop: an instance being freed runs its image's code
  if (!s.serving_) {
    s.join_adopters();
    return true;
  }
  s.serving_ = false;
  s.stopping_ = true;  // from now on every connection closes after its current reply, and none is adopted
  s.join_adopters();   // while the workers run: each posts its result to one
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
  // A thread still inside a module's on_data will not run close_all: it is
  // given up on after a second.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  bool all = true;
  for (auto& worker : s.workers_) all = worker->thread.join_until(deadline) && all;
  if (!all) s.log_->warn("streams: an I/O thread is still inside a module call; not waiting for it");
  return all;
}

Result<FrozenStreams> StreamServer::freeze(std::chrono::milliseconds flush,
                                          std::chrono::steady_clock::time_point deadline) {
  Impl& s = *impl_;
  const auto unanswered = [&](const char* step) {
    thaw();
    return Error{"(host)", {}, {}, Phase::HotRestart,
                 std::string("freezing connections: an I/O thread did not ") + step +
                     " in time (it is inside a module call); connections thawed"};
  };
  // On every worker, and worker 0 (which accepts, and posts new connections
  // to the others) first: what it posted before it froze reaches a worker
  // before that worker's freeze.
  // Each asks with a promise of its own: a worker that answers after the
  // deadline must not touch this frame.
  const auto on_each = [&](void (*step)(Impl::Worker&)) {
    for (auto& worker : s.workers_) {
      auto done = std::make_shared<std::promise<void>>();
      auto answered = done->get_future();
      asio::post(worker->io, [&w = *worker, step, done] {
        step(w);
        done->set_value();
      });
      if (answered.wait_until(deadline) != std::future_status::ready) return false;
    }
    return true;
  };
  if (!s.serving_) return Error{"(host)", {}, {}, Phase::HotRestart, "freezing connections: the server does not serve"};
  if (!on_each([](Impl::Worker& w) { w.freeze(); })) return unanswered("stop reading");
  // The writes in progress go on until they are done, or until `flush`.
  const auto flush_until = std::min(deadline, std::chrono::steady_clock::now() + flush);
  while (std::chrono::steady_clock::now() < flush_until) {
    bool writing = false;
    for (auto& worker : s.workers_) {
      auto done = std::make_shared<std::promise<bool>>();
      auto answered = done->get_future();
      asio::post(worker->io, [&w = *worker, done] { done->set_value(w.writing()); });
      if (answered.wait_until(flush_until) != std::future_status::ready || answered.get()) {
        writing = true;
        break;
      }
    }
    if (!writing) break;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  if (!on_each([](Impl::Worker& w) { w.stop_flushing(); })) return unanswered("stop writing");
  FrozenStreams frozen;
  for (auto& worker : s.workers_) {
    while (true) {  // until the cancelled operations have reported back
      struct Captured {
        std::vector<FrozenConnection> connections;
        bool complete = false;
      };
      auto done = std::make_shared<std::promise<Captured>>();
      auto answered = done->get_future();
      asio::post(worker->io, [&w = *worker, done] {
        Captured captured;
        captured.complete = w.capture(captured.connections);
        done->set_value(std::move(captured));
      });
      if (answered.wait_until(deadline) != std::future_status::ready) return unanswered("hand over its connections");
      if (Captured captured = answered.get(); captured.complete) {
        for (auto& c : captured.connections) frozen.connections.push_back(std::move(c));
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline) return unanswered("hand over its connections");
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }
  {
    auto done = std::make_shared<std::promise<std::vector<FrozenListener>>>();
    auto answered = done->get_future();
    Impl::Worker& first = *s.workers_.front();
    asio::post(first.io, [&first, done] {
      std::vector<FrozenListener> listeners;
      for (auto& acceptor : first.acceptors)
        if (acceptor->socket.is_open() && !acceptor->listener.closed)
          listeners.push_back({acceptor->listener.module, acceptor->socket.native_handle(), acceptor->listener.endpoint});
      done->set_value(std::move(listeners));
    });
    if (answered.wait_until(deadline) != std::future_status::ready) return unanswered("hand over its listeners");
    frozen.listeners = answered.get();
  }
  return frozen;
}

void StreamServer::thaw() {
  for (auto& worker : impl_->workers_) asio::post(worker->io, [&w = *worker] { w.thaw(); });
}

Result<void> StreamServer::adopt_connection(FrozenConnection frozen) {
  return impl_->adopt(std::move(frozen), "from the previous moltd", true);
}

bool StreamServer::may_be_own_connection(api::ConnectionId id) {
  const api::ConnectionId next = Impl::next_id_.load();
  return id >> 32 == next >> 32 && id >= next;  // one it will give (those it gave are checked by the module's slot)
}

Result<void> StreamServer::adopt_forwarded(const std::string& module, FileDescriptor fd, api::ConnectionId id) {
  if (may_be_own_connection(id))
    return Error{module, {}, {}, Phase::Handoff,
                 "connection " + std::to_string(id) + " forwarded by the source: an id this moltd may give its own"};
  return impl_->adopt(FrozenConnection{module, fd.release(), id, {}, {}, false}, "forwarded by the source", false);
}

Result<void> StreamServer::Impl::adopt(FrozenConnection frozen, const std::string& whence, bool advance_ids) {
  Impl& s = *this;
  const auto fail = [&](const std::string& why) {
    ::close(frozen.fd);
    return Error{frozen.module, {}, {}, advance_ids ? Phase::Start : Phase::Handoff,
                 "connection " + std::to_string(frozen.id) + " " + whence + ": " + why};
  };
  Impl::Listener* listener = nullptr;
  {
    std::lock_guard lock(s.listeners_mutex_);
    for (auto& l : s.listeners_)
      if (l->module == frozen.module && !l->closed && l->slot) {
        listener = l.get();
        break;
      }
  }
  if (listener == nullptr) return fail("module " + frozen.module + " does not listen here");
  sockaddr_storage local{};
  socklen_t length = sizeof local;
  if (::getsockname(frozen.fd, reinterpret_cast<sockaddr*>(&local), &length) != 0)
    return fail(std::string("getsockname: ") + std::strerror(errno));
  const tcp protocol = local.ss_family == AF_INET6 ? tcp::v6() : tcp::v4();
  if (!advance_ids) {
    const auto known = listener->slot->connections();
    if (std::binary_search(known.begin(), known.end(), frozen.id)) return fail("a connection here has that id");
  }
  for (api::ConnectionId next = Impl::next_id_.load(); advance_ids && next <= frozen.id;)  // new ones get ids after it
    if (Impl::next_id_.compare_exchange_weak(next, frozen.id + 1)) break;
  ++listener->open;
  Impl::Worker& owner = *s.workers_[frozen.id % s.workers_.size()];
  asio::post(owner.io, [&owner, listener, slot = listener->slot, frozen = std::move(frozen), protocol]() mutable {
    owner.adopt_frozen(*listener, std::move(slot), std::move(frozen), protocol);
  });
  return {};
}

void StreamServer::carry_over(const ListenerInfo& counted) {
  std::lock_guard lock(impl_->listeners_mutex_);
  for (auto& listener : impl_->listeners_) {
    if (listener->closed || listener->module != counted.module || listener->endpoint.to_string() != counted.endpoint.to_string())
      continue;
    listener->accepted += counted.accepted;
    listener->refused += counted.refused;
    for (std::size_t i = 0; i < kLimitCloses; ++i) listener->closed_by_limit[i] += counted.closed_by_limit[i];
    return;
  }
}

std::vector<ListenerInfo> StreamServer::listeners() const {
  std::vector<ListenerInfo> out;
  std::lock_guard lock(impl_->listeners_mutex_);
  for (const auto& listener : impl_->listeners_) {
    if (listener->closed) continue;
    ListenerInfo info{listener->module, listener->endpoint, listener->open.load(), listener->accepted.load(),
                      listener->maxclients.load(), listener->refused.load()};
    for (std::size_t i = 0; i < kLimitCloses; ++i) info.closed_by_limit[i] = listener->closed_by_limit[i].load();
    out.push_back(std::move(info));
  }
  return out;
}

std::uint64_t StreamServer::buffered_bytes() const { return impl_->budget_.used(); }

std::uint64_t StreamServer::memory_budget() const { return impl_->budget_.budget(); }


}  // namespace molt::host
