#include "expiry.hpp"

#include <cctype>
#include <limits>

namespace kv {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  });
}

enum class Unit { Seconds, Milliseconds };
enum class Base { Now, Epoch };

// EXPIRE key seconds [NX|XX|GT|LT] and its three siblings, as in Redis 7.
// The options are checked before the time, as in Redis.
void expire_generic(Call& c, Unit unit, Base base, std::string_view name) {
  bool nx = false, xx = false, gt = false, lt = false;
  for (std::size_t i = 3; i < c.args.size(); ++i) {
    if (iequals(c.args[i], "nx")) nx = true;
    else if (iequals(c.args[i], "xx")) xx = true;
    else if (iequals(c.args[i], "gt")) gt = true;
    else if (iequals(c.args[i], "lt")) lt = true;
    else return c.reply.error({"ERR Unsupported option ", c_string(c.args[i])});
  }
  if (nx && (xx || gt || lt)) return c.reply.error("ERR NX and XX, GT or LT options at the same time are not compatible");
  if (gt && lt) return c.reply.error("ERR GT and LT options at the same time are not compatible");
  const auto amount = parse_int(c.args[2]);
  if (!amount) return c.reply.not_integer();

  const auto invalid = [&] { c.reply.error({"ERR invalid expire time in '", name, "' command"}); };
  std::int64_t when = *amount;
  if (unit == Unit::Seconds) {
    if (when > std::numeric_limits<std::int64_t>::max() / 1000 || when < std::numeric_limits<std::int64_t>::min() / 1000)
      return invalid();
    when *= 1000;
  }
  if (base == Base::Now) {
    if ((when > 0 && c.db.now() > std::numeric_limits<std::int64_t>::max() - when)) return invalid();
    when += c.db.now();
  }

  if (c.db.find(c.args[1]) == nullptr) return c.reply.integer(0);
  const auto current = c.db.deadline(c.args[1]);
  if ((nx && current) || (xx && !current) || (gt && (!current || when <= *current)) || (lt && current && when >= *current))
    return c.reply.integer(0);
  if (when <= c.db.now()) {
    c.db.erase(c.args[1]);  // a deadline in the past deletes the key at once
  } else {
    c.db.set_deadline(c.args[1], when);
  }
  c.reply.integer(1);
}

void expire(Call& c) { expire_generic(c, Unit::Seconds, Base::Now, "expire"); }
void pexpire(Call& c) { expire_generic(c, Unit::Milliseconds, Base::Now, "pexpire"); }
void expireat(Call& c) { expire_generic(c, Unit::Seconds, Base::Epoch, "expireat"); }
void pexpireat(Call& c) { expire_generic(c, Unit::Milliseconds, Base::Epoch, "pexpireat"); }

void ttl_generic(Call& c, Unit unit) {
  if (c.db.find(c.args[1]) == nullptr) return c.reply.integer(-2);
  const auto deadline = c.db.deadline(c.args[1]);
  if (!deadline) return c.reply.integer(-1);
  const std::int64_t left = std::max<std::int64_t>(*deadline - c.db.now(), 0);
  c.reply.integer(unit == Unit::Seconds ? (left + 500) / 1000 : left);
}

void ttl(Call& c) { ttl_generic(c, Unit::Seconds); }
void pttl(Call& c) { ttl_generic(c, Unit::Milliseconds); }

void persist(Call& c) {
  if (c.db.find(c.args[1]) == nullptr) return c.reply.integer(0);
  c.reply.integer(c.db.clear_deadline(c.args[1]) ? 1 : 0);
}

/// Writes schema 1 from schema 2 without copying the keyspace: the keys that
/// have not expired, and no deadlines.
struct SchemaOneView {
  const StateV2& state;
  std::int64_t now;

  template <class Archive>
  void save(Archive& ar, unsigned) const {
    write_keyspace(ar, state.keys, [this](const std::string& key) {
      const auto it = state.expires.find(key);
      return it != state.expires.end() && it->second <= now;
    });
    ar & state.clients;
  }
  template <class Archive>
  void load(Archive&, unsigned) {}
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

}  // namespace

void add_expiry_commands(CommandTable& table) {
  for (const Command& command : {Command{"expire", -3, expire, true}, Command{"pexpire", -3, pexpire, true},
                                 Command{"expireat", -3, expireat, true}, Command{"pexpireat", -3, pexpireat, true},
                                 Command{"ttl", 2, ttl}, Command{"pttl", 2, pttl}, Command{"persist", 2, persist, true}})
    table.add(command);
}

void remove_expired(StateV2& state, std::int64_t now, std::size_t& cursor, std::size_t budget, Changes* changes) {
  auto& expires = state.expires;
  if (expires.empty()) return;
  std::vector<std::string> expired;
  const std::size_t buckets = expires.bucket_count();
  std::size_t examined = 0;
  for (std::size_t n = 0; n < buckets && examined < budget; ++n) {
    const std::size_t bucket = cursor++ % buckets;
    for (auto it = expires.begin(bucket); it != expires.end(bucket); ++it, ++examined)
      if (it->second <= now) expired.push_back(it->first);
  }
  for (const auto& key : expired) {
    if (changes != nullptr) changes->key(key);
    expires.erase(key);
    state.keys.erase(key);
  }
}

void ExpiryTraits::save(molt::api::StateWriter& out, const molt::api::SaveTarget& target, const State& state) {
  if (target.schema == State::kSchema) return out.write(state);
  if (target.schema != StateV1::kSchema) throw molt::api::UnknownSchema(target.schema, State::kSchema);
  out.write(SchemaOneView{state, now_ms()});
}

void ExpiryTraits::load(molt::api::StateReader& in, const molt::api::Migration& migration, State& state) {
  if (migration.from_schema == State::kSchema) return in.read(state);
  if (migration.from_schema != StateV1::kSchema) throw molt::api::UnknownSchema(migration.from_schema, State::kSchema);
  StateV1 older;
  in.read(older);
  state.keys = std::move(older.keys);  // moves the table, copies no key
  state.clients = std::move(older.clients);
  state.expires.clear();
}

}  // namespace kv
