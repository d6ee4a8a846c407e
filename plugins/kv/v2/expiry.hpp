// kv v2's addition: keys with a time to live (schema 2). Expired keys are
// never returned (every lookup checks) and are also removed in the
// background, on a host timer. Shared by v2 and v3, which only adds commands.
#pragma once

#include <chrono>

#include "../common/server.hpp"
#include "molt/module.hpp"

namespace kv {

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, TTL, PTTL, PERSIST.
void add_expiry_commands(CommandTable& table);

/// Removes expired keys, examining at most `budget` deadlines from `cursor`
/// on; notes each removed key in `changes` (when a transfer runs).
void remove_expired(StateV2& state, std::int64_t now, std::size_t& cursor, std::size_t budget,
                    Changes* changes = nullptr);

/// Everything of a version over schema 2 except its version number and
/// command list.
struct ExpiryTraits {
  using State = StateV2;
  static constexpr std::chrono::milliseconds kSweepPeriod{100};

  static void start(molt::api::Context& context) { context.set_timer("expire", kSweepPeriod); }
  static Db db(State& state, Changes* changes) { return Db(state.keys, &state.expires, now_ms(), changes); }
  static void on_timer(std::string_view name, State& state, std::size_t& cursor, Changes* changes) {
    if (name == "expire") remove_expired(state, now_ms(), cursor, 2000, changes);
  }
  /// Schema 2; or schema 1 for a downgrade: the keys that have not expired,
  /// without deadlines.
  static void save(molt::api::StateWriter& out, const molt::api::SaveTarget& target, const State& state);
  /// Schema 2; or schema 1 from an upgrade: every key, none expiring.
  static void load(molt::api::StateReader& in, const molt::api::Migration& migration, State& state);
};

}  // namespace kv
