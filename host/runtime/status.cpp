#include "molt/host/runtime/status.hpp"

#include <array>
#include <optional>

namespace molt::host {
namespace {

using Json = nlohmann::json;

/// The longest-running call in the module now (or what holds it suspended),
/// or null when it is idle.
Json oldest_call_json(const CallGate::Counts& gate) {
  if (!gate.oldest) return nullptr;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(CallGate::Clock::now() - gate.oldest->since);
  return Json{{"what", gate.oldest->what}, {"running_ms", ms.count()}};
}

std::int64_t epoch_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

}  // namespace

Json status_json(const ModuleTable& table, const HostInfo& host) {
  const auto now = std::chrono::system_clock::now();
  const auto listeners = host.listeners ? host.listeners() : std::vector<ListenerInfo>{};
  const auto pending = host.pending_snapshots ? host.pending_snapshots() : std::map<std::string, std::string>{};
  Json modules = Json::array();
  for (const auto& slot : table.slots()) {
    const auto snapshot_pending = pending.find(slot->name());
    Json listen = Json::array();
    std::size_t connections = 0;
    std::uint64_t refused = 0;
    std::array<std::uint64_t, kLimitCloses> closed_by_limit{};
    std::optional<std::uint32_t> maxclients;
    for (const auto& listener : listeners) {
      if (listener.module != slot->name()) continue;
      listen.push_back(listener.endpoint.to_string());
      connections += listener.connections;
      refused += listener.refused;
      for (std::size_t i = 0; i < kLimitCloses; ++i) closed_by_limit[i] += listener.closed_by_limit[i];
      maxclients = listener.maxclients;  // the same for each of a module's listeners
    }
    Json closed = Json::object();
    for (std::size_t i = 0; i < kLimitCloses; ++i)
      closed[std::string(to_string(static_cast<LimitClose>(i)))] = closed_by_limit[i];
    const RunningVersion running = slot->running();
    const SlotStats stats = slot->stats();
    const auto previous = slot->previous();
    modules.push_back({
        {"name", slot->name()},
        {"version", running.info.version.value},
        {"schema", running.info.schema.value},
        {"call_mode", running.info.call_mode == api::CallMode::Serial ? "serial" : "concurrent"},
        {"abi", running.info.abi},  // the plugin ABI it was built for: what still needs a rebuild before a major bump
        {"file", running.file},
        {"sha256", running.sha256},
        {"since_ms", epoch_ms(running.since)},
        {"previous_version", previous ? Json(previous->info.version.value) : Json(nullptr)},
        {"calls", stats.calls},
        {"failed_calls", stats.failed_calls},
        {"in_flight", stats.gate.inside},
        {"queued", stats.gate.waiting},
        {"oldest_call", oldest_call_json(stats.gate)},
        {"state_bytes", stats.state_bytes ? Json(*stats.state_bytes) : Json(nullptr)},
        // A snapshot asked for and not yet written: "upgrade" (after an install) or "periodic".
        {"snapshot_pending", snapshot_pending != pending.end() ? Json(snapshot_pending->second) : Json(nullptr)},
        {"listen", listen},
        {"connections", connections},
        {"maxclients", maxclients ? Json(*maxclients) : Json(nullptr)},
        {"refused_connections", refused},
        {"closed_by_limit", closed},
        {"timers", slot->timers()},
        {"jobs", slot->jobs()},
    });
  }
  Json not_started = Json::array();
  if (host.not_started)
    for (const auto& m : host.not_started()) not_started.push_back({{"module", m.module}, {"reason", m.reason}});
  Json handoff = Json::object();
  if (host.handoffs) handoff = Json::parse(host.handoffs());
  return Json{{"ok", true},
              {"handoff", handoff},
              {"host",
               {{"version", host.version},
                {"pid", host.pid},
                {"generation", host.generation},
                {"binary", host.binary},
                {"binary_sha256", host.binary_sha256 ? host.binary_sha256() : std::string()},
                {"started_at_ms", epoch_ms(host.started_at)},
                {"uptime_s", std::chrono::duration_cast<std::chrono::seconds>(now - host.started_at).count()},
                {"http", host.http},
                {"run_dir", host.run_dir},
                {"plugin_dir", host.plugin_dir},
                {"control_socket", host.control_socket},
                {"call_warn_ms", host.call_warn.count()},
                {"connection_buffer_bytes",
                 host.connection_buffer_bytes ? Json(host.connection_buffer_bytes()) : Json(nullptr)},
                {"max_connection_memory", host.max_connection_memory}}},
              {"modules", modules},
              {"not_started", not_started}};
}

Json history_json(const HistoryLog& history, std::string_view module, std::size_t last) {
  Json reports = Json::array();
  for (auto& entry : history.entries(module, last)) reports.push_back(std::move(entry));
  return Json{{"ok", true}, {"reports", reports}};
}

}  // namespace molt::host
