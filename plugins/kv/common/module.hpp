// The kv module class, shared by every version. A version is a Traits type:
//
//   struct Traits {
//     using State = StateV1;                       // its state schema
//     static constexpr molt::api::ModuleVersion kVersion{1};
//     static void add_commands(CommandTable&);     // what it understands
//     static void start(molt::api::Context&);      // e.g. set timers
//     static Db db(State&, Changes*);              // the keyspace view
//     static void on_timer(std::string_view, State&, std::size_t& cursor, Changes*);
//     static void save(molt::api::StateWriter&, const molt::api::SaveTarget&, const State&);
//     static void load(molt::api::StateReader&, const molt::api::Migration&, State&);
//   };
#pragma once

#include <optional>

#include "molt/module.hpp"
#include "server.hpp"
#include "transfer.hpp"

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
    Db db = Traits::db(this->state(), nullptr);
    return molt::api::Response::json(R"({"module":"kv","version":)" + std::to_string(kVersion.value) +
                                     R"(,"keys":)" + std::to_string(db.size()) + R"(,"expiring":)" +
                                     std::to_string(db.expiring()) + R"(,"clients":)" +
                                     std::to_string(this->state().clients.size()) + "}\n");
  }

  void on_connect(molt::api::ConnectionId connection) override { this->state().clients[connection]; }

  std::size_t on_data(molt::api::ConnectionId connection, std::string_view input, molt::api::StreamOutput& out) override {
    return server_->process(connection, input, out, Traits::db(this->state(), changes()), this->state().clients);
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

  void on_timer(std::string_view name) override { Traits::on_timer(name, this->state(), timer_cursor_, changes()); }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    Traits::save(out, target, this->state());
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    Traits::load(in, migration, this->state());
  }

  // Pre-copy (transfer.hpp): in the schemas save_state writes and
  // load_state reads.
  void transfer_begin(const molt::api::SaveTarget& target) override {
    check_schema(target.schema);
    transfer_.emplace();
    transfer_->schema = target.schema;
    auto& keys = this->state().keys;
    transfer_->load_factor = keys.max_load_factor();
    keys.max_load_factor(TransferSender::kNoRehash);  // sets the policy; rehashes nothing now
  }
  molt::api::TransferStep transfer_chunk(molt::api::StateWriter& out, const molt::api::TransferBudget& budget) override {
    return Transfer<State>::chunk(this->state(), sending(), out, budget, now_ms());
  }
  molt::api::TransferStep transfer_delta(molt::api::StateWriter& out, const molt::api::TransferBudget& budget) override {
    return Transfer<State>::delta(this->state(), sending(), out, budget, now_ms());
  }
  molt::api::TransferStep transfer_final(molt::api::StateWriter& out) override {
    return Transfer<State>::final(this->state(), sending(), out, now_ms());
  }
  void transfer_end() noexcept override {
    if (transfer_) this->state().keys.max_load_factor(transfer_->load_factor);  // the next insert rehashes if due
    transfer_.reset();
  }
  void receive_part(molt::api::StateReader& in, const molt::api::Migration& migration,
                    molt::api::TransferPart part) override {
    check_schema(migration.from_schema);
    Transfer<State>::receive(this->state(), in, migration.from_schema, part);
  }

 private:
  using State = typename Traits::State;

  /// Schemas this version writes and reads: its own and, over schema 2, 1.
  static void check_schema(molt::api::SchemaVersion schema) {
    if (schema == State::kSchema) return;
    if (transfer_detail::kHasExpiry<State> && schema == StateV1::kSchema) return;
    throw molt::api::UnknownSchema(schema, State::kSchema);
  }
  TransferSender& sending() {
    if (!transfer_) throw std::logic_error("kv: no transfer in progress (transfer_begin first)");
    return *transfer_;
  }
  /// Where writes are noted: the transfer's, while one runs.
  Changes* changes() noexcept { return transfer_ ? &transfer_->changes : nullptr; }

  std::optional<TransferSender> transfer_;  ///< the transfer in progress, on the sending side
  std::optional<Server> server_;  ///< made in start(), from the configuration
  std::size_t timer_cursor_ = 0;  ///< where the last background pass stopped
};

}  // namespace kv
