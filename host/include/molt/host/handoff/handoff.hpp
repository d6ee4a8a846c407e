// Handoff: moves one running module to another moltd, with its state, and
// flips its ownership exactly once (docs/handoff.md).
//
// The source (moltctl handoff MODULE --to HOST:PORT) drives; the target
// accepts on its peer listener (host.peer). Each step has a deadline:
//   connect   TCP to the target's peer listener; both prove they know the
//             shared secret (peer_auth.hpp) before anything else is read;
//   offer     module, image sha256, version, schema, and the epoch the move
//             would start (the source's + 1). The target refuses a module
//             it does not accept (accept_handoff), one it runs or owns at
//             that epoch or later, or whose image it cannot find by sha256
//             in its plugin directory; else it loads that image, starts an
//             instance (not serving) and says where clients will find it;
//   copy      pre-copy rounds while the source serves (the module's
//             transfer hooks; without them the whole state in the freeze),
//             each part applied by the target as it comes;
//   freeze    the source records Moving(E) durably, pauses the module (new
//             calls wait), sends the last part and its jobs and timers;
//   flip      the target swaps the instance in, records Owned(E) durably,
//             serves the module on its listeners, and says Owned. That is
//             the point of no return. The source records Moved(E), retires
//             its instance, and forwards its connections to the target
//             (the requests that waited first) for the drain, then closes
//             each when idle; its listeners answer new clients -MOVED with
//             the target's address (or forward them, by configuration);
//   adopt     each client the module knew goes on through a connection the
//             source opens on the target's peer listener (authenticated as
//             the handoff was), which the target serves under the client's
//             id: the per-connection state that moved with the module is
//             that client's again. The state message names those ids; the
//             ones not adopted by the end of the drain are told gone to the
//             module (on_disconnect). A client that cannot be adopted is
//             forwarded as a new connection (its per-connection state lost).
// Invariant: at most one moltd serves the module at any time, after any
// failure or crash (ownership.hpp). Before the flip message is sent, any
// failure leaves the source serving with its state untouched (clients see
// a stall at most as long as the freeze). After it, a source that cannot
// learn the outcome from the target stops serving the module and keeps
// Moving: a boot asks the target again.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"
#include "molt/host/common/file_checks.hpp"
#include "molt/host/config/host_config.hpp"
#include "molt/host/handoff/ownership.hpp"
#include "molt/host/slot/precopy_report.hpp"
#include "molt/stream.hpp"

namespace molt::host {

class HandoverChannel;
class ModuleTable;
class ReleaseHandler;
class StreamServer;

/// At most this many peer connections at once; more are closed at accept.
inline constexpr std::size_t kMaxPeerConnections = 4;

struct HandoffOptions {
  std::string secret;                  ///< host.peer_secret_file's (empty: handoffs refused both ways)
  std::optional<Endpoint> peer;        ///< host.peer: where this moltd accepts handoffs (none: it only sends)
  std::filesystem::path plugin_dir;    ///< where a target looks for the image by its sha256
  std::vector<ModuleConfig> accepting; ///< the modules with accept_handoff = true, as configured here
  std::chrono::milliseconds step_timeout{10000};
  std::chrono::milliseconds quiesce_timeout{5000};
  PrecopyOptions precopy;
  std::chrono::seconds drain{60};  ///< host.handoff_drain_seconds: how long the source forwards
  bool forward_new = false;        ///< host.handoff_new_connections = "forward"
  /// This moltd's HTTP address (HOST:PORT), told a source so that it can
  /// forward its HTTP requests for a module it handed here. May be empty.
  std::function<std::string()> http_address = {};
  std::vector<ModuleConfig> configured = {};  ///< every module the configuration names (their listen addresses)
};

struct HandoffParts {
  ModuleTable& table;
  ReleaseHandler& releases;
  StreamServer& streams;
  OwnershipRecord& ownership;
};

/// What one handoff did, for moltctl and the log.
struct HandoffReport {
  std::string module;
  std::string to;            ///< the target's peer listener
  std::uint64_t epoch = 0;   ///< the module's from now on
  std::vector<std::string> redirect;  ///< where its clients connect now
  std::string http;          ///< the target's HTTP address, where HTTP requests for it are forwarded
  std::uint64_t state_bytes = 0;
  bool precopy = false;      ///< the state went by pre-copy rounds (else whole, in the freeze)
  std::size_t rounds = 0;    ///< pre-copy rounds while it served
  std::string rounds_ended;  ///< why they stopped ("converged", ...)
  std::uint64_t final_bytes = 0;  ///< moved in the pause
  std::size_t clients = 0;   ///< connections whose per-connection state went with it (forwarded, adopted there)
  /// connect, offer, copy, freeze, flip; "frozen": from the pause to the
  /// target's Owned (no call of the module answered anywhere meanwhile).
  std::vector<std::pair<std::string, std::chrono::microseconds>> phases;
  [[nodiscard]] nlohmann::json to_json() const;
  [[nodiscard]] std::string summary() const;
};

class Handoff {
 public:
  using Clock = std::chrono::steady_clock;
  Handoff(HandoffOptions options, HandoffParts parts, std::shared_ptr<spdlog::logger> log);
  ~Handoff();  ///< stops the peer listener and waits for its connections
  Handoff(const Handoff&) = delete;
  Handoff& operator=(const Handoff&) = delete;

  /// Binds host.peer and accepts handoffs on a thread of its own; nothing
  /// to do without host.peer. Returns the address bound (none without).
  Result<std::optional<Endpoint>> listen();

  /// Moves `module` to the moltd whose peer listener is `to` (source side).
  /// On failure before the flip the module serves here as before.
  Result<HandoffReport> send(const std::string& module, const Endpoint& to);

  /// At boot, for ReleaseOptions::elsewhere: why `module` is not to run
  /// here (moved away, or a handoff of it not confirmed and its target
  /// does not say it never took it), or nothing. A Moving entry is resolved
  /// by asking its target (a short deadline).
  std::optional<std::string> elsewhere(const std::string& module);

  /// status: every module's ownership entry.
  [[nodiscard]] nlohmann::json status() const;

  /// The HTTP address (HOST:PORT) of the moltd `module` moved to, for
  /// forwarding its requests; nothing if it did not move (or is not known).
  [[nodiscard]] std::optional<std::string> moved_http(std::string_view module) const;

  /// At start (a boot or a hot restart's successor), for each module that
  /// moved away: its configured listeners answer new clients -MOVED with
  /// where it is now (StreamServer::listen_moved).
  void serve_moved();

 private:
  struct Incoming;
  void accept_loop();
  void serve_peer(FileDescriptor socket, std::string from);
  /// Target: serves the client a source forwards on `channel` (step "adopt").
  void adopt_client(HandoverChannel& channel, const nlohmann::json& request, const std::string& from);
  /// Target: tells each module the clients a source did not forward by their
  /// time are gone; when the next is due (none: max).
  Clock::time_point forget_unadopted();
  Result<void> receive(class HandoverChannel& channel, const nlohmann::json& offer, const std::string& from);
  /// Where `module`'s clients connect to it here (its listeners), as peers reach them.
  [[nodiscard]] nlohmann::json client_addresses(const std::string& module) const;
  /// This moltd's HTTP address as peers reach it.
  [[nodiscard]] std::optional<std::string> http_address() const;
  /// Asks the target of an unconfirmed handoff who owns `module` now.
  Result<std::optional<OwnershipEntry>> ask_owner(const std::string& module, const Endpoint& peer);

  HandoffOptions options_;
  HandoffParts parts_;
  std::shared_ptr<spdlog::logger> log_;
  /// Clients of a received module its source may still forward (adopt_client),
  /// until when; the rest are told gone then (forget_unadopted).
  struct Expected {
    std::uint64_t epoch = 0;
    std::set<api::ConnectionId> ids;
    Clock::time_point until;
  };
  std::mutex expected_mutex_;
  std::map<std::string, Expected> expected_;  ///< by module; guarded by expected_mutex_
  std::mutex sending_;    ///< one handoff out at a time
  std::mutex receiving_;  ///< one handoff in at a time
  FileDescriptor listener_;
  FileDescriptor wake_;   ///< eventfd: ends accept_loop
  std::thread accept_thread_;
  struct Peer {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;  ///< set as its thread ends: joined at the next accept
  };
  std::mutex peers_mutex_;
  std::vector<Peer> peers_;                ///< guarded by peers_mutex_
  std::atomic<std::size_t> open_peers_{0};
  std::atomic<bool> stopping_{false};
};

}  // namespace molt::host
