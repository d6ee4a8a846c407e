#include "molt/host/net/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>

#include "molt/host/common/json_text.hpp"

namespace molt::host {

std::string escape_label_value(std::string_view value) {
  // The format is UTF-8: an invalid byte becomes \xNN first, and its
  // backslash is then escaped like any other.
  std::string out;
  out.reserve(value.size());
  for (const char c : utf8_safe(value)) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string format_metric_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buffer[400];  // fixed notation of up to 1e15, or the shortest of any double
  const double magnitude = std::fabs(value);
  const bool fixed = magnitude == 0 || (magnitude >= 1e-9 && magnitude < 1e15);
  const auto end = fixed ? std::to_chars(buffer, buffer + sizeof buffer, value, std::chars_format::fixed).ptr
                         : std::to_chars(buffer, buffer + sizeof buffer, value).ptr;
  return std::string(buffer, end);
}

// --- the writer ---------------------------------------------------------------

void MetricsText::family(std::string_view name, std::string_view type, std::string_view help) {
  // In HELP, only backslash and line feed are escaped.
  std::string escaped;
  for (const char c : help) {
    if (c == '\\') escaped += "\\\\";
    else if (c == '\n') escaped += "\\n";
    else escaped += c;
  }
  out_.append("# HELP ").append(name).append(" ").append(escaped).append("\n");
  out_.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

void MetricsText::begin(std::string_view name, std::string_view suffix, const Labels& labels, std::string_view le) {
  out_.append(name).append(suffix);
  if (labels.empty() && le.empty()) {
    out_ += ' ';
    return;
  }
  char separator = '{';
  for (const auto& [label, value] : labels) {
    out_.append(1, separator).append(label).append("=\"").append(escape_label_value(value)).append("\"");
    separator = ',';
  }
  if (!le.empty()) out_.append(1, separator).append("le=\"").append(le).append("\"");
  out_.append("} ");
}

void MetricsText::sample(std::string_view name, const Labels& labels, std::uint64_t value) {
  begin(name, {}, labels);
  out_.append(std::to_string(value)).append("\n");
}

void MetricsText::sample(std::string_view name, const Labels& labels, double value) {
  begin(name, {}, labels);
  out_.append(format_metric_value(value)).append("\n");
}

void MetricsText::histogram(std::string_view name, const Labels& labels, const DurationHistogram::Counts& counts) {
  using Seconds = std::chrono::duration<double>;
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < DurationHistogram::kBounds.size(); ++i) {
    cumulative += counts.buckets[i];
    begin(name, "_bucket", labels, format_metric_value(Seconds(DurationHistogram::kBounds[i]).count()));
    out_.append(std::to_string(cumulative)).append("\n");
  }
  const std::uint64_t count = counts.count();
  begin(name, "_bucket", labels, "+Inf");
  out_.append(std::to_string(count)).append("\n");
  begin(name, "_sum", labels);
  out_.append(format_metric_value(Seconds(counts.sum).count())).append("\n");
  begin(name, "_count", labels);
  out_.append(std::to_string(count)).append("\n");
}

// --- the metrics ----------------------------------------------------------------

namespace {

double epoch_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

struct ModuleMetrics {
  std::string name;
  RunningVersion running;
  SlotStats stats;
  DurationHistogram::Counts call_durations;
};

void host_metrics(MetricsText& out, const ModuleTable& table, const HostInfo& host) {
  const auto now = std::chrono::system_clock::now();
  out.family("molt_build_info", "gauge", "Molt's version; the value is always 1.");
  out.sample("molt_build_info", {{"version", host.version}}, std::uint64_t{1});
  out.family("molt_start_time_seconds", "gauge", "When moltd started, in seconds since the Unix epoch.");
  out.sample("molt_start_time_seconds", {}, epoch_seconds(host.started_at));
  out.family("molt_uptime_seconds", "gauge", "Seconds since moltd started.");
  out.sample("molt_uptime_seconds", {}, std::chrono::duration<double>(now - host.started_at).count());
  out.family("molt_loaded_images", "gauge",
             "Module images (private copies of .so files) loaded now: one per module, and for a moment two while "
             "an upgrade runs.");
  out.sample("molt_loaded_images", {}, std::uint64_t{table.loader().loaded_images()});
  if (host.http_connections) {
    out.family("molt_http_connections", "gauge", "Connections open now on the HTTP listener.");
    out.sample("molt_http_connections", {{"listener", host.http}}, std::uint64_t{host.http_connections()});
  }
  if (host.http_refused) {
    out.family("molt_http_refused_connections_total", "counter",
               "Connections the HTTP listener answered 503 and closed because it had maxclients already.");
    out.sample("molt_http_refused_connections_total", {{"listener", host.http}}, host.http_refused());
  }
  if (host.connection_buffer_bytes) {
    out.family("molt_connection_buffer_bytes", "gauge",
               "Bytes the module connections' input and output buffers hold now, all listeners together.");
    out.sample("molt_connection_buffer_bytes", {}, host.connection_buffer_bytes());
    if (host.max_connection_memory != 0) {
      out.family("molt_connection_buffer_limit_bytes", "gauge",
                 "max_connection_memory: past it the connections holding the most are closed.");
      out.sample("molt_connection_buffer_limit_bytes", {}, host.max_connection_memory);
    }
  }
  const auto listeners = host.listeners ? host.listeners() : std::vector<ListenerInfo>{};
  if (listeners.empty()) return;
  std::vector<std::string> endpoints;
  endpoints.reserve(listeners.size());
  for (const auto& listener : listeners) endpoints.push_back(listener.endpoint.to_string());
  out.family("molt_listener_connections", "gauge", "Connections open now on a module's listener (listen).");
  for (std::size_t i = 0; i < listeners.size(); ++i)
    out.sample("molt_listener_connections", {{"module", listeners[i].module}, {"listener", endpoints[i]}},
               std::uint64_t{listeners[i].connections});
  out.family("molt_listener_accepted_connections_total", "counter",
             "Connections a module's listener has accepted since it was opened.");
  for (std::size_t i = 0; i < listeners.size(); ++i)
    out.sample("molt_listener_accepted_connections_total", {{"module", listeners[i].module}, {"listener", endpoints[i]}},
               listeners[i].accepted);
  out.family("molt_listener_maxclients", "gauge",
             "Connections a module's listener serves at most (maxclients, as lowered to fit RLIMIT_NOFILE).");
  for (std::size_t i = 0; i < listeners.size(); ++i)
    out.sample("molt_listener_maxclients", {{"module", listeners[i].module}, {"listener", endpoints[i]}},
               std::uint64_t{listeners[i].maxclients});
  out.family("molt_listener_refused_connections_total", "counter",
             "Connections a module's listener turned away past maxclients (with the module's refusal reply).");
  for (std::size_t i = 0; i < listeners.size(); ++i)
    out.sample("molt_listener_refused_connections_total", {{"module", listeners[i].module}, {"listener", endpoints[i]}},
               listeners[i].refused);
  out.family("molt_listener_limit_closed_connections_total", "counter",
             "Connections the host closed for a limit: timeout, client_query_buffer_limit, "
             "client_output_buffer_hard_limit or max_connection_memory (label limit).");
  for (std::size_t i = 0; i < listeners.size(); ++i)
    for (std::size_t why = 0; why < kLimitCloses; ++why)
      out.sample("molt_listener_limit_closed_connections_total",
                 {{"module", listeners[i].module},
                  {"listener", endpoints[i]},
                  {"limit", to_string(static_cast<LimitClose>(why))}},
                 listeners[i].closed_by_limit[why]);
}

void module_metrics(MetricsText& out, const std::vector<ModuleMetrics>& modules) {
  out.family("molt_module_info", "gauge",
             "The version each module runs now, with its state schema and its file's SHA-256; the value is always 1.");
  for (const auto& m : modules) {
    const std::string version = std::to_string(m.running.info.version.value);
    const std::string schema = std::to_string(m.running.info.schema.value);
    out.sample("molt_module_info",
               {{"module", m.name}, {"version", version}, {"schema", schema}, {"file_sha256", m.running.sha256}},
               std::uint64_t{1});
  }
  out.family("molt_module_calls_total", "counter",
             "Calls into the module since moltd started, over every version: HTTP requests, and reads handed to it "
             "from its connections; failed ones included.");
  for (const auto& m : modules) out.sample("molt_module_calls_total", {{"module", m.name}}, m.stats.calls);
  out.family("molt_module_call_errors_total", "counter",
             "Calls whose handler threw: answered 500 over HTTP; on a connection, the connection is closed.");
  for (const auto& m : modules) out.sample("molt_module_call_errors_total", {{"module", m.name}}, m.stats.failed_calls);
  out.family("molt_module_call_duration_seconds", "histogram",
             "Time from a call asking for its turn until the module returned: includes the wait for the module's "
             "call gate (behind other calls, or an upgrade's pause), not the network.");
  for (const auto& m : modules) out.histogram("molt_module_call_duration_seconds", {{"module", m.name}}, m.call_durations);
  out.family("molt_module_calls_in_flight", "gauge", "Calls running in the module now.");
  for (const auto& m : modules) out.sample("molt_module_calls_in_flight", {{"module", m.name}}, m.stats.gate.inside);
  out.family("molt_module_calls_waiting", "gauge",
             "Calls waiting for their turn now: behind a call in progress (serial modules), or held by an upgrade's "
             "pause.");
  for (const auto& m : modules) out.sample("molt_module_calls_waiting", {{"module", m.name}}, m.stats.gate.waiting);
  out.family("molt_module_oldest_call_seconds", "gauge",
             "How long the longest-running call in the module now has run (or what holds it suspended: a snapshot, "
             "an upgrade); 0 when it is idle. A module stuck in a call shows here first (host.call_warn_ms).");
  for (const auto& m : modules) {
    double seconds = 0;
    if (m.stats.gate.oldest)
      seconds = std::chrono::duration<double>(CallGate::Clock::now() - m.stats.gate.oldest->since).count();
    out.sample("molt_module_oldest_call_seconds", {{"module", m.name}}, seconds);
  }
  out.family("molt_module_state_bytes", "gauge",
             "Size of the module's state the last time it was saved (by an upgrade or a snapshot); absent until "
             "then.");
  for (const auto& m : modules)
    if (m.stats.state_bytes) out.sample("molt_module_state_bytes", {{"module", m.name}}, *m.stats.state_bytes);
}

void upgrade_metrics(MetricsText& out, const std::vector<ModuleMetrics>& modules,
                     const std::map<std::string, UpgradeTotals, std::less<>>& totals) {
  // Every running module, with zeros until its first upgrade (so that
  // increase() sees the first one), and any removed module that had some.
  std::vector<std::pair<std::string_view, const UpgradeTotals*>> rows;
  static const UpgradeTotals kNone;
  for (const auto& m : modules) {
    const auto it = totals.find(m.name);
    rows.emplace_back(m.name, it == totals.end() ? &kNone : &it->second);
  }
  for (const auto& [name, total] : totals)
    if (std::none_of(modules.begin(), modules.end(), [&](const ModuleMetrics& m) { return m.name == name; }))
      rows.emplace_back(name, &total);

  out.family("molt_upgrades_total", "counter",
             "Upgrades of the module (reload, rollback, upgrade script, restore) by outcome: succeeded; rolled back "
             "(failed while paused, the old version serves on); refused (failed before pausing, nothing changed).");
  for (const auto& [name, total] : rows)
    for (const Outcome outcome : kOutcomes)
      out.sample("molt_upgrades_total", {{"module", name}, {"outcome", to_string(outcome)}}, total->count(outcome));
  out.family("molt_upgrade_pause_seconds", "histogram",
             "How long each upgrade that paused the module held its calls back (quiesce, save, migrate, resume), "
             "whether it succeeded or rolled back; a refused upgrade does not pause.");
  for (const auto& [name, total] : rows) out.histogram("molt_upgrade_pause_seconds", {{"module", name}}, total->pause);
  out.family("molt_upgrade_queued_calls_total", "counter",
             "Calls that arrived while an upgrade paused the module, waited, and ran after it.");
  for (const auto& [name, total] : rows) out.sample("molt_upgrade_queued_calls_total", {{"module", name}}, total->queued_calls);
}

}  // namespace

std::string render_metrics(const ModuleTable& table, const HostInfo& host) {
  std::vector<ModuleMetrics> modules;
  for (const auto& slot : table.slots())
    modules.push_back(ModuleMetrics{slot->name(), slot->running(), slot->stats(), slot->call_durations()});
  MetricsText out;
  host_metrics(out, table, host);
  module_metrics(out, modules);
  upgrade_metrics(out, modules, table.history().totals());
  return out.take();
}

}  // namespace molt::host
