// The kv module class, shared by every version. A version is a Traits type:
//
//   struct Traits {
//     using State = StateV1;                       // its state schema
//     static constexpr molt::api::ModuleVersion kVersion{1};
//     static void add_commands(CommandTable&);     // what it understands
//     static void start(molt::api::Context&);      // e.g. set timers
//     static Db db(State&);                        // the keyspace view
//     static void on_timer(std::string_view, State&, std::size_t& cursor);
//     static void save(molt::api::StateWriter&, const molt::api::SaveTarget&, const State&);
//     static void load(molt::api::StateReader&, const molt::api::Migration&, State&);
//   };
#pragma once

#include <optional>

#include "molt/module.hpp"
#include "server.hpp"

namespace kv {

template <class Traits>
class KvModule final : public molt::api::StatefulModule<typename Traits::State> {
 public:
  static constexpr std::string_view kName = "kv";
  static constexpr molt::api::ModuleVersion kVersion = Traits::kVersion;
  static constexpr molt::api::SchemaVersion kSchema = Traits::State::kSchema;

  void start(molt::api::Context& context) override {
    const auto host = context.stream_limits();
    const EffectiveLimits effective = limits_from(context.config(), host);
    if (effective.reduced_from)
      context.log().warn(
          "max_bulk_bytes {} is more than one command can hold in the host's input buffer "
          "(max_stream_buffer_bytes {}); bulk strings over {} bytes are refused at their header",
          *effective.reduced_from, host.max_input_bytes, effective.limits.max_bulk_bytes);
    server_.emplace(effective.limits, ServerInfo{kVersion.value, now_ms()});
    Traits::add_commands(server_->table());
    Traits::start(context);
  }

  /// kv speaks RESP on its listener; over HTTP it only says what it holds.
  molt::api::Response handle(const molt::api::Request& request) override {
    if (request.path != "/kv") return molt::api::Response::json(R"({"error":"kv speaks RESP on its listener"})" "\n", 404);
    Db db = Traits::db(this->state());
    return molt::api::Response::json(R"({"module":"kv","version":)" + std::to_string(kVersion.value) +
                                     R"(,"keys":)" + std::to_string(db.size()) + R"(,"expiring":)" +
                                     std::to_string(db.expiring()) + R"(,"clients":)" +
                                     std::to_string(this->state().clients.size()) + "}\n");
  }

  void on_connect(molt::api::ConnectionId connection) override { this->state().clients[connection]; }

  std::size_t on_data(molt::api::ConnectionId connection, std::string_view input, molt::api::StreamOutput& out) override {
    return server_->process(connection, input, out, Traits::db(this->state()), this->state().clients);
  }

  void on_disconnect(molt::api::ConnectionId connection) override {
    this->state().clients.erase(connection);
    if (server_) server_->forget(connection);
  }

  /// Redis's words to a client turned away.
  [[nodiscard]] std::string refusal_reply(molt::api::Refusal reason) const override {
    switch (reason) {
      case molt::api::Refusal::TooManyClients: return "-ERR max number of clients reached\r\n";
    }
    return {};
  }

  void on_timer(std::string_view name) override { Traits::on_timer(name, this->state(), timer_cursor_); }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    Traits::save(out, target, this->state());
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    Traits::load(in, migration, this->state());
  }

 private:
  std::optional<Server> server_;  ///< made in start(), from the configuration
  std::size_t timer_cursor_ = 0;  ///< where the last background pass stopped
};

}  // namespace kv
