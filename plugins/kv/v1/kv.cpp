// kv v1: strings, lists, sets and hashes over RESP2, no expiry (schema 1).
#include "../common/module.hpp"

namespace kv {

struct V1 {
  using State = StateV1;
  static constexpr molt::api::ModuleVersion kVersion{1};

  static void add_commands(CommandTable& table) { add_core_commands(table); }
  static void start(molt::api::Context&) {}
  static Db db(State& state, Changes* changes) { return Db(state.keys, nullptr, now_ms(), changes); }
  static void on_timer(std::string_view, State&, std::size_t&, Changes*) {}

  static void save(molt::api::StateWriter& out, const molt::api::SaveTarget& target, const State& state) {
    molt::api::save_one_schema(out, target, State::kSchema, state);
  }
  static void load(molt::api::StateReader& in, const molt::api::Migration& migration, State& state) {
    molt::api::load_one_schema(in, migration, State::kSchema, state);
  }
};

using KvV1 = KvModule<V1>;

}  // namespace kv

MOLT_MODULE(kv::KvV1)
