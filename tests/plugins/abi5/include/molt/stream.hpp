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
/// during that call; writes are sent in order, as soon as the socket takes
/// them.
///
/// Backpressure: a client that sends requests and never reads the replies
/// must not make the host buffer replies without end. Before answering each
/// request, a module asks has_room(); once it says no, the module returns
/// what it has consumed so far. The host then stops reading the connection,
/// sends what is buffered as the client takes it, and calls on_data again
/// with the rest of the input once the output is below the limit. So a
/// connection's unsent output stays near the host's soft limit
/// (client_output_buffer_soft_limit) whatever the client does.
class StreamOutput {
 public:
  /// Appends `bytes` to what goes back to the client.
  virtual void write(std::string_view bytes) = 0;
  /// Closes the connection once everything written so far has been sent.
  virtual void close_after_write() = 0;
  /// Whether the module should answer another request in this call: true
  /// while nothing is unsent, or while the unsent output plus a reply as
  /// large as the last one (the bytes written since the previous
  /// has_room()) stays within the soft limit. Ask before each request;
  /// answering one anyway is allowed, never required.
  [[nodiscard]] virtual bool has_room() const = 0;

 protected:
  ~StreamOutput() = default;  // not owned by modules
};

}  // namespace molt::api
