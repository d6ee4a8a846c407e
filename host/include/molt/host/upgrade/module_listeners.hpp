// The listening sockets a module owns, as the release code sees them: opened
// when a module is added or booted, closed when it is removed. net/'s
// StreamServer implements it; the release code receives it and never touches
// a socket itself (as Envoy's hot restart keeps its logic apart from the
// socket I/O), so it can be tested with a fake (tests/unit/release_test.cpp).
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/host/config/host_config.hpp"

namespace molt::host {

class ModuleSlot;

class ModuleListeners {
 public:
  virtual ~ModuleListeners() = default;
  /// Serves `slot`'s module on `endpoints` (or on sockets handed over for it,
  /// such as systemd's); returns the addresses it serves. On failure no
  /// listener of this call stays open.
  [[nodiscard]] virtual Result<std::vector<Endpoint>> listen_module(const std::vector<Endpoint>& endpoints,
                                                                    std::shared_ptr<ModuleSlot> slot) = 0;
  /// Closes `module`'s listeners and its connections. Never fails.
  virtual void close_module(std::string_view module) = 0;
};

/// For a host without module listeners (tests, tools): every module listens
/// nowhere; listening on an endpoint is refused.
class NoListeners final : public ModuleListeners {
 public:
  [[nodiscard]] Result<std::vector<Endpoint>> listen_module(const std::vector<Endpoint>& endpoints,
                                                            std::shared_ptr<ModuleSlot>) override {
    if (endpoints.empty()) return std::vector<Endpoint>{};
    return Error{{}, {}, {}, Phase::Start, "this host has no module listeners (" + endpoints.front().to_string() + ")"};
  }
  void close_module(std::string_view) override {}
};

}  // namespace molt::host
