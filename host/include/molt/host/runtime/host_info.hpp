// What the host tells about itself and its listeners: shared by the control
// socket (control/), the HTTP status page and metrics (net/), and filled in
// by moltd's main from the servers it runs. Below both net/ and control/, so
// that neither includes the other (docs/architecture.md).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/host/config/host_config.hpp"

namespace molt::host {

/// Why the host closed a connection its client had not closed: a limit.
enum class LimitClose : std::uint8_t {
  Timeout,       ///< idle past `timeout`
  QueryBuffer,   ///< unconsumed input reached client_query_buffer_limit
  OutputBuffer,  ///< unsent output passed client_output_buffer_hard_limit
  Memory,        ///< closed to keep every buffer within max_connection_memory
};
inline constexpr std::size_t kLimitCloses = 4;
/// The configuration key of the limit: "timeout", "client_query_buffer_limit", ...
[[nodiscard]] std::string_view to_string(LimitClose why) noexcept;

struct ListenerInfo {
  std::string module;
  Endpoint endpoint;         ///< as bound
  std::size_t connections;   ///< open now
  std::uint64_t accepted;    ///< since start, refused ones included
  std::uint32_t maxclients;  ///< in effect (see cap_maxclients)
  std::uint64_t refused;     ///< turned away past maxclients, since start
  /// Connections closed by each limit since start, indexed by LimitClose.
  std::array<std::uint64_t, kLimitCloses> closed_by_limit{};
};

/// A module of the booted release that boot did not start, and why: there
/// was state, but none its version can read (release/release_handler.hpp).
struct NotStartedModule {
  std::string module;
  std::string reason;  ///< one line, ending with how to proceed
};

/// What `status` says about the host itself.
struct HostInfo {
  std::string version;  ///< Molt's version
  long pid = 0;
  std::chrono::system_clock::time_point started_at;  ///< of this process
  /// 1 for a moltd started by hand or by systemd; one more at each hot restart.
  std::uint64_t generation = 1;
  std::string binary;         ///< the program this process runs
  /// The sha256 of that file as it was at start (computed when first asked).
  std::function<std::string()> binary_sha256 = {};
  std::string http;  ///< bound address, e.g. 127.0.0.1:8080
  std::string run_dir;
  std::string plugin_dir;
  std::string control_socket;
  /// The module listeners and their connections, when there is a stream server.
  std::function<std::vector<ListenerInfo>()> listeners = {};
  /// Connections open on the HTTP listener, once it exists (for the metrics).
  std::function<std::size_t()> http_connections = {};
  /// Connections the HTTP listener turned away past maxclients, once it exists.
  std::function<std::uint64_t()> http_refused = {};
  /// Bytes the module connections' buffers hold now, and their budget
  /// (max_connection_memory; 0: none), when there is a stream server.
  std::function<std::uint64_t()> connection_buffer_bytes = {};
  std::uint64_t max_connection_memory = 0;
  /// host.call_warn_ms: a call running longer is a module stuck, as status shows it.
  std::chrono::milliseconds call_warn{5000};
  /// The modules boot refused to start, until restored; empty when not known.
  std::function<std::vector<NotStartedModule>()> not_started = {};
  /// The snapshots moltd takes by itself, asked for and not yet written:
  /// module -> why ("upgrade", "periodic").
  std::function<std::map<std::string, std::string>()> pending_snapshots = {};
  /// Hands this moltd over to a new process (handover/hot_restart.hpp): the
  /// report as JSON text, or the error. Empty: not offered.
  std::function<Result<std::string>(const std::optional<std::string>& binary)> hot_restart = {};
  /// Moves a module to the moltd whose peer listener is `to` (none: back to
  /// where it came from) (handoff/handoff.hpp): the report as JSON text, or
  /// the error. Empty: not offered.
  std::function<Result<std::string>(const std::string& module, const std::optional<std::string>& to)> handoff = {};
  /// The modules' ownership entries and this moltd's peer address, as JSON
  /// text (Handoff::status); empty: none.
  std::function<std::string()> handoffs = {};
  /// Hands every module this moltd runs to the peer `to`, one after the
  /// other, and says this moltd is not ready from then on (GET /-/ready);
  /// stops at `deadline` (steady clock). The reports as JSON text
  /// ({"modules":[...], "failed":[...]}), or the error. Empty: not offered.
  std::function<Result<std::string>(const std::string& to, std::chrono::steady_clock::time_point deadline)> drain = {};
  /// Why this moltd should get no new traffic (GET /-/ready answers 503),
  /// or nothing. Empty: always ready.
  std::function<std::optional<std::string>()> not_ready = {};
  /// The HTTP address ("HOST:PORT") of the moltd a module moved to, where
  /// its requests are forwarded; nothing if it did not move. Empty: none.
  std::function<std::optional<std::string>(std::string_view module)> moved_http = {};
  /// host.handoff_http = "redirect": a moved module's requests get a 307 to
  /// that address instead of being forwarded.
  bool redirect_moved_http = false;
};

}  // namespace molt::host
