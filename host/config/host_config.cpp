#include "molt/host/config/host_config.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <sstream>
#include <set>

#include <toml++/toml.h>

#include "config/toml_fields.hpp"
#include "molt/host/common/secret_file.hpp"
#include "molt/module.hpp"

namespace molt::host {
namespace fs = std::filesystem;
namespace {

const std::set<std::string, std::less<>> kLogLevels{"trace", "debug", "info", "warn", "error", "critical", "off"};
constexpr std::int64_t kMaxClients = 1 << 20;  // Linux's default fs.nr_open: more descriptors are impossible anyway
constexpr std::uint64_t kTiB = 1ull << 40;

/// 1048576 -> "1mb": the largest unit that divides it.
std::string size_text(std::uint64_t bytes) {
  for (const auto& [shift, unit] : {std::pair{40, "tb"}, {30, "gb"}, {20, "mb"}, {10, "kb"}})
    if (bytes >= (1ull << shift) && bytes % (1ull << shift) == 0) return std::to_string(bytes >> shift) + unit;
  return std::to_string(bytes);
}

/// Carries the first problem found, as "<key>: <reason>".
struct Checker {
  std::optional<std::string> problem;

  void fail(const std::string& key, const std::string& reason) {
    if (!problem) problem = key + ": " + reason;
  }

  void only_keys(const toml::table& table, const std::string& prefix, std::initializer_list<std::string_view> allowed) {
    if (auto unknown = check_only_keys(table, allowed, prefix); unknown && !problem) problem = std::move(unknown);
  }

  std::optional<std::string> string(const toml::table& table, const std::string& prefix, std::string_view key) {
    const auto* node = table.get(key);
    if (node == nullptr) return std::nullopt;
    if (const auto* s = node->as_string()) return s->get();
    fail(prefix + std::string(key), "must be a string");
    return std::nullopt;
  }

  /// A size (parse_size) from `min` to `max` bytes; `zero_means`, when set,
  /// also admits 0 and says what it means.
  std::optional<std::uint64_t> size(const toml::table& table, const std::string& prefix, std::string_view key,
                                    std::uint64_t min, std::uint64_t max, std::string_view zero_means = {}) {
    const auto* node = table.get(key);
    if (node == nullptr) return std::nullopt;
    std::optional<std::uint64_t> value;
    if (const auto* i = node->as_integer(); i != nullptr && i->get() >= 0) value = static_cast<std::uint64_t>(i->get());
    else if (const auto* s = node->as_string()) value = parse_size(s->get());
    if (value && ((*value >= min && *value <= max) || (*value == 0 && !zero_means.empty()))) return value;
    fail(prefix + std::string(key), "must be a size from " + size_text(min) + " to " + size_text(max) +
                                        (zero_means.empty() ? "" : ", or 0 for " + std::string(zero_means)) +
                                        ": bytes, or a string such as \"512kb\", \"64mb\", \"1gb\"");
    return std::nullopt;
  }

  /// maxclients and timeout, in [host] or [modules.<name>].
  void client_limits(const toml::table& table, const std::string& prefix, ClientLimits& limits) {
    if (auto v = integer(table, prefix, "maxclients", 1, kMaxClients)) limits.maxclients = static_cast<std::uint32_t>(*v);
    if (auto v = integer(table, prefix, "timeout", 0, INT32_MAX)) limits.timeout = std::chrono::seconds(*v);
  }

  std::optional<std::int64_t> integer(const toml::table& table, const std::string& prefix, std::string_view key,
                                      std::int64_t min, std::int64_t max) {
    const auto* node = table.get(key);
    if (node == nullptr) return std::nullopt;
    const auto* i = node->as_integer();
    if (i == nullptr || i->get() < min || i->get() > max) {
      fail(prefix + std::string(key), "must be an integer from " + std::to_string(min) + " to " + std::to_string(max));
      return std::nullopt;
    }
    return i->get();
  }
};

std::string value_text(const toml::node& node) {
  if (const auto* s = node.as_string()) return s->get();
  if (const auto* i = node.as_integer()) return std::to_string(i->get());
  if (const auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  if (const auto* f = node.as_floating_point()) {
    std::ostringstream out;
    out << f->get();
    return out.str();
  }
  return {};
}

}  // namespace

std::optional<std::uint64_t> parse_size(std::string_view text) {
  std::uint64_t number = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  std::string unit(end, text.data() + text.size());
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  static constexpr std::pair<std::string_view, std::uint64_t> kUnits[] = {
      {"", 1},           {"b", 1},
      {"k", 1000},       {"kb", 1ull << 10},
      {"m", 1000000},    {"mb", 1ull << 20},
      {"g", 1000000000}, {"gb", 1ull << 30},
  };
  for (const auto& [name, scale] : kUnits) {
    if (unit != name) continue;
    if (number > UINT64_MAX / scale) return std::nullopt;
    return number * scale;
  }
  return std::nullopt;
}

ClientLimits HostConfig::clients_of(std::string_view module) const {
  const auto it = module_clients.find(module);
  return it == module_clients.end() ? clients : it->second;
}

std::string Endpoint::to_string() const { return host + ':' + std::to_string(port); }

std::optional<Endpoint> parse_endpoint(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  unsigned port = 0;
  const std::string_view digits = text.substr(colon + 1);
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc() || end != digits.data() + digits.size() || digits.empty() || port > 65535) return std::nullopt;
  std::string host(text.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);  // [::1]
  return Endpoint{host, static_cast<std::uint16_t>(port)};
}

Result<HostConfig> load_host_config(const fs::path& path, const ConfigOverrides& overrides) {
  auto refuse = [&](const std::string& reason) {
    return Error{{}, {}, path.string(), Phase::Config, reason};
  };
  toml::table root;
  try {
    root = toml::parse_file(path.string());
  } catch (const toml::parse_error& e) {
    return refuse("line " + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }

  HostConfig config;
  config.source = path;
  Checker check;
  check.only_keys(root, "", {"host", "modules"});

  if (const auto* host = root.get_as<toml::table>("host")) {
    check.only_keys(*host, "host.", {"run_dir", "plugin_dir", "http", "http_threads", "io_threads",
                                     "max_stream_buffer_bytes", "max_request_bytes", "quiesce_timeout_ms",
                                     "max_state_bytes", "log_level", "log_format", "release", "probation_seconds",
                                     "probation_max_error_rate", "probation_min_calls", "snapshot_interval_seconds",
                                     "install_snapshot_delay_ms",
                                     "job_threads", "maxclients", "timeout", "client_query_buffer_limit",
                                     "client_output_buffer_soft_limit", "client_output_buffer_hard_limit",
                                     "max_connection_memory", "health_timeout_ms", "save_timeout_ms",
                                     "stop_timeout_ms", "call_warn_ms", "shutdown_grace_ms", "rehearse",
                                     "rehearse_timeout_ms", "precopy", "precopy_call_us", "precopy_pause_target_ms",
                                     "precopy_max_rounds", "precopy_fallback", "peer", "peer_secret_file",
                                     "handoff_drain_seconds", "handoff_timeout_ms", "handoff_new_connections", "handoff_http"});
    check.client_limits(*host, "host.", config.clients);
    if (host->contains("max_stream_buffer_bytes") && host->contains("client_query_buffer_limit"))
      check.fail("host.max_stream_buffer_bytes", "is the old name of client_query_buffer_limit: give only one");
    if (auto v = check.integer(*host, "host.", "max_stream_buffer_bytes", 4096, 1ll << 40)) {
      config.client_query_buffer_limit = static_cast<std::uint64_t>(*v);
      config.warnings.push_back("host.max_stream_buffer_bytes is deprecated: call it client_query_buffer_limit "
                                "(same meaning; sizes such as \"1gb\" allowed)");
    }
    if (auto v = check.size(*host, "host.", "client_query_buffer_limit", 4096, kTiB)) config.client_query_buffer_limit = *v;
    if (auto v = check.size(*host, "host.", "client_output_buffer_soft_limit", 1024, kTiB))
      config.client_output_buffer_soft_limit = *v;
    if (auto v = check.size(*host, "host.", "client_output_buffer_hard_limit", 1024, kTiB, "none")) {
      if (*v != 0 && *v < config.client_output_buffer_soft_limit)
        check.fail("host.client_output_buffer_hard_limit",
                   "must be 0 (none) or at least client_output_buffer_soft_limit (" +
                       size_text(config.client_output_buffer_soft_limit) + ")");
      else
        config.client_output_buffer_hard_limit = *v;
    }
    if (auto v = check.size(*host, "host.", "max_connection_memory", 1ull << 20, kTiB, "no budget"))
      config.max_connection_memory = *v;
    if (auto v = check.string(*host, "host.", "release")) {
      if (v->empty()) check.fail("host.release", "must not be empty");
      else config.release = *v;
    }
    if (auto v = check.integer(*host, "host.", "probation_seconds", 0, 7 * 24 * 3600)) config.probation = std::chrono::seconds(*v);
    if (auto v = check.integer(*host, "host.", "probation_min_calls", 1, 1ll << 40)) config.probation_min_calls = *v;
    if (auto v = check.integer(*host, "host.", "snapshot_interval_seconds", 0, 7 * 24 * 3600))
      config.snapshot_interval = std::chrono::seconds(*v);
    if (auto v = check.integer(*host, "host.", "install_snapshot_delay_ms", 0, 3600 * 1000))
      config.install_snapshot_delay = std::chrono::milliseconds(*v);
    if (const auto* rate = host->get("probation_max_error_rate")) {
      const auto* number = rate->as_floating_point();
      const auto* whole = rate->as_integer();
      const double value = number ? number->get() : whole ? static_cast<double>(whole->get()) : -1;
      if (value < 0 || value > 1) check.fail("host.probation_max_error_rate", "must be a number from 0 to 1");
      else config.probation_max_error_rate = value;
    }
    if (auto v = check.string(*host, "host.", "run_dir")) config.run_dir = *v;
    if (auto v = check.string(*host, "host.", "plugin_dir")) config.plugin_dir = *v;
    if (auto v = check.string(*host, "host.", "http")) {
      if (auto endpoint = parse_endpoint(*v))
        config.http = *endpoint;
      else
        check.fail("host.http", "must look like 127.0.0.1:8080, got '" + *v + "'");
    }
    if (auto v = check.integer(*host, "host.", "http_threads", 1, 256)) config.http_threads = static_cast<unsigned>(*v);
    if (auto v = check.integer(*host, "host.", "io_threads", 1, 256)) config.io_threads = static_cast<unsigned>(*v);
    if (auto v = check.integer(*host, "host.", "job_threads", 1, 256)) config.job_threads = static_cast<unsigned>(*v);
    if (auto v = check.integer(*host, "host.", "max_request_bytes", 1024, 1ll << 30)) config.max_request_bytes = *v;
    if (auto v = check.integer(*host, "host.", "quiesce_timeout_ms", 1, 600000)) config.quiesce_timeout = std::chrono::milliseconds(*v);
    if (auto v = check.integer(*host, "host.", "health_timeout_ms", 1, 600000)) config.health_timeout = std::chrono::milliseconds(*v);
    if (auto v = check.integer(*host, "host.", "save_timeout_ms", 1, 3600000)) config.save_timeout = std::chrono::milliseconds(*v);
    if (auto v = check.integer(*host, "host.", "stop_timeout_ms", 1, 600000)) config.stop_timeout = std::chrono::milliseconds(*v);
    if (auto v = check.integer(*host, "host.", "call_warn_ms", 0, 3600000)) config.call_warn = std::chrono::milliseconds(*v);
    if (auto v = check.integer(*host, "host.", "shutdown_grace_ms", 0, 3600000)) config.shutdown_grace = std::chrono::milliseconds(*v);
    if (auto v = check.string(*host, "host.", "rehearse")) {
      if (*v == "migrating" || *v == "always" || *v == "never") config.rehearse = *v;
      else check.fail("host.rehearse", "must be \"migrating\", \"always\" or \"never\"");
    }
    if (auto v = check.integer(*host, "host.", "rehearse_timeout_ms", 100, 3600000)) config.rehearse_timeout = std::chrono::milliseconds(*v);
    if (auto v = check.string(*host, "host.", "precopy")) {
      if (*v == "auto" || *v == "never") config.precopy = *v;
      else check.fail("host.precopy", "must be \"auto\" or \"never\"");
    }
    if (auto v = check.integer(*host, "host.", "precopy_call_us", 10, 1000000)) config.precopy_call = std::chrono::microseconds(*v);
    if (auto v = check.integer(*host, "host.", "precopy_pause_target_ms", 0, 60000))
      config.precopy_pause_target = std::chrono::milliseconds(*v);
    if (auto v = check.integer(*host, "host.", "precopy_max_rounds", 1, 1000)) config.precopy_max_rounds = static_cast<unsigned>(*v);
    if (auto v = check.string(*host, "host.", "precopy_fallback")) {
      if (*v == "pause" || *v == "refuse") config.precopy_fallback = *v;
      else check.fail("host.precopy_fallback", "must be \"pause\" or \"refuse\"");
    }
    if (auto v = check.integer(*host, "host.", "max_state_bytes", 1024, 1ll << 40)) config.max_state_bytes = *v;
    if (auto v = check.string(*host, "host.", "peer")) {
      if (auto endpoint = parse_endpoint(*v); endpoint && endpoint->port != 0)
        config.peer = *endpoint;
      else
        check.fail("host.peer", "must look like 10.0.0.1:7400 (a port, not 0), got '" + *v + "'");
    }
    if (auto v = check.string(*host, "host.", "peer_secret_file")) config.peer_secret_file = *v;
    if (auto v = check.integer(*host, "host.", "handoff_drain_seconds", 0, 24 * 3600))
      config.handoff_drain = std::chrono::seconds(*v);
    if (auto v = check.string(*host, "host.", "handoff_new_connections")) {
      if (*v == "moved" || *v == "forward") config.handoff_new_connections = *v;
      else check.fail("host.handoff_new_connections", "must be \"moved\" or \"forward\"");
    }
    if (auto v = check.string(*host, "host.", "handoff_http")) {
      if (*v == "forward" || *v == "redirect") config.handoff_http = *v;
      else check.fail("host.handoff_http", "must be \"forward\" or \"redirect\"");
    }
    if (auto v = check.integer(*host, "host.", "handoff_timeout_ms", 100, 600000))
      config.handoff_timeout = std::chrono::milliseconds(*v);
    if (auto v = check.string(*host, "host.", "log_format")) {
      if (*v == "text" || *v == "json") config.log_format = *v;
      else check.fail("host.log_format", "must be text or json");
    }
    if (auto v = check.string(*host, "host.", "log_level")) {
      if (kLogLevels.contains(*v))
        config.log_level = *v;
      else
        check.fail("host.log_level", "must be one of trace, debug, info, warn, error, critical, off");
    }
  } else if (root.contains("host")) {
    check.fail("host", "must be a table");
  }

  if (overrides.run_dir) config.run_dir = *overrides.run_dir;
  if (overrides.http) {
    if (auto endpoint = parse_endpoint(*overrides.http))
      config.http = *endpoint;
    else
      return refuse("--http: must look like 127.0.0.1:8080, got '" + *overrides.http + "'");
  }
  if (overrides.log_format) {
    if (*overrides.log_format != "text" && *overrides.log_format != "json")
      return refuse("--log-format: must be text or json, not '" + *overrides.log_format + "'");
    config.log_format = *overrides.log_format;
  }
  if (overrides.log_level) {
    if (!kLogLevels.contains(*overrides.log_level)) return refuse("--log-level: unknown level '" + *overrides.log_level + "'");
    config.log_level = *overrides.log_level;
  }

  const auto* modules = root.get_as<toml::table>("modules");
  if (modules == nullptr && root.contains("modules")) check.fail("modules", "must be a table of [modules.<name>] tables");
  if (modules != nullptr) {
    for (const auto& [key, node] : *modules) {
      const std::string name(key.str());
      const std::string prefix = "modules." + name + ".";
      const auto* table = node.as_table();
      if (!api::detail::valid_module_name(name)) {
        check.fail("modules." + name, "module names are 1 to 63 characters of [a-z0-9_-]");
        continue;
      }
      if (table == nullptr) {
        check.fail("modules." + name, "must be a table");
        continue;
      }
      check.only_keys(*table, prefix, {"version", "file", "config", "listen", "maxclients", "timeout", "accept_handoff"});
      ModuleConfig module{name, {}, {}, {}};
      if (table->contains("maxclients") || table->contains("timeout")) {
        ClientLimits limits = config.clients;
        check.client_limits(*table, prefix, limits);
        config.module_clients[name] = limits;
      }
      if (const auto* listen = table->get("listen")) {
        if (auto endpoints = parse_listen_address(*listen))
          module.listen = std::move(*endpoints);
        else
          check.fail(prefix + "listen", std::string(kListenAddressForm));
      }
      if (const auto* accept = table->get("accept_handoff")) {
        if (const auto* b = accept->as_boolean()) module.accept_handoff = b->get();
        else check.fail(prefix + "accept_handoff", "must be true or false");
      }
      const auto version = check.integer(*table, prefix, "version", 1, UINT32_MAX);
      const auto file = check.string(*table, prefix, "file");
      if (version && file) check.fail(prefix + "file", "give version or file, not both");
      else if (version) module.file = config.plugin_dir / (name + '-' + std::to_string(*version) + ".so");
      else if (file) module.file = fs::path(*file).is_absolute() ? fs::path(*file) : config.plugin_dir / *file;
      else if (!check.problem && !module.accept_handoff)
        check.fail("modules." + name, "needs version = N or file = \"...\" (or accept_handoff = true: it runs once a peer hands it over)");
      if (const auto* values = table->get("config")) {
        if (const auto* values_table = values->as_table()) {
          for (const auto& [value_key, value] : *values_table) {
            if (value.is_table() || value.is_array())
              check.fail(prefix + "config." + std::string(value_key.str()), "must be a string, number or boolean");
            else
              module.values[std::string(value_key.str())] = value_text(value);
          }
        } else {
          check.fail(prefix + "config", "must be a table");
        }
      }
      config.modules.push_back(std::move(module));
    }
  }
  if (check.problem) return refuse(*check.problem);
  if (config.modules.empty()) return refuse("modules: no [modules.<name>] table: nothing to serve");
  const bool accepts = std::any_of(config.modules.begin(), config.modules.end(),
                                   [](const ModuleConfig& m) { return m.accept_handoff; });
  if ((config.peer || accepts) && config.peer_secret_file.empty())
    return refuse(std::string(config.peer ? "host.peer" : "accept_handoff") +
                  ": needs host.peer_secret_file, the secret peers prove they share");
  if (!config.peer_secret_file.empty()) {
    auto secret = read_secret_file(config.peer_secret_file);
    if (!secret) return refuse("host.peer_secret_file: " + secret.error().reason);
    config.peer_secret = std::move(secret.value());
  }
  return config;
}

}  // namespace molt::host
