// The host's status and upgrade history as JSON: one definition shared by
// `moltctl status`/`history` (control/) and GET /-/status, /-/history (net/).
#pragma once

#include <limits>
#include <string_view>

#include <nlohmann/json.hpp>

#include "molt/host/runtime/host_info.hpp"
#include "molt/host/runtime/module_table.hpp"

namespace molt::host {

/// The host's status: the host, then every module. Shared by `moltctl status`
/// and GET /-/status.
[[nodiscard]] nlohmann::json status_json(const ModuleTable& table, const HostInfo& host);

/// {"ok":true,"reports":[...]}: the upgrade reports of `module` (all modules
/// when empty), oldest first, at most the `last` most recent. Shared by
/// `moltctl history` and GET /-/history.
[[nodiscard]] nlohmann::json history_json(const HistoryLog& history, std::string_view module = {},
                                          std::size_t last = std::numeric_limits<std::size_t>::max());

}  // namespace molt::host
