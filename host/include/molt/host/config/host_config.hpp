// moltd's configuration: a TOML file, with command-line overrides.
//
//   [host]
//   run_dir = "run"                  # control socket, log, pid lock, image copies
//   plugin_dir = "run/plugins"       # where operators drop new versions
//   http = "127.0.0.1:8080"
//   maxclients = 10000               # per listener; see "Limits" in docs/operations.md
//   [modules.counter]
//   version = 1                      # or: file = "counter-1.so"
//   [modules.counter.config]         # handed to the module as strings
//   default_key = "main"
//   [modules.kv]                     # runs here only once a peer hands it over
//   accept_handoff = true
//   listen = "0.0.0.0:6380"
//
// Relative paths are relative to the directory moltd starts in. Every key is
// checked; an unknown key is an error (it is usually a typo).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/types.hpp"

namespace molt::host {

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
  [[nodiscard]] std::string to_string() const;
};

/// Parses "HOST:PORT" (port 0: any free port).
[[nodiscard]] std::optional<Endpoint> parse_endpoint(std::string_view text);

/// Parses a size: an integer of bytes, or a string with Redis's units,
/// case-insensitive: "512kb", "64mb", "1gb" (powers of 1024), "1k", "1m",
/// "1g" (powers of 1000), "100b" or "100" (bytes). Nothing if malformed or
/// larger than UINT64_MAX.
[[nodiscard]] std::optional<std::uint64_t> parse_size(std::string_view text);

/// What a listener admits: one module listener, or the HTTP listener.
struct ClientLimits {
  /// Connections open at once on the listener; the next one is refused
  /// (Redis's maxclients).
  std::uint32_t maxclients = 10000;
  /// A stream connection with nothing received and nothing left to send for
  /// this long is closed; 0: never (Redis's timeout). Not used for HTTP,
  /// whose idle keep-alive connections close after 60 s.
  std::chrono::seconds timeout{0};
};

struct ModuleConfig {
  std::string name;
  std::filesystem::path file;  ///< resolved: plugin_dir/<name>-<version>.so, or `file`
  api::Values values;          ///< [modules.<name>.config]
  std::vector<Endpoint> listen;  ///< TCP listeners the host owns for this module's streams
  /// May be received from a peer moltd (docs/handoff.md). With no version
  /// and no file (`file` empty) nothing runs here until a handoff brings it.
  bool accept_handoff = false;
};

struct HostConfig {
  std::filesystem::path source;  ///< the file this came from
  std::filesystem::path run_dir = "run";
  std::filesystem::path plugin_dir = "run/plugins";
  Endpoint http{"127.0.0.1", 8080};
  unsigned http_threads = 4;
  unsigned io_threads = 2;                        ///< threads serving module streams (listen =)
  unsigned job_threads = 2;                       ///< threads stepping the modules' jobs
  /// Every listener's, unless its module's table overrides them.
  ClientLimits clients;
  /// [modules.<name>] maxclients / timeout, resolved over `clients`; only the
  /// modules that set one of them.
  std::map<std::string, ClientLimits, std::less<>> module_clients;
  /// Unconsumed input a stream connection may hold (Redis's
  /// client-query-buffer-limit); past it the connection is closed. Also read
  /// as the deprecated max_stream_buffer_bytes.
  std::uint64_t client_query_buffer_limit = 1ull << 30;
  /// Unsent output at which a stream connection stops being read and
  /// StreamOutput::has_room() turns false (client-output-buffer-limit's soft).
  std::uint64_t client_output_buffer_soft_limit = 1u << 20;
  /// Unsent output past which the connection is closed; 0: none.
  std::uint64_t client_output_buffer_hard_limit = 0;
  /// All stream connections' buffers together, input and output (Redis's
  /// maxmemory-clients); past it the connections holding the most are
  /// closed first. 0: no budget.
  std::uint64_t max_connection_memory = 2ull << 30;
  std::uint64_t max_request_bytes = 1 << 20;  ///< HTTP request body; larger ones get 413
  std::chrono::milliseconds quiesce_timeout{5000};
  // Deadlines on the calls the host makes into a module on its own behalf;
  // a call that misses one counts as a failure of that module.
  std::chrono::milliseconds health_timeout{2000};  ///< a health check, its wait for its turn included
  std::chrono::milliseconds save_timeout{60000};   ///< a snapshot's save_state, once calls in progress finished
  std::chrono::milliseconds stop_timeout{5000};    ///< an instance's stop() and destructor
  /// A call into a module running longer than this is logged once (and
  /// shows in status as it runs); 0: no warning.
  std::chrono::milliseconds call_warn{5000};
  /// At SIGTERM: how long requests in flight get to finish.
  std::chrono::milliseconds shutdown_grace{10000};
  /// When new code is first run in a child process (molt-rehearse):
  /// "migrating" (upgrades that convert state), "always", "never".
  std::string rehearse = "migrating";
  std::chrono::milliseconds rehearse_timeout{30000};  ///< for the whole rehearsal
  /// Pre-copy (upgrade/precopy.hpp): "auto" (modules that implement it) or "never".
  std::string precopy = "auto";
  std::chrono::microseconds precopy_call{1000};         ///< the module's time per pre-copy call
  std::chrono::milliseconds precopy_pause_target{10};   ///< a round this short ends the rounds
  unsigned precopy_max_rounds = 16;
  std::string precopy_fallback = "pause";  ///< rounds that do not converge: "pause" (move the rest) or "refuse"
  std::uint64_t max_state_bytes = 1ull << 30;
  std::string log_level = "info";
  std::string log_format = "text";  ///< "text" or "json" (one object per line)
  std::string release = "initial";          ///< name of the release the [modules] describe (first start)
  std::chrono::seconds probation{60};       ///< how long a new release is watched; 0: permanent at once
  double probation_max_error_rate = 0.05;   ///< failed calls / calls during probation that rolls back
  std::uint64_t probation_min_calls = 20;   ///< calls needed before that rate counts
  std::chrono::seconds snapshot_interval{0};  ///< 0: snapshots only after upgrades and at shutdown
  /// How long after an install its snapshot is taken (in the background):
  /// the installs within it (an upgrade and its rollback, a script) share one.
  std::chrono::milliseconds install_snapshot_delay{1000};
  /// Handoffs (docs/handoff.md): where this moltd accepts peers (none: it
  /// only sends), the shared secret both sides prove they know (a file of
  /// mode 0600 or stricter, read at start), how long a moved module's
  /// existing connections are still served here, and what a new
  /// connection to a moved module's listener gets.
  std::optional<Endpoint> peer;
  std::filesystem::path peer_secret_file;
  std::string peer_secret;  ///< read from peer_secret_file by load_host_config
  std::chrono::seconds handoff_drain{60};
  /// "moved": a new connection gets -MOVED 0 HOST:PORT; "forward": it is
  /// forwarded during the drain too.
  std::string handoff_new_connections = "moved";
  /// "forward": a moved module's HTTP requests are forwarded to where it is
  /// now; "redirect": they get 307 Temporary Redirect to there.
  std::string handoff_http = "forward";
  std::chrono::milliseconds handoff_timeout{10000};  ///< each step of a handoff, and the freeze
  std::vector<ModuleConfig> modules;
  /// Things that work but should change (a deprecated key), for the log.
  std::vector<std::string> warnings;

  /// The client limits of `module`'s listeners.
  [[nodiscard]] ClientLimits clients_of(std::string_view module) const;
};

/// What the command line may override.
struct ConfigOverrides {
  std::optional<std::filesystem::path> run_dir;
  std::optional<std::string> http;
  std::optional<std::string> log_level;
  std::optional<std::string> log_format;
};

/// Reads and checks `path`. Errors are one line: "<file>: <key>: <reason>".
[[nodiscard]] Result<HostConfig> load_host_config(const std::filesystem::path& path, const ConfigOverrides& overrides = {});

}  // namespace molt::host
