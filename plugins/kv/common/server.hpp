// kv's connection handling, shared by every version: frames commands out of
// a connection's input, runs them against the state, writes each reply
// straight to the connection's output.
#pragma once

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "commands.hpp"
#include "molt/context.hpp"
#include "molt/stream.hpp"

namespace kv {

class Server {
 public:
  Server(ParseLimits limits, ServerInfo info) : limits_(limits), info_(info) {}

  CommandTable& table() noexcept { return table_; }
  [[nodiscard]] const ParseLimits& limits() const noexcept { return limits_; }

  /// Runs the complete commands at the front of `input`; returns the bytes
  /// consumed. A command cut short by the end of `input` is remembered
  /// where its reading stopped, and read on from there next call (input
  /// must then start at that command, as the host guarantees). Before each
  /// command it asks out.has_room(), and stops at that command when the
  /// answer is no: the host calls again once the client has read. After a
  /// protocol error or QUIT it consumes everything and asks the host to
  /// close the connection, as Redis does.
  std::size_t process(molt::api::ConnectionId connection, std::string_view input, molt::api::StreamOutput& out,
                      Db db, Clients& clients);

  /// Drops what was kept for `connection` (it is gone).
  void forget(molt::api::ConnectionId connection) { parsers_.erase(connection); }

 private:
  void execute(Call& call);

  ParseLimits limits_;
  ServerInfo info_;
  CommandTable table_;
  /// Per connection, the command being read. Not in the state: a new
  /// instance after an upgrade reads a half-arrived command again from its
  /// start, which the host still holds.
  std::unordered_map<molt::api::ConnectionId, CommandParser> parsers_;
  std::string arena_;  ///< an inline command's arguments, escapes decoded; reused across calls
};

/// Milliseconds since the Unix epoch, now.
std::int64_t now_ms();

/// Bytes kept for a command's framing (its other arguments and headers)
/// below the host's input limit when bounding a bulk string.
inline constexpr std::uint64_t kFramingBytes = 64u << 10;

/// kv's limits: max_bulk_bytes from the module configuration (default 512
/// MiB, Redis's proto-max-bulk-len), lowered to what the host can buffer
/// for one command: its max_input_bytes less kFramingBytes. A bulk larger
/// than that could never complete; it is refused at its header instead of
/// the host dropping the connection without a word. `reduced_from` is the
/// configured value when it was lowered.
struct EffectiveLimits {
  ParseLimits limits;
  std::optional<std::uint64_t> reduced_from;
};
EffectiveLimits limits_from(const molt::api::Values& config, const molt::api::StreamLimits& host);

}  // namespace kv
