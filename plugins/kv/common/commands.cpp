// kv v1's commands. Replies and error messages follow Redis 7 byte for byte
// (tests/integration/kv_test.cpp compares them with a real redis-server).
#include "commands.hpp"

#include "glob.hpp"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <limits>

namespace kv {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
    return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
  });
}

/// The value of `key` if it has `type`; null if missing; null with a
/// WRONGTYPE reply written (and `wrong` set) if another type.
Value* find_typed(Call& c, std::string_view key, Type type, bool& wrong) {
  Value* value = c.db.find(key);
  wrong = value != nullptr && value->type != type;
  if (wrong) c.reply.wrong_type();
  return wrong ? nullptr : value;
}

/// The value of `key` with `type`, created empty if missing; null (after a
/// WRONGTYPE reply) if another type.
Value* find_or_create(Call& c, std::string_view key, Type type) {
  bool wrong = false;
  if (Value* value = find_typed(c, key, type, wrong)) return value;
  if (wrong) return nullptr;
  return &c.db.insert(key, Value::of_type(type));
}

/// Lists, sets and hashes that become empty disappear, as in Redis.
void drop_if_empty(Call& c, std::string_view key, const Value& value) {
  const bool empty = (value.type == Type::List && value.coll->list.empty()) ||
                     (value.type == Type::Set && value.coll->set.empty()) ||
                     (value.type == Type::Hash && value.coll->hash.empty());
  if (empty) c.db.erase(key);
}

// --- connection and server ---------------------------------------------------

void ping(Call& c) {
  if (c.args.size() > 2) return wrong_arity(c.reply, "ping");
  if (c.args.size() == 2) return c.reply.bulk(c.args[1]);
  c.reply.simple("PONG");
}

void echo(Call& c) { c.reply.bulk(c.args[1]); }

void quit(Call& c) {
  c.reply.ok();
  c.quit = true;
}

void select(Call& c) {
  const auto index = parse_int(c.args[1]);
  if (!index) return c.reply.not_integer();
  if (*index != 0) return c.reply.error("ERR DB index is out of range");
  c.reply.ok();
}

bool valid_client_name(std::string_view name) {
  return std::all_of(name.begin(), name.end(), [](char ch) { return ch >= '!' && ch <= '~'; });
}

void hello_reply(Call& c) {
  c.reply.array(14);
  c.reply.bulk("server");
  c.reply.bulk("redis");
  c.reply.bulk("version");
  c.reply.bulk("7.0.0");
  c.reply.bulk("proto");
  c.reply.integer(2);
  c.reply.bulk("id");
  c.reply.integer(static_cast<std::int64_t>(c.connection));
  c.reply.bulk("mode");
  c.reply.bulk("standalone");
  c.reply.bulk("role");
  c.reply.bulk("master");
  c.reply.bulk("modules");
  c.reply.array(0);
}

// HELLO [protover [AUTH user pass] [SETNAME name]]: kv speaks RESP2 only, so
// HELLO 3 is refused the way Redis refuses an unknown version, and clients
// fall back to RESP2.
void hello(Call& c) {
  if (c.args.size() >= 2) {
    const auto version = parse_int(c.args[1]);
    if (!version) return c.reply.error("ERR Protocol version is not an integer or out of range");
    if (*version != 2) return c.reply.error("NOPROTO unsupported protocol version");
  }
  for (std::size_t i = 2; i < c.args.size(); ++i) {
    // Options are compared as C strings (strcasecmp), so "SETNAME\0x" is SETNAME.
    const std::string_view option = c_string(c.args[i]);
    if (iequals(option, "setname") && i + 1 < c.args.size()) {
      if (!valid_client_name(c.args[i + 1]))
        return c.reply.error("ERR Client names cannot contain spaces, newlines or special characters.");
      c.client.name = std::string(c.args[++i]);
    } else if (iequals(option, "auth") && i + 2 < c.args.size()) {
      return c.reply.error("ERR AUTH <password> called without any password configured for the default user. "
                           "Are you sure your configuration is correct?");
    } else {
      return c.reply.error({"ERR Syntax error in HELLO option '", option, "'"});
    }
  }
  hello_reply(c);
}

void client(Call& c) {
  const std::string_view sub = c.args[1];
  if (iequals(sub, "setname")) {
    if (c.args.size() != 3) return wrong_arity(c.reply, "client|setname");
    if (!valid_client_name(c.args[2]))
      return c.reply.error("ERR Client names cannot contain spaces, newlines or special characters.");
    c.client.name = std::string(c.args[2]);
    return c.reply.ok();
  }
  if (iequals(sub, "getname")) {
    if (c.args.size() != 2) return wrong_arity(c.reply, "client|getname");
    return c.client.name.empty() ? c.reply.null() : c.reply.bulk(c.client.name);
  }
  if (iequals(sub, "id")) {
    if (c.args.size() != 2) return wrong_arity(c.reply, "client|id");
    return c.reply.integer(static_cast<std::int64_t>(c.connection));
  }
  if (iequals(sub, "setinfo")) {  // sent by client libraries on connect
    if (c.args.size() != 4) return wrong_arity(c.reply, "client|setinfo");
    return c.reply.ok();
  }
  c.reply.error({"ERR unknown subcommand '", c_string(sub, 128), "'. Try CLIENT HELP."});
}

void config(Call& c) {
  const std::string_view sub = c.args[1];
  if (!iequals(sub, "get")) return c.reply.error({"ERR unknown subcommand '", c_string(sub, 128), "'. Try CONFIG HELP."});
  if (c.args.size() < 3) return wrong_arity(c.reply, "config|get");
  static constexpr std::pair<std::string_view, std::string_view> kParameters[] = {
      {"appendonly", "no"}, {"databases", "1"}, {"maxmemory", "0"}, {"save", ""}};
  // Each parameter once, under the spelling that matched it first: a name
  // looked up as it is comes back as the client wrote it, as in Redis.
  std::string_view shown[std::size(kParameters)] = {};
  std::size_t count = 0;
  for (std::size_t i = 2; i < c.args.size(); ++i) {
    // A name without '[', '*' or '?' (before any NUL) is looked up as it is;
    // otherwise it is a pattern, up to any NUL.
    const std::string_view pattern = c_string(c.args[i]);
    const bool glob = pattern.find_first_of("[*?") != std::string_view::npos;
    for (std::size_t p = 0; p < std::size(kParameters); ++p) {
      if (!shown[p].empty()) continue;
      const std::string_view name = kParameters[p].first;
      if (glob ? glob_match(pattern, name, Case::Insensitive) : iequals(c.args[i], name)) {
        shown[p] = glob ? name : c.args[i];
        ++count;
      }
    }
  }
  c.reply.array(count * 2);
  for (std::size_t p = 0; p < std::size(kParameters); ++p) {
    if (shown[p].empty()) continue;
    c.reply.bulk(shown[p]);
    c.reply.bulk(kParameters[p].second);
  }
}

void command(Call& c) {
  if (c.args.size() >= 2 && iequals(c.args[1], "count"))
    return c.reply.integer(static_cast<std::int64_t>(c.table.commands.size()));
  c.reply.array(0);  // COMMAND, COMMAND DOCS, COMMAND INFO: no command documentation to offer
}

void info(Call& c) {
  const bool all = c.args.size() == 1 || iequals(c.args[1], "all") || iequals(c.args[1], "everything") ||
                   iequals(c.args[1], "default");
  std::string text;
  if (all || iequals(c.args[1], "server")) {
    text += "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nmolt_module:kv\r\nmolt_module_version:";
    text += std::to_string(c.server.module_version);
    text += "\r\nprocess_id:" + std::to_string(::getpid());
    text += "\r\nuptime_in_seconds:" + std::to_string((c.db.now() - c.server.started_ms) / 1000) + "\r\n";
  }
  if (all || iequals(c.args[1], "keyspace")) {
    if (!text.empty()) text += "\r\n";
    text += "# Keyspace\r\n";
    if (c.db.size() > 0)
      text += "db0:keys=" + std::to_string(c.db.size()) + ",expires=" + std::to_string(c.db.expiring()) + ",avg_ttl=0\r\n";
  }
  c.reply.bulk(text);
}

void dbsize(Call& c) { c.reply.integer(static_cast<std::int64_t>(c.db.size())); }

// DEBUG DIGEST: 160 bits that depend on every live key, its type, its value
// and its deadline, and on nothing else (not the order the keys are stored
// in): two kv instances answer the same exactly when they hold the same data
// (a handoff's source at the flip and its target; bench/kv_bench.cpp). Like
// Redis's in form (40 hex digits, all 0 when empty), not in value.

/// FNV-1a over `bytes` from `seed`, then splitmix64's finalizer.
std::uint64_t hash64(std::string_view bytes, std::uint64_t seed) {
  std::uint64_t h = seed ^ 0xcbf29ce484222325ull;
  for (const char ch : bytes) h = (h ^ static_cast<unsigned char>(ch)) * 0x100000001b3ull;
  h ^= bytes.size();
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ull;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

/// One lane of one key's record: key, type, members (a set's and a hash's
/// in no order), deadline.
std::uint64_t record_hash(std::string_view key, const Value& value, std::int64_t deadline, std::uint64_t seed) {
  std::uint64_t h = hash64(key, seed + static_cast<std::uint8_t>(value.type));
  switch (value.type) {
    case Type::String: h = hash64(value.str, h); break;
    case Type::List:
      for (const auto& item : value.coll->list) h = hash64(item, h);
      break;
    case Type::Set: {
      std::uint64_t members = 0;
      for (const auto& member : value.coll->set) members ^= hash64(member, seed);
      h = hash64(std::string_view(reinterpret_cast<const char*>(&members), sizeof members), h);
      break;
    }
    case Type::Hash: {
      std::uint64_t fields = 0;
      for (const auto& [field, data] : value.coll->hash) fields ^= hash64(data, hash64(field, seed));
      h = hash64(std::string_view(reinterpret_cast<const char*>(&fields), sizeof fields), h);
      break;
    }
  }
  return hash64(std::string_view(reinterpret_cast<const char*>(&deadline), sizeof deadline), h);
}

void debug(Call& c) {
  if (!iequals(c.args[1], "digest"))
    return c.reply.error({"ERR unknown subcommand '", c_string(c.args[1], 128), "'. Try DEBUG HELP."});
  if (c.args.size() != 2) return wrong_arity(c.reply, "debug|digest");
  std::uint64_t lanes[3] = {0, 0, 0};
  c.db.each([&](std::string_view key, const Value& value, std::int64_t deadline) {
    for (std::uint64_t i = 0; i < 3; ++i) lanes[i] ^= record_hash(key, value, deadline, 0x9e3779b97f4a7c15ull * (i + 1));
  });
  char text[41];
  std::snprintf(text, sizeof text, "%016llx%016llx%08llx", static_cast<unsigned long long>(lanes[0]),
                static_cast<unsigned long long>(lanes[1]), static_cast<unsigned long long>(lanes[2] >> 32));
  c.reply.simple(text);
}

void flush(Call& c) {
  if (c.args.size() > 2) return c.reply.syntax_error();
  if (c.args.size() == 2 && !iequals(c.args[1], "async") && !iequals(c.args[1], "sync")) return c.reply.syntax_error();
  c.db.clear();
  c.reply.ok();
}

// --- keys and strings --------------------------------------------------------

void del(Call& c) {
  std::int64_t deleted = 0;
  for (std::size_t i = 1; i < c.args.size(); ++i) deleted += c.db.erase(c.args[i]) ? 1 : 0;
  c.reply.integer(deleted);
}

void exists(Call& c) {
  std::int64_t found = 0;
  for (std::size_t i = 1; i < c.args.size(); ++i) found += c.db.find(c.args[i]) != nullptr ? 1 : 0;
  c.reply.integer(found);
}

void get(Call& c) {
  bool wrong = false;
  const Value* value = find_typed(c, c.args[1], Type::String, wrong);
  if (wrong) return;
  value ? c.reply.bulk(value->str) : c.reply.null();
}

// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]; the expiry
// options only where the keyspace has expiry (kv v2 and later).
void set(Call& c) {
  bool nx = false, xx = false, get_old = false, keep_ttl = false;
  std::optional<std::int64_t> deadline;
  for (std::size_t i = 3; i < c.args.size(); ++i) {
    const std::string_view option = c.args[i];
    const bool has_next = i + 1 < c.args.size();
    if (iequals(option, "nx") && !xx) {
      nx = true;
    } else if (iequals(option, "xx") && !nx) {
      xx = true;
    } else if (iequals(option, "get")) {
      get_old = true;
    } else if (c.db.has_expiry() && iequals(option, "keepttl") && !deadline) {
      keep_ttl = true;
    } else if (c.db.has_expiry() && has_next && !keep_ttl && !deadline &&
               (iequals(option, "ex") || iequals(option, "px") || iequals(option, "exat") || iequals(option, "pxat"))) {
      const auto amount = parse_int(c.args[++i]);
      if (!amount) return c.reply.not_integer();
      const bool seconds = iequals(option, "ex") || iequals(option, "exat");
      const bool relative = iequals(option, "ex") || iequals(option, "px");
      if (*amount <= 0 || (seconds && *amount > std::numeric_limits<std::int64_t>::max() / 1000))
        return c.reply.error("ERR invalid expire time in 'set' command");
      const std::int64_t ms = seconds ? *amount * 1000 : *amount;
      if (relative && ms > std::numeric_limits<std::int64_t>::max() - c.db.now())
        return c.reply.error("ERR invalid expire time in 'set' command");
      deadline = relative ? c.db.now() + ms : ms;
    } else {
      return c.reply.syntax_error();
    }
  }
  const std::string_view key = c.args[1];
  Value* existing = c.db.find(key);
  if (get_old && existing != nullptr && existing->type != Type::String) return c.reply.wrong_type();
  const bool write = !(nx && existing != nullptr) && !(xx && existing == nullptr);
  if (get_old) {
    existing ? c.reply.bulk(existing->str) : c.reply.null();  // before the value changes below
  } else if (!write) {
    c.reply.null();
  } else {
    c.reply.ok();
  }
  if (!write) return;
  if (existing != nullptr) {
    if (existing->type == Type::String) {
      existing->str.assign(c.args[2]);
    } else {
      *existing = Value{};
      existing->str.assign(c.args[2]);
    }
  } else {
    Value value;
    value.str.assign(c.args[2]);
    c.db.insert(key, std::move(value));
  }
  if (deadline)
    c.db.set_deadline(key, *deadline);
  else if (!keep_ttl)
    c.db.clear_deadline(key);
}

void mget(Call& c) {
  c.reply.array(c.args.size() - 1);
  for (std::size_t i = 1; i < c.args.size(); ++i) {
    const Value* value = c.db.find(c.args[i]);
    value != nullptr && value->type == Type::String ? c.reply.bulk(value->str) : c.reply.null();
  }
}

void mset(Call& c) {
  if (c.args.size() % 2 != 1) return wrong_arity(c.reply, "mset");
  for (std::size_t i = 1; i < c.args.size(); i += 2) {
    Value* existing = c.db.find(c.args[i]);
    if (existing != nullptr) {
      *existing = Value{};
      existing->str.assign(c.args[i + 1]);
    } else {
      Value value;
      value.str.assign(c.args[i + 1]);
      c.db.insert(c.args[i], std::move(value));
    }
    c.db.clear_deadline(c.args[i]);
  }
  c.reply.ok();
}

void increment_by(Call& c, std::int64_t delta) {
  bool wrong = false;
  Value* value = find_typed(c, c.args[1], Type::String, wrong);
  if (wrong) return;
  std::int64_t current = 0;  // a missing key counts as 0
  if (value != nullptr) {
    const auto parsed = parse_int(value->str);
    if (!parsed) return c.reply.not_integer();
    current = *parsed;
  }
  if ((delta > 0 && current > std::numeric_limits<std::int64_t>::max() - delta) ||
      (delta < 0 && current < std::numeric_limits<std::int64_t>::min() - delta))
    return c.reply.error("ERR increment or decrement would overflow");
  current += delta;
  if (value == nullptr) value = &c.db.insert(c.args[1], Value{});
  value->str = std::to_string(current);
  c.reply.integer(current);
}

void incr(Call& c) { increment_by(c, 1); }
void decr(Call& c) { increment_by(c, -1); }

void incrby(Call& c) {
  const auto delta = parse_int(c.args[2]);
  if (!delta) return c.reply.not_integer();
  increment_by(c, *delta);
}

void append(Call& c) {
  Value* value = find_or_create(c, c.args[1], Type::String);
  if (value == nullptr) return;
  value->str.append(c.args[2]);
  c.reply.integer(static_cast<std::int64_t>(value->str.size()));
}

void strlen(Call& c) {
  bool wrong = false;
  const Value* value = find_typed(c, c.args[1], Type::String, wrong);
  if (wrong) return;
  c.reply.integer(value ? static_cast<std::int64_t>(value->str.size()) : 0);
}

// --- lists -------------------------------------------------------------------

void push(Call& c, bool left) {
  Value* value = find_or_create(c, c.args[1], Type::List);
  if (value == nullptr) return;
  auto& list = value->coll->list;
  for (std::size_t i = 2; i < c.args.size(); ++i) left ? list.emplace_front(c.args[i]) : list.emplace_back(c.args[i]);
  c.reply.integer(static_cast<std::int64_t>(list.size()));
}

void lpush(Call& c) { push(c, true); }
void rpush(Call& c) { push(c, false); }

void pop(Call& c, bool left) {
  if (c.args.size() > 3) return wrong_arity(c.reply, left ? "lpop" : "rpop");
  std::optional<std::int64_t> count;
  if (c.args.size() == 3) {
    count = parse_int(c.args[2]);
    if (!count || *count < 0) return c.reply.error("ERR value is out of range, must be positive");
  }
  bool wrong = false;
  Value* value = find_typed(c, c.args[1], Type::List, wrong);
  if (wrong) return;
  if (value == nullptr) return count ? c.reply.null_array() : c.reply.null();
  auto& list = value->coll->list;
  auto take = [&] {
    std::string item = std::move(left ? list.front() : list.back());
    left ? list.pop_front() : list.pop_back();
    return item;
  };
  if (!count) {
    c.reply.bulk(take());
  } else {
    const auto n = std::min<std::size_t>(static_cast<std::size_t>(*count), list.size());
    c.reply.array(n);
    for (std::size_t i = 0; i < n; ++i) c.reply.bulk(take());
  }
  drop_if_empty(c, c.args[1], *value);
}

void lpop(Call& c) { pop(c, true); }
void rpop(Call& c) { pop(c, false); }

void lrange(Call& c) {
  auto start = parse_int(c.args[2]);
  auto stop = parse_int(c.args[3]);
  if (!start || !stop) return c.reply.not_integer();
  bool wrong = false;
  const Value* value = find_typed(c, c.args[1], Type::List, wrong);
  if (wrong) return;
  if (value == nullptr) return c.reply.array(0);
  const auto& list = value->coll->list;
  const auto length = static_cast<std::int64_t>(list.size());
  std::int64_t first = *start < 0 ? length + *start : *start;
  std::int64_t last = *stop < 0 ? length + *stop : *stop;
  if (first < 0) first = 0;
  if (first > last || first >= length) return c.reply.array(0);
  if (last >= length) last = length - 1;
  c.reply.array(static_cast<std::size_t>(last - first + 1));
  for (std::int64_t i = first; i <= last; ++i) c.reply.bulk(list[static_cast<std::size_t>(i)]);
}

void llen(Call& c) {
  bool wrong = false;
  const Value* value = find_typed(c, c.args[1], Type::List, wrong);
  if (wrong) return;
  c.reply.integer(value ? static_cast<std::int64_t>(value->coll->list.size()) : 0);
}

// --- sets --------------------------------------------------------------------

void sadd(Call& c) {
  Value* value = find_or_create(c, c.args[1], Type::Set);
  if (value == nullptr) return;
  std::int64_t added = 0;
  for (std::size_t i = 2; i < c.args.size(); ++i) added += value->coll->set.emplace(c.args[i]).second ? 1 : 0;
  c.reply.integer(added);
}

void srem(Call& c) {
  bool wrong = false;
  Value* value = find_typed(c, c.args[1], Type::Set, wrong);
  if (wrong) return;
  if (value == nullptr) return c.reply.integer(0);
  std::int64_t removed = 0;
  for (std::size_t i = 2; i < c.args.size(); ++i) {
    const auto it = value->coll->set.find(c.args[i]);
    if (it == value->coll->set.end()) continue;
    value->coll->set.erase(it);
    ++removed;
  }
  c.reply.integer(removed);
  drop_if_empty(c, c.args[1], *value);
}

void smembers(Call& c) {
  bool wrong = false;
  const Value* value = find_typed(c, c.args[1], Type::Set, wrong);
  if (wrong) return;
  if (value == nullptr) return c.reply.array(0);
  c.reply.array(value->coll->set.size());
  for (const auto& member : value->coll->set) c.reply.bulk(member);
}

void scard(Call& c) {
  bool wrong = false;
  const Value* value = find_typed(c, c.args[1], Type::Set, wrong);
  if (wrong) return;
  c.reply.integer(value ? static_cast<std::int64_t>(value->coll->set.size()) : 0);
}

// --- hashes ------------------------------------------------------------------

void hset(Call& c) {
  if (c.args.size() % 2 != 0) return wrong_arity(c.reply, "hset");
  Value* value = find_or_create(c, c.args[1], Type::Hash);
  if (value == nullptr) return;
  std::int64_t added = 0;
  for (std::size_t i = 2; i < c.args.size(); i += 2) {
    auto& hash = value->coll->hash;
    if (const auto it = hash.find(c.args[i]); it != hash.end()) {
      it->second.assign(c.args[i + 1]);
    } else {
      hash.emplace(std::string(c.args[i]), std::string(c.args[i + 1]));
      ++added;
    }
  }
  c.reply.integer(added);
}

void hget(Call& c) {
  bool wrong = false;
  const Value* value = find_typed(c, c.args[1], Type::Hash, wrong);
  if (wrong) return;
  if (value == nullptr) return c.reply.null();
  const auto it = value->coll->hash.find(c.args[2]);
  it == value->coll->hash.end() ? c.reply.null() : c.reply.bulk(it->second);
}

void hdel(Call& c) {
  bool wrong = false;
  Value* value = find_typed(c, c.args[1], Type::Hash, wrong);
  if (wrong) return;
  if (value == nullptr) return c.reply.integer(0);
  std::int64_t removed = 0;
  for (std::size_t i = 2; i < c.args.size(); ++i) {
    const auto it = value->coll->hash.find(c.args[i]);
    if (it == value->coll->hash.end()) continue;
    value->coll->hash.erase(it);
    ++removed;
  }
  c.reply.integer(removed);
  drop_if_empty(c, c.args[1], *value);
}

void hgetall(Call& c) {
  bool wrong = false;
  const Value* value = find_typed(c, c.args[1], Type::Hash, wrong);
  if (wrong) return;
  if (value == nullptr) return c.reply.array(0);
  c.reply.array(value->coll->hash.size() * 2);
  for (const auto& [field, data] : value->coll->hash) {
    c.reply.bulk(field);
    c.reply.bulk(data);
  }
}

}  // namespace

const Command* CommandTable::find(std::string_view name) const {
  char lower[32];
  if (name.size() > sizeof lower) return nullptr;
  for (std::size_t i = 0; i < name.size(); ++i) {
    const char ch = name[i];
    lower[i] = ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch + ('a' - 'A')) : ch;  // ASCII only, as strcasecmp in Redis's C locale
  }
  const auto it = commands.find(std::string_view(lower, name.size()));
  return it == commands.end() ? nullptr : &it->second;
}

void wrong_arity(Reply& reply, std::string_view name) {
  reply.error({"ERR wrong number of arguments for '", name, "' command"});
}

void add_core_commands(CommandTable& table) {
  for (const Command& command : {
           Command{"ping", -1, ping},       Command{"echo", 2, echo},         Command{"quit", -1, quit},
           Command{"select", 2, select},    Command{"hello", -1, hello},      Command{"client", -2, client},
           Command{"config", -2, config},   Command{"command", -1, command},  Command{"info", -1, info},
           Command{"dbsize", 1, dbsize},    Command{"debug", -2, debug},    Command{"flushdb", -1, flush, true},    Command{"flushall", -1, flush, true},
           Command{"del", -2, del, true},         Command{"exists", -2, exists},    Command{"get", 2, get},
           Command{"set", -3, set, true},         Command{"mget", -2, mget},        Command{"mset", -3, mset, true},
           Command{"incr", 2, incr, true},        Command{"decr", 2, decr, true},         Command{"incrby", 3, incrby, true},
           Command{"append", 3, append, true},    Command{"strlen", 2, strlen},     Command{"lpush", -3, lpush, true},
           Command{"rpush", -3, rpush, true},     Command{"lpop", -2, lpop, true},        Command{"rpop", -2, rpop, true},
           Command{"lrange", 4, lrange},    Command{"llen", 2, llen},         Command{"sadd", -3, sadd, true},
           Command{"srem", -3, srem, true},       Command{"smembers", 2, smembers}, Command{"scard", 2, scard},
           Command{"hset", -4, hset, true},       Command{"hget", 3, hget},         Command{"hdel", -3, hdel, true},
           Command{"hgetall", 2, hgetall},
       })
    table.add(command);
}

}  // namespace kv
