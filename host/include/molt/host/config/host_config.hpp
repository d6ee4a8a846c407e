// moltd's configuration: a TOML file, with command-line overrides.
//
//   [host]
//   run_dir = "run"                  # control socket, log, pid lock, image copies
//   plugin_dir = "run/plugins"       # where operators drop new versions
//   http = "127.0.0.1:8080"
//   [modules.counter]
//   version = 1                      # or: file = "counter-1.so"
//   [modules.counter.config]         # handed to the module as strings
//   default_key = "main"
//
// Relative paths are relative to the directory moltd starts in. Every key is
// checked; an unknown key is an error (it is usually a typo).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
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

struct ModuleConfig {
  std::string name;
  std::filesystem::path file;  ///< resolved: plugin_dir/<name>-<version>.so, or `file`
  api::Values values;          ///< [modules.<name>.config]
  std::vector<Endpoint> listen;  ///< TCP listeners the host owns for this module's streams
};

struct HostConfig {
  std::filesystem::path source;  ///< the file this came from
  std::filesystem::path run_dir = "run";
  std::filesystem::path plugin_dir = "run/plugins";
  Endpoint http{"127.0.0.1", 8080};
  unsigned http_threads = 4;
  unsigned io_threads = 2;                        ///< threads serving module streams (listen =)
  unsigned job_threads = 2;                       ///< threads stepping the modules' jobs
  std::uint64_t max_stream_buffer_bytes = 256u << 20;  ///< unconsumed input per connection
  std::uint64_t max_request_bytes = 1 << 20;  ///< HTTP request body; larger ones get 413
  std::chrono::milliseconds quiesce_timeout{5000};
  std::uint64_t max_state_bytes = 1ull << 30;
  std::string log_level = "info";
  std::string log_format = "text";  ///< "text" or "json" (one object per line)
  std::string release = "initial";          ///< name of the release the [modules] describe (first start)
  std::chrono::seconds probation{60};       ///< how long a new release is watched; 0: permanent at once
  double probation_max_error_rate = 0.05;   ///< failed calls / calls during probation that rolls back
  std::uint64_t probation_min_calls = 20;   ///< calls needed before that rate counts
  std::chrono::seconds snapshot_interval{0};  ///< 0: snapshots only after upgrades and at shutdown
  std::vector<ModuleConfig> modules;
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
