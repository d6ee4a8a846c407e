// kv's connection handling, shared by every version: frames commands out of
// a connection's input, runs them against the state, writes all replies of
// one batch (a pipeline) in one piece.
#pragma once

#include <string>
#include <vector>

#include "commands.hpp"
#include "molt/stream.hpp"

namespace kv {

class Server {
 public:
  Server(ParseLimits limits, ServerInfo info) : limits_(limits), info_(info) {}

  CommandTable& table() noexcept { return table_; }
  [[nodiscard]] const ParseLimits& limits() const noexcept { return limits_; }

  /// Runs every complete command at the front of `input`; returns the bytes
  /// consumed. After a protocol error or QUIT it consumes everything and asks
  /// the host to close the connection, as Redis does.
  std::size_t process(molt::api::ConnectionId connection, std::string_view input, molt::api::StreamOutput& out,
                      Db db, Clients& clients);

 private:
  void execute(Call& call);

  ParseLimits limits_;
  ServerInfo info_;
  CommandTable table_;
  // Reused across calls: no allocation per request once warmed up.
  std::vector<std::string_view> args_;
  std::string reply_;
};

/// Milliseconds since the Unix epoch, now.
std::int64_t now_ms();

/// Reads kv's limits from the module configuration: max_bulk_bytes.
ParseLimits limits_from(const molt::api::Values& config);

}  // namespace kv
