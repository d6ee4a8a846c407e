// What the HTTP server answers, apart from the wire: /-/status is the host's
// status; /<module>/... goes to that module.
#pragma once

#include <spdlog/logger.h>

#include "molt/host/control/control_handler.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "molt/message.hpp"

namespace molt::host {

class HttpRouter {
 public:
  HttpRouter(ModuleTable& table, const HostInfo& host) : table_(table), host_(host) {}

  /// Answers one request. A module that throws gives 500 (logged by the
  /// module's logger, naming it); an unknown module 404.
  [[nodiscard]] api::Response route(const api::Request& request);

 private:
  ModuleTable& table_;
  const HostInfo& host_;
};

}  // namespace molt::host
