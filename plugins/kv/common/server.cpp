#include "server.hpp"

#include <chrono>

namespace kv {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ParseLimits limits_from(const molt::api::Values& config) {
  ParseLimits limits;
  if (const auto it = config.find("max_bulk_bytes"); it != config.end()) {
    if (const auto value = parse_int(it->second); value && *value > 0) limits.max_bulk_bytes = static_cast<std::size_t>(*value);
  }
  return limits;
}

void Server::execute(Call& call) {
  const Command* command = table_.find(call.args[0]);
  if (command == nullptr) {
    // Redis: "unknown command '<name>', with args beginning with: '<a>' '<b>' "
    std::string message = "ERR unknown command '";
    message.append(call.args[0].substr(0, 128));
    message += "', with args beginning with: ";
    for (std::size_t i = 1; i < call.args.size() && message.size() < 128 + 60; ++i) {
      message += '\'';
      message.append(call.args[i].substr(0, 128));
      message += "' ";
    }
    for (char& ch : message)
      if (ch == '\r' || ch == '\n') ch = ' ';
    return call.reply.error(message);
  }
  const auto argc = static_cast<int>(call.args.size());
  if ((command->arity > 0 && argc != command->arity) || (command->arity < 0 && argc < -command->arity))
    return wrong_arity(call.reply, command->name);
  command->handler(call);
}

std::size_t Server::process(molt::api::ConnectionId connection, std::string_view input, molt::api::StreamOutput& out,
                            Db db, Clients& clients) {
  reply_.clear();
  Reply reply(reply_);
  Client& client = clients[connection];
  std::size_t consumed = 0;
  while (consumed < input.size()) {
    const ParseResult parsed = parse_command(input.substr(consumed), args_, limits_);
    if (parsed.status == Parse::Incomplete) break;
    if (parsed.status == Parse::Error) {
      std::string message = "ERR ";
      message.append(parsed.error);
      if (parsed.unexpected != 0) {
        message += '\'';
        message += parsed.unexpected;
        message += '\'';
      }
      reply.error(message);
      out.close_after_write();
      consumed = input.size();
      break;
    }
    consumed += parsed.consumed;
    if (args_.empty()) continue;
    Call call{args_, db, reply, client, connection, info_, table_};
    execute(call);
    if (call.quit) {
      out.close_after_write();
      consumed = input.size();
      break;
    }
  }
  if (!reply_.empty()) out.write(reply_);
  return consumed;
}

}  // namespace kv
