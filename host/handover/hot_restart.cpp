#include "molt/host/handover/hot_restart.hpp"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "molt/host/common/fault.hpp"
#include "molt/host/common/fd_passing.hpp"
#include "molt/host/common/sha256.hpp"
#include "molt/host/net/http_server.hpp"
#include "molt/host/net/stream_server.hpp"
#include "molt/host/release/release_handler.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "molt/host/slot/precopy.hpp"
#include "molt/host/slot/upgrade_access.hpp"
#include "molt/host/upgrade/transaction.hpp"
#include "molt/host/slot/state_hooks.hpp"
#include "molt/types.hpp"

extern char** environ;

namespace molt::host {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string errno_text(int error) { return std::strerror(error); }

std::optional<std::string> send_all(int fd, std::string_view bytes, Clock::time_point deadline) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (auto why = wait_for_socket(fd, POLLOUT, deadline, "sending")) return why;
      continue;
    }
    return n < 0 && errno == EPIPE ? std::string("the other process has gone") : "send: " + errno_text(errno);
  }
  return std::nullopt;
}

std::optional<std::string> receive_all(int fd, char* out, std::size_t size, Clock::time_point deadline) {
  while (size > 0) {
    const ssize_t n = ::recv(fd, out, size, MSG_DONTWAIT);
    if (n > 0) {
      out += n;
      size -= static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return std::string("the other process has gone");
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (auto why = wait_for_socket(fd, POLLIN, deadline, "waiting for the other process")) return why;
      continue;
    }
    return "recv: " + errno_text(errno);
  }
  return std::nullopt;
}

void put_length(char* out, std::uint32_t length) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((length >> (8 * i)) & 0xff);
}

std::uint32_t get_length(const unsigned char* in) {
  return in[0] | (in[1] << 8) | (in[2] << 16) | (static_cast<std::uint32_t>(in[3]) << 24);
}

/// A module's whole state as its save_state writes it, sent in frames of
/// 1 MiB as each fills: the successor loads them while the rest is being
/// saved, so the freeze costs about the longer of the two, not their sum.
/// Each frame must be taken within `step` (the successor reads on).
class FrameSink final : public std::streambuf {
 public:
  FrameSink(int fd, std::chrono::milliseconds step) : fd_(fd), step_(step) { setp(buffer_.data() + 4, buffer_.data() + buffer_.size()); }

  /// The last frame and the empty one that ends the state; why not.
  [[nodiscard]] std::optional<std::string> finish() {
    if (!flush()) return failure_;
    char end[4];
    put_length(end, 0);
    if (auto why = send_all(fd_, std::string_view(end, 4), Clock::now() + step_)) return why;
    return std::nullopt;
  }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return sent_ + static_cast<std::uint64_t>(pptr() - pbase()); }
  [[nodiscard]] const std::optional<std::string>& failure() const noexcept { return failure_; }

 protected:
  int_type overflow(int_type ch) override {
    if (!flush()) return traits_type::eof();
    if (!traits_type::eq_int_type(ch, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(ch);
      pbump(1);
    }
    return traits_type::not_eof(ch);
  }

 private:
  bool flush() {
    if (failure_) return false;
    const auto size = static_cast<std::uint32_t>(pptr() - pbase());
    if (size == 0) return true;
    put_length(buffer_.data(), size);
    if (auto why = send_all(fd_, std::string_view(buffer_.data(), size + 4), Clock::now() + step_)) {
      failure_ = std::move(why);
      return false;
    }
    sent_ += size;
    setp(buffer_.data() + 4, buffer_.data() + buffer_.size());
    return true;
  }

  int fd_;
  std::chrono::milliseconds step_;
  std::vector<char> buffer_ = std::vector<char>(4 + (std::size_t{1} << 20));
  std::uint64_t sent_ = 0;
  std::optional<std::string> failure_;
};

/// The successor's end of a FrameSink: the frames read from the socket as
/// load_state asks for bytes, up to the empty frame (end of stream). Tells
/// its position, so the reader's bound shrinks as it reads.
class FrameSource final : public std::streambuf {
 public:
  FrameSource(int fd, std::chrono::milliseconds step) : fd_(fd), step_(step) {}

  /// Whether the empty frame came (after a load, checked with sgetc()).
  [[nodiscard]] bool ended() const noexcept { return ended_; }
  [[nodiscard]] const std::optional<std::string>& failure() const noexcept { return failure_; }
  [[nodiscard]] std::uint64_t bytes() const noexcept { return received_; }

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    if (ended_ || failure_) return traits_type::eof();
    unsigned char frame[4];
    if (auto why = receive_all(fd_, reinterpret_cast<char*>(frame), 4, Clock::now() + step_)) return fail(*why);
    const std::uint32_t size = get_length(frame);
    if (size == 0) {
      ended_ = true;
      return traits_type::eof();
    }
    if (size > kMaxStateFrame)
      return fail("a state frame of " + std::to_string(size) + " bytes, over the bound of " + std::to_string(kMaxStateFrame));
    buffer_.resize(size);
    if (auto why = receive_all(fd_, buffer_.data(), size, Clock::now() + step_)) return fail(*why);
    received_ += size;
    setg(buffer_.data(), buffer_.data(), buffer_.data() + size);
    return traits_type::to_int_type(*gptr());
  }
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode which) override {
    if (off != 0 || dir != std::ios_base::cur || (which & std::ios_base::in) == 0) return pos_type(off_type(-1));
    return pos_type(static_cast<off_type>(received_) - (egptr() - gptr()));
  }

 private:
  int_type fail(std::string why) {
    failure_ = std::move(why);
    return traits_type::eof();
  }

  int fd_;
  std::chrono::milliseconds step_;
  std::vector<char> buffer_;
  std::uint64_t received_ = 0;
  bool ended_ = false;
  std::optional<std::string> failure_;
};

std::string micros_text(std::chrono::microseconds d) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f ms", static_cast<double>(d.count()) / 1000.0);
  return text;
}

}  // namespace

// --- channel -------------------------------------------------------------------

Json binary(std::string_view bytes) { return Json::binary(std::vector<std::uint8_t>(bytes.begin(), bytes.end())); }

std::string from_binary(const Json& value) {
  if (!value.is_binary()) return {};
  const auto& bytes = value.get_binary();
  return std::string(bytes.begin(), bytes.end());
}


std::optional<std::string> HandoverChannel::send(Json message, std::span<const int> fds, Clock::time_point deadline) {
  if (!fds.empty()) message["fds"] = fds.size();
  const std::vector<std::uint8_t> body = Json::to_cbor(message);
  if (body.size() > kMaxHandoverMessage)
    return "message of " + std::to_string(body.size()) + " bytes, over the bound of " +
           std::to_string(kMaxHandoverMessage);
  char frame[4];
  put_length(frame, static_cast<std::uint32_t>(body.size()));
  if (auto why = send_all(socket_.get(), std::string_view(frame, 4), deadline)) return why;
  if (auto why = send_all(socket_.get(), std::string_view(reinterpret_cast<const char*>(body.data()), body.size()),
                          deadline))
    return why;
  if (!fds.empty()) return send_descriptors(socket_.get(), fds, deadline);
  return std::nullopt;
}

Result<Json> HandoverChannel::receive(Clock::time_point deadline, std::vector<FileDescriptor>* fds) {
  const auto fail = [](std::string why) { return Error{"(host)", {}, {}, Phase::HotRestart, std::move(why)}; };
  unsigned char frame[4];
  if (auto why = receive_all(socket_.get(), reinterpret_cast<char*>(frame), 4, deadline)) return fail(*why);
  const std::uint32_t length = get_length(frame);
  if (length > max_message_)
    return fail("a message of " + std::to_string(length) + " bytes announced, over the bound of " +
                std::to_string(max_message_) + ": not a moltd speaking this protocol");
  std::string body(length, '\0');
  if (auto why = receive_all(socket_.get(), body.data(), length, deadline)) return fail(*why);
  Json message = Json::from_cbor(body, true, false);
  if (!message.is_object() || !message.contains("step") || !message["step"].is_string())
    return fail("a message that is not one of this protocol (a CBOR object with a \"step\")");
  const std::size_t count = message.value("fds", std::size_t{0});
  if (count > 0) {
    std::vector<FileDescriptor> received;
    if (auto why = receive_descriptors(socket_.get(), count, received, deadline)) return fail(*why);
    if (fds != nullptr) *fds = std::move(received);
  }
  const std::string step = message["step"].get<std::string>();
  if (step == "failed" || step == "refused") return fail(step + ": " + message.value("reason", std::string("(no reason)")));
  return message;
}

// --- report --------------------------------------------------------------------

Json HotRestartReport::to_json() const {
  Json phase_list = Json::array();
  for (const auto& [name, took] : phases) phase_list.push_back({{"phase", name}, {"us", took.count()}});
  return Json{{"old_pid", old_pid},
              {"new_pid", new_pid},
              {"generation", generation},
              {"binary", binary},
              {"sha256", sha256},
              {"listeners", listeners},
              {"connections", connections},
              {"http_connections", http_connections},
              {"http_busy", http_busy},
              {"state_bytes", state_bytes},
              {"leftover_bytes", leftover_bytes},
              {"phases", phase_list}};
}

std::string HotRestartReport::summary() const {
  std::string text = "moltd pid " + std::to_string(old_pid) + " handed over to pid " + std::to_string(new_pid) +
                     " (generation " + std::to_string(generation) + ", " + binary + "): " +
                     std::to_string(listeners) + " listener(s), " + std::to_string(connections) +
                     " connection(s), " + std::to_string(http_connections) + " idle HTTP connection(s), " +
                     std::to_string(state_bytes) + " bytes of state;";
  for (const auto& [name, took] : phases) text += " " + name + " " + micros_text(took);
  return text;
}

// --- metrics -------------------------------------------------------------------

nlohmann::json metrics_counters(const ModuleTable& table, const StreamServer& streams, const HttpServer& http) {
  Json modules = Json::object();
  for (const auto& slot : table.slots()) {
    const auto durations = slot->call_durations();
    modules[slot->name()] = {{"buckets", durations.buckets},
                             {"sum_ns", durations.sum.count()},
                             {"failed_calls", slot->stats().failed_calls}};
  }
  Json listeners = Json::array();
  for (const auto& l : streams.listeners())
    listeners.push_back({{"module", l.module},
                         {"endpoint", l.endpoint.to_string()},
                         {"accepted", l.accepted},
                         {"refused", l.refused},
                         {"closed_by_limit", l.closed_by_limit}});
  return Json{{"modules", modules}, {"listeners", listeners}, {"http_refused", http.refused()}};
}

void carry_over_metrics(const nlohmann::json& counters, ModuleTable& table, StreamServer& streams, HttpServer& http) {
  const Json modules = counters.value("modules", Json::object());  // items() must not outlive it
  for (const auto& [name, m] : modules.items()) {
    const auto slot = table.find(name);
    if (!slot) continue;
    DurationHistogram::Counts durations;
    const auto buckets = m.value("buckets", std::vector<std::uint64_t>{});
    for (std::size_t i = 0; i < durations.buckets.size() && i < buckets.size(); ++i) durations.buckets[i] = buckets[i];
    durations.sum = std::chrono::nanoseconds(m.value("sum_ns", std::int64_t{0}));
    slot->carry_over(durations, m.value("failed_calls", std::uint64_t{0}));
  }
  for (const auto& l : counters.value("listeners", Json::array())) {
    ListenerInfo counted{};
    counted.module = l.value("module", std::string());
    const std::string endpoint = l.value("endpoint", std::string());
    const auto colon = endpoint.rfind(':');
    if (colon == std::string::npos) continue;
    counted.endpoint = Endpoint{endpoint.substr(0, colon), static_cast<std::uint16_t>(std::stoul(endpoint.substr(colon + 1)))};
    counted.accepted = l.value("accepted", std::uint64_t{0});
    counted.refused = l.value("refused", std::uint64_t{0});
    const auto closed = l.value("closed_by_limit", std::vector<std::uint64_t>{});
    for (std::size_t i = 0; i < counted.closed_by_limit.size() && i < closed.size(); ++i)
      counted.closed_by_limit[i] = closed[i];
    streams.carry_over(counted);
  }
  http.carry_over_refused(counters.value("http_refused", std::uint64_t{0}));
}

// --- the predecessor -----------------------------------------------------------

struct HotRestart::Handover {
  fs::path binary;
  pid_t pid = -1;
  std::optional<HandoverChannel> channel;
  HotRestartReport report;
  struct Module {
    std::shared_ptr<ModuleSlot> slot;
    std::optional<ModuleSlot::UpgradeAccess> access;
    std::unique_ptr<PreCopy> copy;
    bool suspended = false;
  };
  std::vector<Module> modules;
  bool streams_frozen = false;
  bool http_frozen = false;
  Clock::time_point step_started = Clock::now();
  std::optional<Clock::time_point> frozen_at;

  void phase(const char* name) {
    const auto now = Clock::now();
    report.phases.emplace_back(name, std::chrono::duration_cast<std::chrono::microseconds>(now - step_started));
    step_started = now;
  }
};

HotRestart::HotRestart(Options options, Parts parts, std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)), parts_(parts), log_(std::move(log)) {}

Result<HotRestartReport> HotRestart::run(const std::optional<fs::path>& binary) {
  std::unique_lock running(running_, std::try_to_lock);
  if (!running.owns_lock() || committed_)
    return Error{"(host)", {}, {}, Phase::HotRestart, "a hot restart is already in progress"};
  Handover h;
  h.binary = binary.value_or(options_.binary);
  h.report.old_pid = ::getpid();
  h.report.binary = h.binary.string();
  h.report.generation = options_.generation + 1;
  log_->info("hot restart: handing over to {} (generation {})", h.binary.string(), options_.generation + 1);
  auto outcome = parts_.releases.while_unchanged("hot restart", [&](std::optional<std::chrono::milliseconds> left) {
    try {  // whatever happens, the rollback below runs
      return hand_over(h, left);
    } catch (const std::exception& e) {
      return Result<void>(Error{"(host)", {}, {}, Phase::HotRestart, std::string("unexpected: ") + e.what()});
    }
  });
  if (outcome) {
    committed_ = true;
    successor_pid_ = h.pid;
    if (options_.on_committed) options_.on_committed(h.pid);
    log_->info("hot restart: {}", h.report.summary());
    return h.report;
  }
  // Before commit: the successor goes, this process goes on as it was.
  if (h.pid > 0) {
    ::kill(h.pid, SIGKILL);
    ::waitpid(h.pid, nullptr, 0);
  }
  for (auto it = h.modules.rbegin(); it != h.modules.rend(); ++it) {
    it->copy.reset();  // ends the module's transfer
    if (it->suspended) it->access->resume();
    it->access.reset();
  }
  if (h.streams_frozen) parts_.streams.thaw();
  if (h.http_frozen) parts_.http.thaw();
  Error error = std::move(outcome).error();
  error.file = h.binary.string();
  log_->error("hot restart failed, this moltd (pid {}) serves on as before: {}", ::getpid(), error.to_string());
  return error;
}

void HotRestart::exit_now() {
  log_->info("hot restart: pid {} exits; pid {} serves", ::getpid(), successor_pid_.load());
  log_->flush();
  ::_exit(0);
}

Result<void> HotRestart::hand_over(Handover& h, std::optional<std::chrono::milliseconds> probation_left) {
  const auto fail = [&](const std::string& step, const std::string& why) {
    return Error{"(host)", {}, {}, Phase::HotRestart, step + ": " + why};
  };
  const auto step_deadline = [&] { return Clock::now() + options_.step_timeout; };

  // Start the successor, its fd 3 one end of a socket pair; nothing else
  // of ours goes with it (client sockets least of all).
  std::error_code ec;
  const auto status = fs::status(h.binary, ec);
  if (ec || !fs::is_regular_file(status))
    return fail("start", h.binary.string() + ": not a regular file" + (ec ? " (" + ec.message() + ")" : ""));
  if ((status.permissions() & (fs::perms::group_write | fs::perms::others_write)) != fs::perms::none)
    return fail("start", h.binary.string() + ": writable by group or others; refusing to run it");
  h.report.sha256 = sha256_file_hex(h.binary);
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return fail("start", "socketpair: " + errno_text(errno));
  FileDescriptor ours(pair[0]), theirs(pair[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
  posix_spawn_file_actions_addclosefrom_np(&actions, 4);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGHUP, SIGTERM, SIGINT, SIGUSR2}) sigaddset(&defaults, sig);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<std::string> argv_text{h.binary.string()};
  argv_text.insert(argv_text.end(), options_.arguments.begin(), options_.arguments.end());
  argv_text.insert(argv_text.end(), {"--successor", "3"});
  std::vector<char*> argv;
  for (auto& a : argv_text) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_text;
  for (char** e = environ; *e != nullptr; ++e) env_text.emplace_back(*e);
  if (!options_.notify_socket.empty()) env_text.push_back("NOTIFY_SOCKET=" + options_.notify_socket);
  if (options_.watchdog) env_text.push_back("WATCHDOG_USEC=" + std::to_string(options_.watchdog->count()));
  std::vector<char*> envp;
  for (auto& e : env_text) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int spawned = ::posix_spawn(&h.pid, h.binary.c_str(), &actions, &attributes, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (spawned != 0) {
    h.pid = -1;
    return fail("start", h.binary.string() + ": " + errno_text(spawned));
  }
  theirs = FileDescriptor();
  h.report.new_pid = h.pid;
  h.channel.emplace(std::move(ours));
  HandoverChannel& channel = *h.channel;

  // hello
  auto hello = channel.receive(step_deadline());
  if (!hello)
    return fail("hello", "pid " + std::to_string(h.pid) + " said no hello of hot restart protocol " +
                             std::to_string(kHotRestartProtocol) + " (" + hello.error().reason + "): is " +
                             h.binary.string() + " a moltd?");
  const Json& theirs_hello = hello.value();
  const int protocol = theirs_hello.value("protocol", 0);
  const int abi = theirs_hello.value("abi", 0);
  if (theirs_hello["step"] != "hello" || protocol != kHotRestartProtocol || abi != static_cast<int>(api::kAbiVersion)) {
    const std::string why = theirs_hello.value("version", std::string("?")) + " speaks hot restart protocol " +
                            std::to_string(protocol) + " and plugin ABI " + std::to_string(abi) + "; this moltd " +
                            MOLT_VERSION + " speaks protocol " + std::to_string(kHotRestartProtocol) + " and ABI " +
                            std::to_string(api::kAbiVersion);
    (void)channel.send(Json{{"step", "refused"}, {"reason", why}}, {}, step_deadline());
    return fail("hello", "refused " + h.binary.string() + ": " + why);
  }
  Json modules = Json::object();
  for (const auto& slot : parts_.table.slots()) modules[slot->name()] = slot->running().sha256;
  Json not_started = Json::array();
  for (const auto& n : parts_.releases.not_started()) not_started.push_back({{"module", n.module}, {"reason", n.reason}});
  Json answer{{"step", "hello"},      {"protocol", kHotRestartProtocol}, {"pid", ::getpid()},
              {"generation", options_.generation + 1}, {"modules", modules}, {"not_started", not_started}};
  if (probation_left) answer["probation_left_ms"] = probation_left->count();
  const int lock[] = {options_.lock_fd};
  if (auto why = channel.send(answer, lock, step_deadline())) return fail("hello", *why);
  h.phase("hello");

  // prepare: the successor reads its configuration and checks the images.
  if (auto prepared = channel.receive(step_deadline()); !prepared)
    return fail("prepare", prepared.error().reason);
  h.phase("prepare");

  // copy: each module's state by pre-copy while it serves, a part per
  // message; the successor applies each to a fresh instance as it comes
  // (its reading is this side's backpressure).
  const PrecopyOptions& precopy = parts_.table.options().upgrade.precopy;
  const auto slots = parts_.table.slots();
  h.modules.reserve(slots.size());  // never moved: a PreCopy refers to its module's access
  for (const auto& slot : slots) {
    Handover::Module& m = h.modules.emplace_back();
    m.slot = slot;
    m.access = ModuleSlot::UpgradeAccess::take_ahead_of_snapshots(*slot, Clock::now() + options_.quiesce_timeout);
    if (!m.access) return fail("copy", slot->name() + ": an upgrade or a snapshot still ran after the quiesce timeout");
    const ImageInfo& info = slot->running().info;
    if (precopy.enabled && m.access->can_transfer()) {
      const Json about{{"module", slot->name()}, {"version", info.version.value}, {"schema", info.schema.value}};
      std::uint64_t* sent = &h.report.state_bytes;
      m.copy = std::make_unique<PreCopy>(
          *m.access,
          [&channel, about, sent, this](std::string_view bytes, api::TransferPart part) {
            Json message = about;
            message["step"] = "part";
            message["kind"] = static_cast<int>(part);
            message["bytes"] = binary(bytes);
            *sent += bytes.size();
            return channel.send(std::move(message), {}, Clock::now() + options_.step_timeout);
          },
          api::SaveTarget{info.schema, api::Direction::Same, {}}, precopy);
      if (auto ran = m.copy->run(); !ran) {
        slot->log().warn("hot restart: pre-copy failed ({}); its state is saved in the freeze", ran.error().to_string());
        m.copy.reset();  // the successor drops the parts it has when the whole state comes
      }
    }
  }
  h.phase("copy");

  // freeze: no accept, no read, no call from here until thaw or exit.
  h.frozen_at = Clock::now();
  h.streams_frozen = true;  // thawed on failure even if freeze() fails half way (it thaws itself first)
  auto streams = parts_.streams.freeze(options_.flush, step_deadline());
  if (!streams) {
    h.streams_frozen = false;
    return fail("freeze", streams.error().reason);
  }
  h.http_frozen = true;
  const HttpServer::Frozen http = parts_.http.freeze(Clock::now() + options_.flush);
  for (auto& m : h.modules) {
    if (!m.access->suspend(Clock::now() + options_.quiesce_timeout, "hot restart"))
      return fail("freeze", m.slot->name() + ": calls still in progress after " +
                                std::to_string(options_.quiesce_timeout.count()) + " ms");
    m.suspended = true;
    const ImageInfo& info = m.slot->running().info;
    Json state{{"step", "state"},
               {"module", m.slot->name()},
               {"version", info.version.value},
               {"schema", info.schema.value},
               {"host", m.slot->host_part()}};  // jobs and timers, in the same pause as the state
    if (m.copy) {  // the last part, then the host part
      if (auto finished = m.copy->finish(); !finished) return fail("freeze", finished.error().to_string());
      if (auto why = channel.send(std::move(state), {}, step_deadline())) return fail("freeze", *why);
      continue;
    }
    // The whole state, in frames after the message, loaded by the successor as they come.
    state["framed"] = true;
    if (auto why = channel.send(std::move(state), {}, step_deadline())) return fail("freeze", *why);
    FrameSink frames(channel.fd(), options_.step_timeout);
    const auto saved = m.access->save(api::SaveTarget{info.schema, api::Direction::Same, {}}, frames);
    if (frames.failure()) return fail("freeze", m.slot->name() + ": sending its state: " + *frames.failure());
    if (!saved) return fail("freeze", saved.error().to_string());
    if (auto why = frames.finish()) return fail("freeze", m.slot->name() + ": sending its state: " + *why);
    h.report.state_bytes += frames.bytes();
  }
  h.phase("freeze");

  // transfer
  Json manifest{{"step", "transfer"}, {"metrics", metrics_counters(parts_.table, parts_.streams, parts_.http)}};
  std::vector<int> fds;
  Json listeners = Json::array();
  for (const auto& l : streams->listeners) {
    listeners.push_back({{"module", l.module}, {"endpoint", l.endpoint.to_string()}});
    fds.push_back(l.fd);
  }
  manifest["listeners"] = listeners;
  manifest["http"] = http.listen_fd >= 0;
  if (http.listen_fd >= 0) fds.push_back(http.listen_fd);
  Json connections = Json::array();
  for (const auto& c : streams->connections) {
    connections.push_back({{"module", c.module},
                           {"id", c.id},
                           {"input", binary(c.input)},
                           {"output", binary(c.output)},
                           {"close_after_write", c.close_after_write}});
    h.report.leftover_bytes += c.input.size() + c.output.size();
    fds.push_back(c.fd);
  }
  manifest["connections"] = connections;
  Json http_connections = Json::array();
  for (const auto& [fd, input] : http.connections) {
    http_connections.push_back({{"input", binary(input)}});
    h.report.leftover_bytes += input.size();
    fds.push_back(fd);
  }
  manifest["http_connections"] = http_connections;
  h.report.listeners = streams->listeners.size();
  h.report.connections = streams->connections.size();
  h.report.http_connections = http.connections.size();
  h.report.http_busy = http.busy;
  if (auto why = channel.send(std::move(manifest), fds, step_deadline())) return fail("transfer", *why);
  h.phase("transfer");

  // adopt: the successor starts the modules from their states, on our sockets.
  if (auto ready = channel.receive(step_deadline()); !ready) return fail("adopt", ready.error().reason);
  h.phase("adopt");

  // commit: the point of no return is the successor's "serving". Until it
  // says so it is killed on any failure and this process resumes.
  if (auto why = channel.send(Json{{"step", "commit"}}, {}, step_deadline())) return fail("commit", *why);
  auto serving = channel.receive(step_deadline());
  if (!serving) return fail("commit", "the successor did not say it serves: " + serving.error().reason);
  h.phase("commit");
  h.report.phases.emplace_back("frozen",
                               std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - *h.frozen_at));
  return {};
}

// --- the successor -------------------------------------------------------------

namespace {
constexpr std::chrono::seconds kSuccessorWait{60};  ///< for the predecessor's next message (it may pre-copy a while)
}

Result<Successor::Hello> Successor::hello() {
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  Json mine{{"step", "hello"},   {"protocol", kHotRestartProtocol}, {"abi", api::kAbiVersion},
            {"version", std::string("moltd ") + MOLT_VERSION}, {"pid", ::getpid()}};
  if (auto why = channel_.send(mine, {}, deadline)) return Error{"(host)", {}, {}, Phase::HotRestart, "hello: " + *why};
  std::vector<FileDescriptor> fds;
  auto answer = channel_.receive(deadline, &fds);
  if (!answer) return std::move(answer).error();
  fault_point("successor.hello");
  const Json& a = answer.value();
  Hello hello;
  hello.predecessor_pid = a.value("pid", 0L);
  hello.generation = a.value("generation", std::uint64_t{1});
  const Json modules = a.value("modules", Json::object());
  for (const auto& [module, sha256] : modules.items())
    if (sha256.is_string()) hello.images[module] = sha256.get<std::string>();
  for (const auto& n : a.value("not_started", Json::array()))
    hello.not_started.push_back({n.value("module", std::string()), n.value("reason", std::string())});
  if (a.contains("probation_left_ms")) hello.probation_left = std::chrono::milliseconds(a["probation_left_ms"].get<long>());
  if (fds.size() != 1) return Error{"(host)", {}, {}, Phase::HotRestart, "hello: the run directory's lock did not come"};
  hello.lock = std::move(fds.front());
  return hello;
}

/// A module's state as it arrives: pre-copy parts applied to a fresh
/// instance (its slot's upgrade lock held meanwhile), or a whole state kept;
/// then its host part.
struct Successor::Handed {
  std::optional<ModuleSlot::UpgradeAccess> access;
  std::unique_ptr<ModuleSlot::Live> live;  ///< the parts so far applied to it
  std::uint64_t part_bytes = 0;
  std::optional<StateBlob> whole;
  std::optional<std::string> host;  ///< set by the "state" message: nothing more comes
};

Successor::Successor(int fd) : channel_(FileDescriptor(fd)) {}
Successor::~Successor() = default;

Result<void> Successor::take_state(const Json& message,
                                   const std::function<std::shared_ptr<ModuleSlot>(std::string_view)>& find) {
  const std::string module = message.value("module", std::string());
  const auto fail = [&](std::string why) { return Error{module, {}, {}, Phase::HotRestart, std::move(why)}; };
  const auto slot = find(module);
  if (!slot) return fail("state for a module this moltd did not start");
  auto& handed = handed_[module];
  if (!handed) handed = std::make_unique<Handed>();
  const api::ModuleVersion version{message.value("version", 0u)};
  const api::SchemaVersion schema{message.value("schema", 0u)};
  const api::Migration same{schema, version, api::Direction::Same, {}};
  // A fresh instance of the running image to read the state into, the slot's upgrade lock held meanwhile.
  const auto fresh_instance = [&]() -> Result<void> {
    handed->access = ModuleSlot::UpgradeAccess::take_until(*slot, Clock::now() + std::chrono::seconds(10));
    if (!handed->access) return fail("its slot is busy");
    if (schema != slot->running().info.schema)
      return fail("its state is in schema " + std::to_string(schema.value) + ", the running version's is " +
                  std::to_string(slot->running().info.schema.value));
    auto fresh = handed->access->make_live(handed->access->live().image);
    if (!fresh) return std::move(fresh).error();
    handed->live = std::move(fresh.value());
    return {};
  };
  if (message["step"] == "part") {
    if (!handed->live)
      if (auto made = fresh_instance(); !made) return made;
    const std::string bytes = from_binary(message["bytes"]);
    handed->part_bytes += bytes.size();
    if (auto why = receive_part_from_bytes(handed->live->hooks(), bytes, same,
                                           static_cast<api::TransferPart>(message.value("kind", 0))))
      return fail("a pre-copy part could not be applied: " + *why);
    return {};
  }
  // "state": the last of it (a pre-copy's host part), or all of it.
  handed->host = message.value("host", std::string());
  if (message.value("framed", false)) {  // its frames follow: loaded as they arrive
    handed->live.reset();  // a pre-copy that failed on the other side, if any
    handed->access.reset();
    if (auto made = fresh_instance(); !made) return made;
    FrameSource frames(channel_.fd(), std::chrono::seconds(10));
    // Its size is known at its end only: the bound is the state limit (the
    // predecessor, this process's parent, is trusted as far as its files are).
    const auto failed = load_state_from(handed->live->hooks(), frames, kMaxHandoverState, same);
    if (frames.failure()) return fail("its state did not arrive whole: " + *frames.failure());
    if (failed) return fail(*failed);
    if (frames.sgetc() != std::char_traits<char>::eof() || !frames.ended())
      return fail(frames.failure() ? "its state did not arrive whole: " + *frames.failure()
                                   : "load_state returned before the end of the state it was sent (does it read the "
                                     "schema it was given?)");
    handed->part_bytes = frames.bytes();
    return {};
  }
  if (message.contains("bytes")) {  // all of it inside the message (a predecessor of an earlier build)
    handed->live.reset();  // a pre-copy that failed on the other side, if any
    handed->access.reset();
    handed->whole = StateBlob{module, version, schema, from_binary(message["bytes"]), *handed->host};
  }
  return {};
}

Result<void> Successor::restore(ModuleSlot& slot) {
  const auto it = handed_.find(slot.name());
  const auto fail = [&](std::string why) { return Error{slot.name(), {}, {}, Phase::HotRestart, std::move(why)}; };
  if (it == handed_.end() || !it->second->host) return fail("the previous moltd handed over no state for it");
  Handed& handed = *it->second;
  if (handed.whole) {
    if (auto adopted = adopt_state(slot, *handed.whole, std::chrono::seconds(10)); !adopted) return adopted;
  } else {
    if (!handed.live) return fail("the previous moltd handed over no state for it");
    if (!handed.access->suspend(Clock::now() + std::chrono::seconds(10), "hot restart"))
      return fail("calls still in progress after 10 s");
    auto replaced = handed.access->swap(std::move(handed.live), ModuleSlot::UpgradeAccess::Swap::Restore);
    handed.access->set_state_bytes(handed.part_bytes);
    handed.access->resume();
    handed.access.reset();
    replaced.reset();  // the instance started empty, stopped outside the pause
  }
  return slot.restore_host_part(*handed.host);
}

Result<Successor::Transfer> Successor::prepared(
    const std::function<std::shared_ptr<ModuleSlot>(std::string_view)>& find) {
  fault_point("successor.prepare");
  if (auto why = channel_.send(Json{{"step", "prepared"}}, {}, Clock::now() + std::chrono::seconds(10)))
    return Error{"(host)", {}, {}, Phase::HotRestart, "prepare: " + *why};
  std::vector<FileDescriptor> fds;
  Result<Json> manifest = Error{};
  while (true) {  // the states, as they come, then the transfer
    manifest = channel_.receive(Clock::now() + kSuccessorWait, &fds);
    if (!manifest) return std::move(manifest).error();
    const Json& message = manifest.value();
    if (message["step"] != "part" && message["step"] != "state") break;
    if (auto taken = take_state(message, find); !taken) return std::move(taken).error();
  }
  fault_point("successor.transfer");
  const Json& m = manifest.value();
  if (m["step"] != "transfer")
    return Error{"(host)", {}, {}, Phase::HotRestart, "expected the transfer, got " + m.value("step", std::string("?"))};
  const auto bad = [](const std::string& why) {
    return Error{"(host)", {}, {}, Phase::HotRestart, "transfer: malformed manifest: " + why};
  };
  std::size_t next = 0;
  const auto take = [&]() -> std::optional<FileDescriptor> {
    if (next >= fds.size()) return std::nullopt;
    return std::move(fds[next++]);
  };
  Transfer transfer;
  transfer.metrics = m.value("metrics", Json::object());
  for (const auto& l : m.value("listeners", Json::array())) {
    auto fd = take();
    if (!fd) return bad("fewer descriptors than listeners");
    transfer.listeners.push_back({l.value("module", std::string()), std::move(*fd)});
  }
  if (m.value("http", false)) {
    auto fd = take();
    if (!fd) return bad("no descriptor for the HTTP listener");
    transfer.http = std::move(*fd);
  }
  for (const auto& c : m.value("connections", Json::array())) {
    auto fd = take();
    if (!fd) return bad("fewer descriptors than connections");
    transfer.connections.push_back(FrozenConnection{c.value("module", std::string()), fd->release(),
                                                    c.value("id", api::ConnectionId{0}), from_binary(c["input"]),
                                                    from_binary(c["output"]), c.value("close_after_write", false)});
  }
  for (const auto& c : m.value("http_connections", Json::array())) {
    auto fd = take();
    if (!fd) return bad("fewer descriptors than HTTP connections");
    transfer.http_connections.emplace_back(std::move(*fd), from_binary(c["input"]));
  }
  if (next != fds.size()) return bad(std::to_string(fds.size() - next) + " descriptor(s) more than it names");
  return transfer;
}

Result<void> Successor::ready() {
  fault_point("successor.adopt");
  if (auto why = channel_.send(Json{{"step", "ready"}}, {}, Clock::now() + std::chrono::seconds(10)))
    return Error{"(host)", {}, {}, Phase::HotRestart, "adopt: " + *why};
  auto commit = channel_.receive(Clock::now() + kSuccessorWait);
  if (!commit) return std::move(commit).error();
  if (commit.value()["step"] != "commit")
    return Error{"(host)", {}, {}, Phase::HotRestart,
                 "commit: expected commit, got " + commit.value().value("step", std::string("?"))};
  fault_point("successor.commit");
  return {};
}

void Successor::serving(const Json& detail) {
  Json message = detail;
  message["step"] = "serving";
  (void)channel_.send(std::move(message), {}, Clock::now() + std::chrono::seconds(10));
}

void Successor::failed(const std::string& reason) {
  (void)channel_.send(Json{{"step", "failed"}, {"reason", reason}}, {}, Clock::now() + std::chrono::seconds(2));
}

}  // namespace molt::host
