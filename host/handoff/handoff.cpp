#include "molt/host/handoff/handoff.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "molt/host/common/fault.hpp"
#include "molt/module.hpp"
#include "molt/host/common/threads.hpp"
#include "molt/host/handoff/peer_auth.hpp"
#include "molt/host/handover/hot_restart.hpp"
#include "molt/host/net/stream_server.hpp"
#include "molt/host/release/release_handler.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "molt/host/slot/precopy.hpp"
#include "molt/host/slot/state_hooks.hpp"
#include "molt/host/slot/upgrade_access.hpp"

namespace molt::host {
namespace fs = std::filesystem;
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

Error handoff_error(const std::string& module, std::string why) {
  return Error{module, {}, {}, Phase::Handoff, std::move(why)};
}

std::string errno_text() { return std::strerror(errno); }

using Addresses = std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)>;

/// `at`'s first address, and a non-blocking TCP socket of its family; why not.
Result<std::pair<Addresses, FileDescriptor>> tcp_socket_for(const Endpoint& at, int flags) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | flags;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(at.port);
  if (const int rc = ::getaddrinfo(at.host.c_str(), port.c_str(), &hints, &found); rc != 0)
    return handoff_error("(host)", gai_strerror(rc));
  Addresses addresses(found, ::freeaddrinfo);
  FileDescriptor socket(::socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!socket.valid()) return handoff_error("(host)", "socket: " + errno_text());
  return std::pair<Addresses, FileDescriptor>(std::move(addresses), std::move(socket));
}

/// A TCP connection to `to`, made by `deadline`.
Result<FileDescriptor> connect_to(const Endpoint& to, Clock::time_point deadline) {
  const auto fail = [&](std::string why) { return handoff_error("(host)", "connect to " + to.to_string() + ": " + why); };
  auto made = tcp_socket_for(to, 0);
  if (!made) return fail(made.error().reason);
  const addrinfo* found = made->first.get();
  FileDescriptor socket = std::move(made->second);
  if (::connect(socket.get(), found->ai_addr, found->ai_addrlen) != 0 && errno != EINPROGRESS) return fail(errno_text());
  pollfd p{socket.get(), POLLOUT, 0};
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return fail("no answer in time");
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail("poll: " + errno_text());
    if (n > 0) break;
  }
  int error = 0;
  socklen_t size = sizeof error;
  ::getsockopt(socket.get(), SOL_SOCKET, SO_ERROR, &error, &size);
  if (error != 0) return fail(std::strerror(error));
  const int one = 1;
  ::setsockopt(socket.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return socket;
}

std::string address_of(const sockaddr_storage& address) {
  char host[INET6_ADDRSTRLEN] = "?";
  std::uint16_t port = 0;
  if (address.ss_family == AF_INET) {
    const auto& a = reinterpret_cast<const sockaddr_in&>(address);
    ::inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
    port = ntohs(a.sin_port);
  } else if (address.ss_family == AF_INET6) {
    const auto& a = reinterpret_cast<const sockaddr_in6&>(address);
    ::inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host);
    port = ntohs(a.sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}

bool any_address(const std::string& host) { return host.empty() || host == "0.0.0.0" || host == "::" || host == "*"; }

std::string micros_text(std::chrono::microseconds d) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f ms", static_cast<double>(d.count()) / 1000.0);
  return text;
}

/// MovedModule::adopt, on the source: a connection to the target's peer
/// listener on which it serves client `id` of `module` (received at
/// `epoch`) under that id; invalid when it will not (logged: the client is
/// then forwarded as a new connection).
FileDescriptor open_adopted(const Endpoint& to, const std::string& secret, Clock::time_point deadline,
                            const std::string& module, std::uint64_t epoch, api::ConnectionId id,
                            spdlog::logger& log) {
  const auto refused = [&](const std::string& why) {
    log.warn("{}: connection {}: not adopted by {} ({}): forwarded as a new connection, its state there lost", module,
             id, to.to_string(), why);
    return FileDescriptor();
  };
  auto socket = connect_to(to, deadline);
  if (!socket) return refused(socket.error().reason);
  HandoverChannel channel(std::move(socket.value()));
  if (auto authenticated = authenticate_as_client(channel, secret, deadline); !authenticated)
    return refused(authenticated.error().reason);
  if (auto why = channel.send(Json{{"step", "adopt"}, {"module", module}, {"epoch", epoch}, {"connection", id}}, {},
                              deadline))
    return refused(*why);
  auto answer = channel.receive(deadline);
  if (!answer) return refused(answer.error().reason);
  if (answer.value().value("step", std::string()) != "adopted")
    return refused("answered " + answer.value().value("step", std::string("?")));
  return std::move(channel).release();
}

}  // namespace

// --- report ----------------------------------------------------------------------

Json HandoffReport::to_json() const {
  Json phase_list = Json::array();
  for (const auto& [name, took] : phases) phase_list.push_back({{"phase", name}, {"us", took.count()}});
  return Json{{"module", module},       {"to", to},         {"epoch", epoch},     {"redirect", redirect},
              {"http", http},           {"state_bytes", state_bytes}, {"precopy", precopy}, {"rounds", rounds},
              {"rounds_ended", rounds_ended}, {"final_bytes", final_bytes}, {"clients", clients},
              {"phases", phase_list}};
}

std::string HandoffReport::summary() const {
  std::string text = module + " moved to " + to + " at epoch " + std::to_string(epoch) + " (" +
                     std::to_string(state_bytes) + " bytes of state" + (precopy ? " by pre-copy" : ", whole") + ", " +
                     std::to_string(clients) + " client(s) forwarded with theirs)";
  std::string timings;
  for (const auto& [name, took] : phases) timings += (timings.empty() ? "" : ", ") + name + " " + micros_text(took);
  if (!timings.empty()) text += "; " + timings;
  return text;
}

// --- the peer listener -------------------------------------------------------------

Handoff::Handoff(HandoffOptions options, HandoffParts parts, std::shared_ptr<spdlog::logger> log)
    : options_(std::move(options)), parts_(parts), log_(std::move(log)) {}

Handoff::~Handoff() {
  stopping_ = true;
  if (wake_.valid()) {
    const std::uint64_t one = 1;
    (void)::write(wake_.get(), &one, sizeof one);
  }
  if (accept_thread_.joinable()) accept_thread_.join();
  std::vector<Peer> peers;
  {
    std::lock_guard lock(peers_mutex_);
    peers.swap(peers_);
  }
  for (auto& peer : peers) peer.thread.join();
}

Result<std::optional<Endpoint>> Handoff::listen() {
  if (!options_.peer) return std::optional<Endpoint>();
  const Endpoint& at = *options_.peer;
  const auto fail = [&](std::string why) {
    return Error{"(host)", {}, at.to_string(), Phase::Start, "host.peer: " + std::move(why)};
  };
  auto made = tcp_socket_for(at, AI_PASSIVE);
  if (!made) return fail(made.error().reason);
  const addrinfo* found = made->first.get();
  FileDescriptor socket = std::move(made->second);
  const int one = 1;
  ::setsockopt(socket.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // A hot restart's successor binds it while its predecessor still does.
  ::setsockopt(socket.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (::bind(socket.get(), found->ai_addr, found->ai_addrlen) != 0) return fail("bind: " + errno_text());
  if (::listen(socket.get(), 16) != 0) return fail("listen: " + errno_text());
  wake_ = FileDescriptor(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_.valid()) return fail("eventfd: " + errno_text());
  listener_ = std::move(socket);
  accept_thread_ = std::thread([this] {
    name_this_thread("molt-peer");
    accept_loop();
  });
  log_->info("accepting handoffs from peers on {}", at.to_string());
  return std::optional<Endpoint>(at);
}

void Handoff::accept_loop() {
  std::uint64_t refused = 0;
  auto refused_logged = std::chrono::steady_clock::time_point{};
  while (!stopping_) {
    const auto due = forget_unadopted();
    const auto wait = due == Clock::time_point::max()
                          ? -1
                          : static_cast<int>(std::clamp<std::int64_t>(
                                std::chrono::duration_cast<std::chrono::milliseconds>(due - Clock::now()).count() + 1,
                                1, 60000));
    pollfd p[2] = {{listener_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(p, 2, wait) < 0) {
      if (errno == EINTR) continue;
      log_->error("peer listener: poll: {}; no more handoffs are accepted", errno_text());
      return;
    }
    if (stopping_) return;
    if (p[1].revents != 0) {  // woken to wait less: clients to forget (receive)
      std::uint64_t count = 0;
      (void)::read(wake_.get(), &count, sizeof count);
    }
    if (p[0].revents == 0) continue;
    sockaddr_storage address{};
    socklen_t size = sizeof address;
    FileDescriptor socket(::accept4(listener_.get(), reinterpret_cast<sockaddr*>(&address), &size, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!socket.valid()) {
      if (errno == EMFILE || errno == ENFILE) ::poll(nullptr, 0, 100);  // out of descriptors: do not spin
      continue;
    }
    const int one = 1;  // each message is a length, then a body: without it the second waits for an ACK
    ::setsockopt(socket.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const std::string from = address_of(address);
    if (open_peers_.load() >= kMaxPeerConnections) {
      ++refused;
      const auto now = std::chrono::steady_clock::now();
      if (now - refused_logged >= std::chrono::seconds(10)) {  // a flood of strangers does not flood the log
        log_->warn("peer {}: refused: {} peer connections are open already, the most ({} refused since this was last "
                   "logged; logged at most every 10 s)", from, kMaxPeerConnections, refused);
        refused_logged = now;
        refused = 0;
      }
      continue;  // closed
    }
    ++open_peers_;
    std::lock_guard lock(peers_mutex_);
    std::erase_if(peers_, [](Peer& peer) {  // those that ended
      if (!peer.done->load()) return false;
      peer.thread.join();
      return true;
    });
    auto done = std::make_shared<std::atomic<bool>>(false);
    peers_.push_back(Peer{std::thread([this, fd = socket.release(), from, done] {
                            name_this_thread("molt-peer-in");
                            try {  // a message of the wrong shape (a type error in it) ends this peer, not moltd
                              serve_peer(FileDescriptor(fd), from);
                            } catch (const std::exception& e) {
                              log_->warn("peer {}: dropped: {}", from, e.what());
                            }
                            --open_peers_;
                            done->store(true);
                          }),
                          done});
  }
}

void Handoff::serve_peer(FileDescriptor socket, std::string from) {
  HandoverChannel channel(std::move(socket));
  const auto deadline = [&] { return Clock::now() + options_.step_timeout; };
  if (options_.secret.empty()) return;  // no secret configured: nobody is let in
  if (auto authenticated = authenticate_as_server(channel, options_.secret, deadline()); !authenticated) {
    log_->warn("peer {}: {}", from, authenticated.error().reason);
    return;
  }
  auto request = channel.receive(deadline());
  if (!request) {
    log_->warn("peer {}: {}", from, request.error().reason);
    return;
  }
  const Json& message = request.value();
  const std::string step = message.value("step", std::string());
  const std::string module = message.value("module", std::string());
  if (step == "whose") {  // a source resolving a handoff it could not confirm
    const auto entry = parts_.ownership.find(module);
    Json answer{{"step", "whose"}, {"module", module}, {"runs", parts_.table.find(module) != nullptr}};
    if (entry) answer["entry"] = entry->to_json();
    answer["redirect"] = client_addresses(module);
    if (auto http = http_address()) answer["http"] = *http;
    (void)channel.send(std::move(answer), {}, deadline());
    return;
  }
  if (step == "adopt") return adopt_client(channel, message, from);
  if (step != "offer") {
    (void)channel.send(Json{{"step", "refused"}, {"reason", "expected an offer, got " + step}}, {}, deadline());
    return;
  }
  std::unique_lock one_at_a_time(receiving_, std::try_to_lock);
  if (!one_at_a_time.owns_lock()) {
    (void)channel.send(Json{{"step", "refused"}, {"reason", "another handoff to this moltd is in progress"}}, {},
                       deadline());
    return;
  }
  const std::string source = message.value("from", from);
  auto received = parts_.releases.while_unchanged("receiving " + module + " from " + source,
                                                  [&](std::optional<std::chrono::milliseconds>) {
                                                    try {
                                                      return receive(channel, message, source);
                                                    } catch (const std::exception& e) {
                                                      return Result<void>(handoff_error(module, std::string("unexpected: ") + e.what()));
                                                    }
                                                  });
  if (!received) {
    log_->error("{}", received.error().to_string());
    (void)channel.send(Json{{"step", "failed"}, {"reason", received.error().to_string()}}, {}, deadline());
  }
}

// --- the target ----------------------------------------------------------------------

Result<void> Handoff::receive(HandoverChannel& channel, const Json& offer, const std::string& from) {
  const std::string module = offer.value("module", std::string());
  const std::string sha256 = offer.value("sha256", std::string());
  const std::uint64_t epoch = offer.value("epoch", std::uint64_t{0});
  const api::ModuleVersion version{offer.value("version", 0u)};
  const api::SchemaVersion schema{offer.value("schema", 0u)};
  const auto deadline = [&] { return Clock::now() + options_.step_timeout; };
  const auto refuse = [&](const std::string& why) -> Result<void> {
    log_->warn("{}: handoff from {} refused: {}", module, from, why);
    (void)channel.send(Json{{"step", "refused"}, {"reason", module + ": " + why}}, {}, deadline());
    return {};  // said; nothing more to log
  };
  if (!api::detail::valid_module_name(module)) return refuse("not a module name");
  const ModuleConfig* settings = nullptr;
  for (const auto& m : options_.accepting)
    if (m.name == module) settings = &m;
  if (settings == nullptr) return refuse("not accepted here (no [modules." + module + "] with accept_handoff = true)");
  if (parts_.table.find(module)) return refuse("it runs here already");
  if (const auto entry = parts_.ownership.find(module); entry && entry->epoch >= epoch)
    return refuse("epoch " + std::to_string(epoch) + " is not newer than this moltd's " + entry->describe());
  // The same image, found by its sha256 among the plugin directory's files.
  std::optional<CheckedImage> image;
  std::error_code ec;
  std::string seen;
  for (const auto& file : fs::directory_iterator(options_.plugin_dir, ec)) {
    const auto name = file.path().filename().string();
    if (!name.starts_with(module + "-") || file.path().extension() != ".so") continue;
    auto checked = parts_.table.loader().check(file.path(), module);
    if (!checked) continue;
    if (checked->sha256 == sha256) {
      image = std::move(checked.value());
      break;
    }
    seen += (seen.empty() ? "" : ", ") + name + " " + checked->sha256.substr(0, 12);
  }
  if (!image)
    return refuse("no image with sha256 " + sha256.substr(0, 12) + " in " + options_.plugin_dir.string() +
                  (seen.empty() ? " (none of " + module + " at all)" : " (it has " + seen + ")") +
                  ": copy the source's image there first");
  if (image->info.version != version || image->info.schema != schema)
    return refuse("the image declares v" + std::to_string(image->info.version.value) + " schema " +
                  std::to_string(image->info.schema.value) + ", the offer v" + std::to_string(version.value));
  auto prepared = parts_.table.prepare(ModuleConfig{module, image->file, settings->values, settings->listen, true});
  if (!prepared) return refuse(prepared.error().to_string());
  std::shared_ptr<ModuleSlot> slot = std::move(prepared.value());
  auto access = ModuleSlot::UpgradeAccess::take_until(*slot, deadline());
  if (!access) return refuse("its new slot is busy");
  auto fresh = access->make_live(access->live().image);
  if (!fresh) return refuse(fresh.error().to_string());
  std::unique_ptr<ModuleSlot::Live> live = std::move(fresh.value());
  if (auto why = channel.send(Json{{"step", "accept"}}, {}, deadline()))
    return handoff_error(module, "accept: " + *why);
  slot->log().info("receiving from {} (v{}, epoch {})", from, version.value, epoch);

  const api::Migration same{schema, version, api::Direction::Same, {}};
  std::uint64_t bytes = 0;
  std::string host_part;
  Json clients = Json::array();       // the ids of the clients the module knew there
  std::uint64_t drain_seconds = 0;    // how long the source forwards them
  while (true) {  // parts, then the state message, then the flip
    auto next = channel.receive(Clock::now() + options_.step_timeout + std::chrono::seconds(60));
    if (!next) return handoff_error(module, "the source went away: " + next.error().reason);
    const Json& m = next.value();
    const std::string step = m.value("step", std::string());
    if (step == "part") {
      fault_point("handoff.target.part");
      const std::string part = from_binary(m["bytes"]);
      bytes += part.size();
      if (auto why = receive_part_from_bytes(live->hooks(), part, same, static_cast<api::TransferPart>(m.value("kind", 0))))
        return handoff_error(module, "a pre-copy part could not be applied: " + *why);
      continue;
    }
    if (step == "state") {
      host_part = m.value("host", std::string());
      clients = m.value("connections", Json::array());
      drain_seconds = std::min<std::uint64_t>(m.value("drain_seconds", std::uint64_t{0}), 24 * 3600);
      if (m.contains("bytes")) {  // the whole state (no pre-copy)
        const std::string whole = from_binary(m["bytes"]);
        bytes = whole.size();
        if (auto why = load_state_from_bytes(live->hooks(), whole, same))
          return handoff_error(module, "its state could not be loaded: " + *why);
      }
      // All of it is applied: the source may flip (before this, a failure here is never a flip).
      if (auto why = channel.send(Json{{"step", "ready"}}, {}, deadline()))
        return handoff_error(module, "ready: " + *why);
      continue;
    }
    if (step == "sync") {  // everything before it is applied: the source may pause the module
      if (auto why = channel.send(Json{{"step", "synced"}}, {}, deadline())) return handoff_error(module, "sync: " + *why);
      continue;
    }
    if (step == "flip") break;
    return handoff_error(module, "unexpected message '" + step + "'");
  }
  fault_point("handoff.target.flip");
  // The point of no return: the instance serves here, recorded before it is said.
  if (!access->suspend(deadline(), "handoff")) return handoff_error(module, "its new slot is busy");
  auto replaced = access->swap(std::move(live), ModuleSlot::UpgradeAccess::Swap::Restore);
  access->set_state_bytes(bytes);
  access->resume();
  access.reset();
  replaced.reset();
  if (auto restored = slot->restore_host_part(host_part); !restored) return restored;
  const auto before = parts_.ownership.find(module);
  OwnershipEntry owned{Ownership::Owned, epoch, from, 0, nullptr, {}, {}};
  if (auto recorded = parts_.ownership.set(module, owned); !recorded) return recorded;
  auto served = parts_.releases.received(slot, *settings, owned.describe());
  if (!served) {
    // Not served here after all: the record goes back before the source hears it failed (and serves on).
    if (auto undone = parts_.ownership.put(module, before); !undone) {
      log_->critical("{}: recorded as owned at epoch {} but cannot serve ({}), and {}: a boot of the source will "
                     "find it owned here", module, epoch, served.error().to_string(), undone.error().to_string());
      return handoff_error(module, "not served; the source must not resume (the record says owned here)");
    }
    return std::move(served).error();
  }
  {  // the clients the source will forward, each adopted under its id (adopt_client)
    Expected expected{epoch, {}, Clock::now() + std::chrono::seconds(drain_seconds) + options_.step_timeout};
    for (const auto& id : clients)
      if (id.is_number_unsigned()) expected.ids.insert(id.get<api::ConnectionId>());
    std::lock_guard lock(expected_mutex_);
    expected_[module] = std::move(expected);
  }
  const std::uint64_t one = 1;  // the accept loop waits until they are due, not for the next peer
  (void)::write(wake_.get(), &one, sizeof one);
  Json owned_message{{"step", "owned"}, {"epoch", epoch}, {"redirect", client_addresses(module)}};
  if (auto http = http_address()) owned_message["http"] = *http;
  (void)channel.send(std::move(owned_message), {}, deadline());
  slot->log().info("{} ({} bytes of state); serving", owned.describe(), bytes);
  return {};
}

void Handoff::adopt_client(HandoverChannel& channel, const Json& request, const std::string& from) {
  const auto deadline = Clock::now() + options_.step_timeout;
  const std::string module = request.value("module", std::string());
  const std::uint64_t epoch = request.value("epoch", std::uint64_t{0});
  const api::ConnectionId id = request.value("connection", api::ConnectionId{0});
  const auto refuse = [&](const std::string& why) {
    log_->info("{}: connection {} forwarded by {}: not adopted: {}", module, id, from, why);
    (void)channel.send(Json{{"step", "refused"}, {"reason", module + ": connection " + std::to_string(id) + ": " + why}},
                       {}, deadline);
  };
  {
    std::lock_guard lock(expected_mutex_);
    const auto it = expected_.find(module);
    if (it == expected_.end() || it->second.epoch != epoch || !it->second.ids.contains(id))
      return refuse("not a client this moltd expects at epoch " + std::to_string(epoch));
  }
  if (parts_.streams.may_be_own_connection(id)) return refuse("an id this moltd may give a connection of its own");
  // From here on a failure leaves the client expected: told gone at the end.
  if (auto why = channel.send(Json{{"step", "adopted"}}, {}, deadline)) {
    log_->info("{}: connection {} forwarded by {}: {}", module, id, from, *why);
    return;
  }
  if (auto adopted = parts_.streams.adopt_forwarded(module, std::move(channel).release(), id); !adopted) {
    log_->warn("{}", adopted.error().to_string());
    return;
  }
  std::lock_guard lock(expected_mutex_);
  if (const auto it = expected_.find(module); it != expected_.end() && it->second.epoch == epoch) it->second.ids.erase(id);
}

Handoff::Clock::time_point Handoff::forget_unadopted() {
  std::map<std::string, std::set<api::ConnectionId>> due;
  auto next = Clock::time_point::max();
  {
    std::lock_guard lock(expected_mutex_);
    const auto now = Clock::now();
    for (auto it = expected_.begin(); it != expected_.end();) {
      if (it->second.ids.empty()) {
        it = expected_.erase(it);
      } else if (it->second.until <= now) {
        due[it->first] = std::move(it->second.ids);
        it = expected_.erase(it);
      } else {
        next = std::min(next, it->second.until);
        ++it;
      }
    }
  }
  for (const auto& [module, ids] : due) {
    const auto slot = parts_.table.find(module);
    if (!slot || slot->retired()) continue;
    for (const auto id : ids) slot->stream_disconnect(id);
    slot->log().info("{} client(s) its source had were not forwarded here by the end of the drain: their "
                     "per-connection state is dropped", ids.size());
  }
  return next;
}

// --- the source ------------------------------------------------------------------------

Result<HandoffReport> Handoff::send(const std::string& module, const Endpoint& to) {
  std::unique_lock one_at_a_time(sending_, std::try_to_lock);
  if (!one_at_a_time.owns_lock()) return handoff_error(module, "another handoff from this moltd is in progress");
  if (options_.secret.empty())
    return handoff_error(module, "this moltd has no host.peer_secret_file: it cannot prove itself to a peer");
  const auto slot = parts_.table.find(module);
  if (!slot) {
    if (const auto entry = parts_.ownership.find(module); entry && entry->ownership != Ownership::Owned)
      return handoff_error(module, "does not run here: " + entry->describe());
    return handoff_error(module, "no such module runs here");
  }
  HandoffReport report;
  report.module = module;
  report.to = to.to_string();
  auto started = Clock::now();
  const auto phase = [&](const char* name) {
    const auto now = Clock::now();
    report.phases.emplace_back(name, std::chrono::duration_cast<std::chrono::microseconds>(now - started));
    started = now;
  };
  const auto deadline = [&] { return Clock::now() + options_.step_timeout; };
  const auto fail = [&](const std::string& step, const std::string& why) {
    return handoff_error(module, step + ": " + why + " (" + to.to_string() + ")");
  };

  Result<void> outcome = parts_.releases.while_unchanged("handing " + module + " to " + to.to_string(), [&](auto) -> Result<void> {
    auto socket = connect_to(to, deadline());
    if (!socket) return fail("connect", socket.error().reason);
    HandoverChannel channel(std::move(socket.value()));
    if (auto authenticated = authenticate_as_client(channel, options_.secret, deadline()); !authenticated)
      return fail("connect", authenticated.error().reason);
    phase("connect");

    const ImageInfo& info = slot->running().info;
    const std::uint64_t epoch = parts_.ownership.epoch(module) + 1;
    report.epoch = epoch;
    Json offer{{"step", "offer"},   {"module", module},      {"sha256", slot->running().sha256},
               {"version", info.version.value}, {"schema", info.schema.value}, {"epoch", epoch}};
    if (options_.peer) offer["from"] = options_.peer->to_string();
    if (auto why = channel.send(offer, {}, deadline())) return fail("offer", *why);
    auto accepted = channel.receive(deadline());
    if (!accepted) return fail("offer", accepted.error().reason);
    phase("offer");

    // copy, while the module serves
    auto access = ModuleSlot::UpgradeAccess::take_ahead_of_snapshots(*slot, Clock::now() + options_.quiesce_timeout);
    if (!access) return fail("copy", "an upgrade or a snapshot of it still ran after the quiesce timeout");
    std::unique_ptr<PreCopy> copy;
    const api::SaveTarget same{info.schema, api::Direction::Same, {}};
    if (options_.precopy.enabled && access->can_transfer()) {
      copy = std::make_unique<PreCopy>(
          *access,
          [&](std::string_view bytes, api::TransferPart part) {
            report.state_bytes += bytes.size();
            return channel.send(Json{{"step", "part"}, {"kind", static_cast<int>(part)}, {"bytes", binary(bytes)}}, {},
                                deadline());
          },
          same, options_.precopy);
      if (auto ran = copy->run(); !ran) return fail("copy", ran.error().to_string());
      report.precopy = true;
      report.rounds = copy->report().rounds.size();
      report.rounds_ended = copy->report().ended;
      // The parts are sent; wait, while the module serves, until the target
      // has applied them too: the pause then holds only the last changes.
      if (auto why = channel.send(Json{{"step", "sync"}}, {}, deadline())) return fail("copy", *why);
      if (auto synced = channel.receive(deadline() + std::chrono::seconds(60)); !synced)
        return fail("copy", synced.error().reason);
    }
    phase("copy");

    // freeze: from here the module answers nobody until the flip or the thaw.
    const auto prior = parts_.ownership.find(module);
    OwnershipEntry moving{Ownership::Moving, epoch, to.to_string(), 0,
                          prior ? std::make_shared<const OwnershipEntry>(*prior) : nullptr, {}, {}};
    if (auto recorded = parts_.ownership.set(module, moving); !recorded) return fail("freeze", recorded.error().reason);
    bool suspended = false;
    const auto thaw = [&](Error error) -> Result<void> {  // before the flip is sent: the source keeps it
      copy.reset();
      if (suspended) access->resume();
      if (auto reverted = parts_.ownership.revert(module); !reverted)
        log_->critical("{}; the module serves here, but a boot will ask {} first", reverted.error().to_string(),
                       to.to_string());
      return error;
    };
    const auto frozen_at = Clock::now();
    if (!access->suspend(Clock::now() + options_.quiesce_timeout, "handoff"))
      return thaw(fail("freeze", "calls still in progress after " + std::to_string(options_.quiesce_timeout.count()) + " ms"));
    suspended = true;
    // The clients whose per-connection state goes with it: the ones it knows
    // here, and those it was handed with that were never forwarded here.
    std::set<api::ConnectionId> clients;
    for (const auto id : slot->connections()) clients.insert(id);
    {
      std::lock_guard lock(expected_mutex_);
      if (const auto it = expected_.find(module); it != expected_.end()) clients.insert(it->second.ids.begin(), it->second.ids.end());
    }
    report.clients = clients.size();
    Json state{{"step", "state"},
               {"host", slot->host_part()},
               {"connections", clients},
               {"drain_seconds", static_cast<std::uint64_t>(options_.drain.count())}};
    if (copy) {
      if (auto finished = copy->finish(); !finished) return thaw(fail("freeze", finished.error().to_string()));
      report.final_bytes = copy->report().final.bytes;
    } else {
      std::stringbuf whole;
      if (auto saved = access->save(same, whole); !saved) return thaw(fail("freeze", saved.error().to_string()));
      const std::string bytes = whole.str();
      report.state_bytes = bytes.size();
      state["bytes"] = binary(bytes);
    }
    if (auto why = channel.send(std::move(state), {}, deadline())) return thaw(fail("freeze", *why));
    // The target has applied every part and the state, or says why not: only
    // then the flip, so that a target lost before it is never a doubt.
    if (auto ready = channel.receive(deadline()); !ready) return thaw(fail("freeze", ready.error().reason));
    fault_point("handoff.source.freeze");
    phase("freeze");

    // flip: once the flip is sent the target may own it; only its answer tells.
    if (auto why = channel.send(Json{{"step", "flip"}, {"epoch", epoch}}, {}, deadline()))
      return thaw(fail("flip", *why));  // not sent whole: the target cannot have taken it
    auto owned = channel.receive(deadline());
    fault_point("handoff.source.flip");  // the target may own it now: a crash here leaves Moving
    bool moved = owned.ok() && owned.value().value("step", std::string()) == "owned";
    if (owned.ok() && !moved)  // "failed" and "refused" come as errors: this is a peer out of protocol
      return thaw(fail("flip", "expected owned, got " + owned.value().value("step", std::string("?"))));
    if (!owned) {
      const bool refused = owned.error().reason.starts_with("failed: ") || owned.error().reason.starts_with("refused: ");
      if (refused) return thaw(fail("flip", owned.error().reason));  // it said it did not take it
      // Unknown: ask it again on a new connection, for as long as a step may take.
      log_->warn("{}: the target's answer to the flip did not come ({}); asking {} who owns it", module,
                 owned.error().reason, to.to_string());
      const auto until = Clock::now() + options_.step_timeout;
      while (Clock::now() < until) {
        auto whose = ask_owner(module, to);
        if (whose) {
          moved = whose.value() && whose.value()->ownership == Ownership::Owned && whose.value()->epoch >= epoch;
          if (!moved) return thaw(fail("flip", owned.error().reason + "; the target says it did not take it"));
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
      if (!moved) {
        // Nobody can say: not served here, Moving kept (a boot asks again).
        slot->retire("nowhere confirmed: a handoff to " + to.to_string() + " at epoch " + std::to_string(epoch) +
                     " was not confirmed");
        copy.reset();
        access->resume();
        parts_.releases.gave_away(module, moving.describe() + "; restart moltd once " + to.to_string() +
                                              " answers to learn who owns it");
        return fail("flip", "the target's answer did not come (" + owned.error().reason +
                                ") and it cannot be asked; the module is not served here until it says who owns it");
      }
    }
    phase("flip");
    report.phases.emplace_back("frozen", std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - frozen_at));
    if (owned.ok()) {
      for (const auto& r : owned.value().value("redirect", Json::array()))
        if (r.is_string()) report.redirect.push_back(r.get<std::string>());
      report.http = owned.value().value("http", std::string());
    }

    // The target owns it: record it, then answer the calls that waited "moved".
    OwnershipEntry gone{Ownership::Moved, epoch, to.to_string(), 0, nullptr, {}, {}};
    if (!report.redirect.empty()) gone.redirect = report.redirect.front();
    gone.http = report.http;
    if (auto recorded = parts_.ownership.set(module, gone); !recorded)
      log_->critical("{} (Moving stays: a boot asks the target, which owns it)", recorded.error().to_string());
    std::string where = to.to_string();
    if (!report.redirect.empty()) where = report.redirect.front();
    slot->retire(where + " (" + gone.describe() + ")");
    copy.reset();
    access->resume();
    access.reset();
    {  // they travel on with the state: the target forgets them
      std::lock_guard lock(expected_mutex_);
      expected_.erase(module);
    }
    if (!report.redirect.empty()) {
      MovedModule went{report.redirect.front(), options_.drain, options_.forward_new};
      // Every client by one deadline: a target that stops answering costs the
      // clients a step's time at most, then they go as new connections.
      went.adopt = [to, secret = options_.secret, until = Clock::now() + options_.step_timeout, module, epoch,
                    log = log_](api::ConnectionId id) { return open_adopted(to, secret, until, module, epoch, id, *log); };
      parts_.streams.module_moved(module, went);
    }
    else
      parts_.streams.close_module(module);
    parts_.releases.gave_away(module, gone.describe());
    return {};
  });
  if (!outcome) {
    log_->error("{}", outcome.error().to_string());
    return std::move(outcome).error();
  }
  slot->log().info("handoff: {}", report.summary());
  return report;
}

Result<std::optional<OwnershipEntry>> Handoff::ask_owner(const std::string& module, const Endpoint& peer) {
  const auto deadline = Clock::now() + std::chrono::seconds(2);
  auto socket = connect_to(peer, deadline);
  if (!socket) return std::move(socket).error();
  HandoverChannel channel(std::move(socket.value()));
  if (auto authenticated = authenticate_as_client(channel, options_.secret, deadline); !authenticated)
    return std::move(authenticated).error();
  if (auto why = channel.send(Json{{"step", "whose"}, {"module", module}}, {}, deadline))
    return handoff_error(module, *why);
  auto answer = channel.receive(deadline);
  if (!answer) return std::move(answer).error();
  const Json& a = answer.value();
  if (!a.contains("entry")) return std::optional<OwnershipEntry>();
  const Json& e = a["entry"];
  OwnershipEntry entry;
  const std::string kind = e.value("ownership", std::string());
  entry.ownership = kind == "owned" ? Ownership::Owned : kind == "moving" ? Ownership::Moving : Ownership::Moved;
  entry.epoch = e.value("epoch", std::uint64_t{0});
  entry.peer = e.value("peer", std::string());
  // Where its clients and HTTP requests go there (for our Moved entry).
  for (const auto& r : a.value("redirect", Json::array()))
    if (r.is_string() && entry.redirect.empty()) entry.redirect = r.get<std::string>();
  entry.http = a.value("http", std::string());
  return std::optional<OwnershipEntry>(entry);
}

std::optional<std::string> Handoff::elsewhere(const std::string& module) {
  auto entry = parts_.ownership.find(module);
  if (!entry || entry->ownership == Ownership::Owned) return std::nullopt;
  if (entry->ownership == Ownership::Moved) return entry->describe();
  // Moving: only the target can say whether it took it.
  const auto peer = parse_endpoint(entry->peer);
  if (!peer) return entry->describe() + "; its peer address is unreadable";
  auto whose = ask_owner(module, *peer);
  if (!whose) {
    log_->error("{}: {}; {} does not answer ({}): not started until it does (restart moltd then)", module,
                entry->describe(), entry->peer, whose.error().reason);
    return entry->describe() + "; " + entry->peer + " does not answer";
  }
  if (whose.value() && whose.value()->ownership == Ownership::Owned && whose.value()->epoch >= entry->epoch) {
    OwnershipEntry gone{Ownership::Moved, entry->epoch, entry->peer, 0, nullptr, {}, {}};
    gone.redirect = whose.value()->redirect;
    gone.http = whose.value()->http;
    if (auto recorded = parts_.ownership.set(module, gone); !recorded) log_->error("{}", recorded.error().to_string());
    log_->info("{}: {} took it: {}", module, entry->peer, gone.describe());
    return gone.describe();
  }
  if (auto reverted = parts_.ownership.revert(module); !reverted) {
    log_->error("{}", reverted.error().to_string());
    return entry->describe();
  }
  log_->info("{}: {} never took epoch {}: it runs here", module, entry->peer, entry->epoch);
  return std::nullopt;
}

std::optional<std::string> Handoff::moved_http(std::string_view module) const {
  const auto entry = parts_.ownership.find(std::string(module));
  if (!entry || entry->ownership != Ownership::Moved || entry->http.empty()) return std::nullopt;
  return entry->http;
}

Json Handoff::client_addresses(const std::string& module) const {
  // Its listeners here, at the address peers reach this moltd on when bound to any.
  Json addresses = Json::array();
  for (const auto& l : parts_.streams.listeners()) {
    if (l.module != module) continue;
    const std::string host = any_address(l.endpoint.host) && options_.peer ? options_.peer->host : l.endpoint.host;
    addresses.push_back(host + ":" + std::to_string(l.endpoint.port));
  }
  return addresses;
}

std::optional<std::string> Handoff::http_address() const {
  if (!options_.http_address) return std::nullopt;
  auto http = parse_endpoint(options_.http_address());
  if (!http) return std::nullopt;
  if (any_address(http->host) && options_.peer) http->host = options_.peer->host;
  return http->to_string();
}

void Handoff::serve_moved() {
  for (const auto& [module, entry] : parts_.ownership.entries()) {
    if (entry.ownership != Ownership::Moved || entry.redirect.empty()) continue;
    const ModuleConfig* settings = nullptr;
    for (const auto& m : options_.accepting)
      if (m.name == module) settings = &m;
    std::vector<Endpoint> listen = settings ? settings->listen : std::vector<Endpoint>{};
    for (const auto& m : options_.configured)
      if (m.name == module) listen = m.listen;
    auto bound = parts_.streams.listen_moved(module, listen, entry.redirect);
    if (!bound) {
      log_->warn("{}: {}; its clients get no -MOVED here", module, bound.error().to_string());
      continue;
    }
    for (const auto& e : bound.value())
      log_->info("{}: {}: its listener {} answers -MOVED 0 {}", module, entry.describe(), e.to_string(), entry.redirect);
  }
}

Json Handoff::status() const {
  Json modules = Json::object();
  for (const auto& [module, entry] : parts_.ownership.entries()) modules[module] = entry.to_json();
  Json status{{"modules", modules}};
  if (options_.peer) status["peer"] = options_.peer->to_string();
  return status;
}

}  // namespace molt::host
