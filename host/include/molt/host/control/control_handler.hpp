// The control protocol's logic: one JSON request in, one JSON reply out.
// Socket handling is in control_server; this part takes a request line and
// returns the reply, so tests/unit/control_handler_test.cpp calls it directly.
//
// Requests (one JSON object):
//   {"command":"status"}
//   {"command":"reload",   "module":"counter", "file":"/abs/counter-2.so"?, "extra":{"k":"v"}?}
//                          a path that is not valid UTF-8 comes as "file_hex":
//                          its bytes in hex, instead of "file" (reload, restore)
//   {"command":"reload",   "changed":true}   every module whose newest file changed, as SIGHUP
//   {"command":"rollback", "module":"counter", "extra":{...}?}
//   {"command":"history",  "module":"counter"?}
//   {"command":"snapshot", "module":"counter"}
//   {"command":"restore",  "module":"counter", "file":"/abs/counter.molt"}
//   {"command":"upgrade",  "script":"<TOML text>", "source":"counter-2.toml",
//                          "check":false, "down":false}
//   {"command":"commit"}
//   {"command":"releases"}
//   {"command":"save"}
//   {"command":"hot-restart", "binary":"/abs/moltd"?}   hand moltd over to a new process
//   {"command":"handoff",  "module":"kv", "to":"HOST:PORT"?}   move a module to a peer moltd (no "to": back)
//   {"command":"drain",    "to":"HOST:PORT", "deadline_ms":N?}  every module to a peer; /-/ready turns false
//   {"command":"jobs",     "module":"batch"?, "action":"list"|"cancel"|"restart"?, "job":"sum"?}
// Replies: {"ok":true, ...} or {"ok":false, "error":"<one line>"}. reload and
// rollback reply with the upgrade "report", and "ok" false unless it succeeded;
// reload "changed" with the "reports" (none when nothing changed), and "ok"
// false unless every one succeeded.
// snapshot replies with the archive's header and attaches the archive file.
// A command that throws replies {"ok":false,"error":"<command>: failed: <what>"}.
// Replies are written with json_text(): a string's invalid bytes as \xNN.
#pragma once

#include <chrono>
#include <functional>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "molt/host/release/release_handler.hpp"
#include "molt/host/runtime/host_info.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "molt/host/runtime/status.hpp"

namespace molt::host {

struct ControlReply {
  nlohmann::json body;
  std::string attachment;  ///< raw bytes sent after the reply line (snapshot)
  std::string exception = {};  ///< what the command threw, when it did (a bug: the server logs it); else empty
};

class ControlHandler {
 public:
  ControlHandler(ModuleTable& table, ReleaseHandler& releases, const HostInfo& host)
      : table_(table), releases_(releases), host_(host) {}

  /// Answers one request line. Never throws: bad input, and any exception a
  /// command throws, is an error reply.
  /// When the request says "progress": true, the upgrades it runs report
  /// their phases and state bytes to `progress` as {"progress":{...}}
  /// objects, at most one per module and phase every 50 ms; it must not block.
  [[nodiscard]] ControlReply handle(std::string_view request,
                                    const std::function<void(const nlohmann::json&)>& progress = {});

 private:
  ControlReply answer(const nlohmann::json& request);
  nlohmann::json upgrade(const nlohmann::json& request);
  nlohmann::json jobs(const nlohmann::json& request);

  ModuleTable& table_;
  ReleaseHandler& releases_;
  const HostInfo& host_;
};

/// {"ok":false,"error":message}
[[nodiscard]] nlohmann::json error_reply(const std::string& message);

/// Puts `file` into a request as "file" when it is valid UTF-8, else as
/// "file_hex" (its bytes in hex), so that any path arrives as it is.
void put_file(nlohmann::json& request, const std::filesystem::path& file);

/// A request's file: none, a path, or why neither.
struct FileField {
  std::optional<std::filesystem::path> path;
  std::string error;  ///< empty unless "file"/"file_hex" is malformed
};
/// The path a request's "file" or "file_hex" names (see put_file).
[[nodiscard]] FileField file_of(const nlohmann::json& request);

}  // namespace molt::host
