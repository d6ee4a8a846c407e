// Commands: a table from name to handler, and what a handler is given.
#pragma once

#include <span>
#include <string_view>
#include <unordered_map>

#include "db.hpp"
#include "resp.hpp"

namespace kv {

/// What the server knows about itself, for INFO and HELLO.
struct ServerInfo {
  std::uint32_t module_version = 0;
  std::int64_t started_ms = 0;
};

/// One command being executed.
struct Call {
  ArgList args;  ///< args[0] is the command name as sent
  Db& db;
  Reply& reply;
  Client& client;
  molt::api::ConnectionId connection;
  const ServerInfo& server;
  const struct CommandTable& table;
  bool quit = false;  ///< close the connection once the replies are sent
};

using Handler = void (*)(Call&);

struct Command {
  std::string_view name;  ///< lowercase, as in Redis's error messages
  int arity;              ///< Redis's: N exactly N arguments (name included), -N at least N
  Handler handler;
  /// It may write the keyspace, also through a value it looks up (Redis's
  /// "write" flag): a transfer notes every key it looks up (db.hpp).
  bool writes = false;
};

struct CommandTable {
  std::unordered_map<std::string_view, Command> commands;
  void add(Command command) { commands[command.name] = command; }
  /// The command named `name`, case-insensitively (`name` of at most 32 bytes).
  [[nodiscard]] const Command* find(std::string_view name) const;
};

/// Writes Redis's "wrong number of arguments" error for `name`.
void wrong_arity(Reply& reply, std::string_view name);

/// The commands of kv v1: strings, lists, sets, hashes, and connection and
/// server commands. SET accepts EX/PX/KEEPTTL only when the Db has expiry.
void add_core_commands(CommandTable& table);

}  // namespace kv
