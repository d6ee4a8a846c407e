// flood: a stream module whose replies are as large as asked, for the
// host's connection limits (tests/hostile/connections_test.cpp).
//
// It reads inline commands, one per line ("\n" or "\r\n"), as Redis's inline
// protocol, so that the tests speak to it as to kv:
//   PING      -> +PONG
//   GET <any> -> a bulk string of `reply_bytes` bytes (config; default 1 MiB)
//   QUIT      -> +OK, then the connection closes
//   other     -> -ERR unknown command
// It asks StreamOutput::has_room() before each command, unless the config
// says ignore_has_room = true (a module that does not care: the host's hard
// limit is then what bounds the output). Past maxclients it refuses as kv does.
#include <charconv>
#include <string>

#include "molt/module.hpp"

namespace flood {

class Flood final : public molt::api::Module {
 public:
  static constexpr std::string_view kName = "flood";
  static constexpr molt::api::ModuleVersion kVersion{1};
  static constexpr molt::api::SchemaVersion kSchema{1};

  void start(molt::api::Context& context) override {
    std::size_t bytes = 1 << 20;
    if (const auto it = context.config().find("reply_bytes"); it != context.config().end())
      std::from_chars(it->second.data(), it->second.data() + it->second.size(), bytes);
    value_.assign(bytes, 'x');
    header_ = "$" + std::to_string(bytes) + "\r\n";
    if (const auto it = context.config().find("ignore_has_room"); it != context.config().end())
      ignore_has_room_ = it->second == "true";
  }

  molt::api::Response handle(const molt::api::Request&) override {
    return molt::api::Response::json(R"({"error":"flood speaks on its listener"})", 404);
  }

  std::size_t on_data(molt::api::ConnectionId, std::string_view input, molt::api::StreamOutput& out) override {
    std::size_t consumed = 0;
    while (consumed < input.size()) {
      const auto newline = input.find('\n', consumed);
      if (newline == std::string_view::npos) break;
      if (!ignore_has_room_ && !out.has_room()) break;
      std::string_view line = input.substr(consumed, newline - consumed);
      consumed = newline + 1;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line == "PING") {
        out.write("+PONG\r\n");
      } else if (line.starts_with("GET ")) {
        out.write(header_);
        out.write(value_);
        out.write("\r\n");
      } else if (line == "QUIT") {
        out.write("+OK\r\n");
        out.close_after_write();
        return input.size();
      } else if (!line.empty()) {
        out.write("-ERR unknown command\r\n");
      }
    }
    return consumed;
  }

  std::string refusal_reply(molt::api::Refusal) const override { return "-ERR max number of clients reached\r\n"; }

  void save_state(molt::api::StateWriter&, const molt::api::SaveTarget&) const override {}
  void load_state(molt::api::StateReader&, const molt::api::Migration&) override {}

 private:
  std::string value_;
  std::string header_;
  bool ignore_has_room_ = false;
};

}  // namespace flood

MOLT_MODULE(flood::Flood)
