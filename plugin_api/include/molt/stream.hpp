// Byte streams: TCP connections the host owns and hands to a module.
//
// The host accepts connections on a module's listeners, reads their bytes,
// and calls Module::on_data with everything not consumed yet. The module
// consumes what it can (whole frames) and writes replies through a
// StreamOutput. The host keeps the unconsumed rest, across any number of
// upgrades: a connection never notices that its module changed version.
#pragma once

#include <cstdint>
#include <string_view>

namespace molt::api {

/// Names one connection for as long as the host runs; stable across upgrades,
/// so a module may key per-connection state by it (and that state migrates).
using ConnectionId = std::uint64_t;

/// Where a module writes to the connection it was called for. Valid only
/// during that call; writes are sent in order after the call returns.
class StreamOutput {
 public:
  /// Appends `bytes` to what goes back to the client.
  virtual void write(std::string_view bytes) = 0;
  /// Closes the connection once everything written so far has been sent.
  virtual void close_after_write() = 0;

 protected:
  ~StreamOutput() = default;  // not owned by modules
};

}  // namespace molt::api
