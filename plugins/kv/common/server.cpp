#include "server.hpp"

#include <array>
#include <chrono>

namespace kv {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

EffectiveLimits limits_from(const molt::api::Values& config, const molt::api::StreamLimits& host) {
  EffectiveLimits effective;
  ParseLimits& limits = effective.limits;
  if (const auto it = config.find("max_bulk_bytes"); it != config.end()) {
    if (const auto value = parse_int(it->second); value && *value > 0) limits.max_bulk_bytes = static_cast<std::size_t>(*value);
  }
  if (host.max_input_bytes > 0) {  // 0: the host sets no limit
    // A host limit below 128 KiB keeps half of it for the framing instead.
    const std::uint64_t framing = std::min(kFramingBytes, host.max_input_bytes / 2);
    const std::uint64_t room = host.max_input_bytes - framing;
    if (limits.max_bulk_bytes > room) {
      effective.reduced_from = limits.max_bulk_bytes;
      limits.max_bulk_bytes = static_cast<std::size_t>(room);
    }
  }
  return effective;
}

void Server::execute(Call& call) {
  const Command* command = table_.find(call.args[0]);
  if (command == nullptr) {
    // Redis: "unknown command '%.128s', with args beginning with: %s", the
    // arguments each as "'%.*s' " while fewer than 128 bytes are listed.
    constexpr std::size_t kListed = 128;
    std::array<std::string_view, 3 + 3 * (kListed / 3 + 1)> parts;  // each argument lists 3 bytes at least
    std::size_t count = 0, listed = 0;
    parts[count++] = "ERR unknown command '";
    parts[count++] = c_string(call.args[0], 128);
    parts[count++] = "', with args beginning with: ";
    for (std::size_t i = 1; i < call.args.size() && listed < kListed; ++i) {
      const std::string_view shown = c_string(call.args[i], kListed - listed);
      parts[count++] = "'";
      parts[count++] = shown;
      parts[count++] = "' ";
      listed += shown.size() + 3;
    }
    return call.reply.error(std::span(parts.data(), count));
  }
  const auto argc = static_cast<std::int64_t>(call.args.size());
  if ((command->arity > 0 && argc != command->arity) || (command->arity < 0 && argc < -command->arity))
    return wrong_arity(call.reply, command->name);
  call.db.set_writing(command->writes);
  command->handler(call);
}

std::size_t Server::process(molt::api::ConnectionId connection, std::string_view input, molt::api::StreamOutput& out,
                            Db db, Clients& clients) {
  CommandParser& parser = parsers_[connection];
  Reply reply(out);
  Client& client = clients[connection];
  std::size_t consumed = 0;
  while (true) {
    const std::string_view rest = input.substr(consumed);
    if (parser.idle()) {
      // Asked here, before any of the command is read: nothing is written
      // to this connection until it runs, so a yes still holds then, even
      // if the command takes many calls to arrive.
      if (rest.empty() || !out.has_room()) break;
      arena_.clear();
    }
    const Parse status = parser.parse(rest, limits_, arena_);
    if (status == Parse::Incomplete) break;
    if (status == Parse::Error) {
      const char byte = parser.error_byte();
      if (parser.error() == ProtocolError::ExpectedDollar)
        reply.error({"ERR ", message(parser.error()), "'", std::string_view(&byte, 1), "'"});
      else
        reply.error({"ERR ", message(parser.error())});
      parser.reset();
      out.close_after_write();
      return input.size();
    }
    consumed += parser.size();
    Call call{parser.args(rest, arena_), db, reply, client, connection, info_, table_};
    if (!call.args.empty()) execute(call);  // "*0", a blank line: nothing to run
    parser.reset();
    if (call.quit) {
      out.close_after_write();
      return input.size();
    }
  }
  return consumed;
}

}  // namespace kv
