// What the HTTP server answers, apart from the wire: /-/status is the host's
// status, /-/history the recent upgrade reports, /-/ the status page that
// shows both, /-/metrics the metrics for Prometheus, /-/ready a readiness
// probe (false while the host drains); /<module>/... goes to that module,
// or, once it moved to another moltd, is forwarded there (http_forward.hpp)
// or redirected there (307, host.handoff_http = "redirect").
#pragma once

#include <spdlog/logger.h>

#include "molt/host/net/http_server.hpp"
#include "molt/host/runtime/host_info.hpp"
#include "molt/host/runtime/status.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "molt/message.hpp"

namespace molt::host {

class HttpRouter {
 public:
  HttpRouter(ModuleTable& table, const HostInfo& host) : table_(table), host_(host) {}

  /// Answers one request. A module that throws gives 500 (logged by the
  /// module's logger, naming it); an unknown module 404.
  [[nodiscard]] HttpReply route(const api::Request& request);

  /// GET /-/history answers with at most this many reports, the most recent
  /// (oldest first), so that a page polling it costs the host little;
  /// `moltctl history` lists every report the host keeps (the last 1000).
  static constexpr std::size_t kHistoryLimit = 200;

 private:
  /// A request for a module that moved to another moltd, forwarded there
  /// (http_forward.hpp) or answered with a 307 to there
  /// (HostInfo::redirect_moved_http); nothing if it did not move.
  [[nodiscard]] std::optional<HttpReply> moved_to(std::string_view module, const api::Request& request) const;
  static constexpr std::chrono::milliseconds kForwardTimeout{10000};
  static constexpr std::size_t kMaxForwardedBody = 64u << 20;

  ModuleTable& table_;
  const HostInfo& host_;
};

}  // namespace molt::host
