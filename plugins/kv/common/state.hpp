// kv's state, one struct per schema. A released schema is never edited; a
// newer version keeps reading (and, for downgrades, writing) the older ones.
//
//   schema 1 (kv v1):     keys, clients
//   schema 2 (kv v2, v3): keys, expiry deadlines, clients
//
// The archive format is flat and written by hand (counts, then entries)
// rather than through Boost's per-object class records: millions of keys
// make that bookkeeping the bulk of an upgrade's pause.
//
// A state may come from a file (a snapshot, moltctl restore), so every count
// is checked against the bytes left before anything is reserved or looped
// over (expect_items), at the fewest bytes an entry can take in this format
// (kMin*Bytes below): 93 bytes that declare 2^27 keys are refused at once.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <boost/serialization/map.hpp>
#include <boost/serialization/split_member.hpp>
#include <boost/serialization/string.hpp>

#include "molt/state_archive.hpp"
#include "molt/stream.hpp"
#include "molt/types.hpp"

namespace kv {

// The fewest bytes one entry takes in the archive (Boost's binary format: a
// string is its 8-byte length then its bytes; a count is 8 bytes).
inline constexpr std::uint64_t kMinStringBytes = 8;                          ///< an empty string
inline constexpr std::uint64_t kMinValueBytes = 1 + 8;                       ///< type tag, then a string or a count
inline constexpr std::uint64_t kMinKeyBytes = kMinStringBytes + kMinValueBytes;  ///< a key and its value
inline constexpr std::uint64_t kMinFieldBytes = 2 * kMinStringBytes;         ///< a hash field and its value
inline constexpr std::uint64_t kMinExpiryBytes = kMinStringBytes + 8;        ///< a key and its deadline

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
};
using StringSet = std::unordered_set<std::string, StringHash, std::equal_to<>>;
using StringMap = std::unordered_map<std::string, std::string, StringHash, std::equal_to<>>;

enum class Type : std::uint8_t { String = 0, List = 1, Set = 2, Hash = 3 };

/// The members of a list, set or hash value (only the one its type names).
struct Collection {
  std::deque<std::string> list;
  StringSet set;
  StringMap hash;
};

struct Value {
  Type type = Type::String;
  std::string str;                  ///< Type::String
  std::unique_ptr<Collection> coll; ///< the other types

  static Value of_type(Type type) {
    Value value;
    value.type = type;
    if (type != Type::String) value.coll = std::make_unique<Collection>();
    return value;
  }

  template <class Archive>
  void write(Archive& ar) const {
    std::uint8_t tag = static_cast<std::uint8_t>(type);
    ar & tag;
    switch (type) {
      case Type::String: ar & str; break;
      case Type::List: write_all(ar, coll->list); break;
      case Type::Set: write_all(ar, coll->set); break;
      case Type::Hash: {
        std::uint64_t n = coll->hash.size();
        ar & n;
        for (const auto& [field, value] : coll->hash) ar & field & value;
        break;
      }
    }
  }

  /// Reads a value written by write(); false if it is a list, set or hash
  /// without members (kv drops those).
  template <class Archive>
  bool read(Archive& ar) {
    std::uint8_t tag = 0;
    ar & tag;
    if (tag > static_cast<std::uint8_t>(Type::Hash)) throw std::runtime_error("kv state: unknown value type " + std::to_string(tag));
    type = static_cast<Type>(tag);
    if (type == Type::String) {
      ar & str;
      return true;
    }
    return read_members(ar);
  }

 private:
  /// The members of a list, set or hash: out of line, so that reading the
  /// common case (a string) stays as short as it was.
  template <class Archive>
  [[gnu::noinline]] bool read_members(Archive& ar) {
    coll = std::make_unique<Collection>();
    std::uint64_t n = 0;
    switch (type) {
      case Type::String: break;
      case Type::List:
        ar & n;
        molt::api::expect_items(ar, n, kMinStringBytes, "list members");
        for (std::uint64_t i = 0; i < n; ++i) ar & coll->list.emplace_back();
        break;
      case Type::Set:
        ar & n;
        molt::api::expect_items(ar, n, kMinStringBytes, "set members");
        coll->set.reserve(n);
        for (std::uint64_t i = 0; i < n; ++i) {
          std::string member;
          ar & member;
          coll->set.insert(std::move(member));
        }
        break;
      case Type::Hash:
        ar & n;
        molt::api::expect_items(ar, n, kMinFieldBytes, "hash fields");
        coll->hash.reserve(n);
        for (std::uint64_t i = 0; i < n; ++i) {
          std::string field, value;
          ar & field & value;
          coll->hash.emplace(std::move(field), std::move(value));
        }
        break;
    }
    return n != 0;
  }

  template <class Archive, class Container>
  static void write_all(Archive& ar, const Container& items) {
    std::uint64_t n = items.size();
    ar & n;
    for (const auto& item : items) ar & item;
  }
};

using Keyspace = std::unordered_map<std::string, Value, StringHash, std::equal_to<>>;
/// Key -> deadline, in milliseconds since the Unix epoch (absolute, so a
/// state restored later still knows what has expired).
using Expires = std::unordered_map<std::string, std::int64_t, StringHash, std::equal_to<>>;

/// What kv keeps per connection; migrates with the state.
struct Client {
  std::string name;  ///< CLIENT SETNAME
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & name;
  }
};
using Clients = std::map<molt::api::ConnectionId, Client>;

/// Writes every key of `keys`.
template <class Archive>
void write_keyspace(Archive& ar, const Keyspace& keys) {
  std::uint64_t count = keys.size();
  ar & count;
  for (const auto& [key, value] : keys) {
    ar & key;
    value.write(ar);
  }
}

/// Writes the keys of `keys` that `skip(key)` does not leave out. Walks the
/// table twice (the count comes first), so use it only when filtering.
template <class Archive, class Skip>
void write_keyspace(Archive& ar, const Keyspace& keys, Skip skip) {
  std::uint64_t count = 0;
  for (const auto& entry : keys) count += skip(entry.first) ? 0 : 1;
  ar & count;
  for (const auto& [key, value] : keys) {
    if (skip(key)) continue;
    ar & key;
    value.write(ar);
  }
}

template <class Archive>
void read_keyspace(Archive& ar, Keyspace& keys) {
  std::uint64_t count = 0;
  ar & count;
  molt::api::expect_items(ar, count, kMinKeyBytes, "keys");
  keys.clear();
  keys.reserve(count);
  for (std::uint64_t i = 0; i < count; ++i) {
    std::string key;
    ar & key;
    Value value;
    // kv never keeps an empty list, set or hash (they disappear, as in
    // Redis, which also skips them when loading): one in an archive was not
    // written by kv, and would cost a Collection (~800 bytes) per 17 bytes.
    if (!value.read(ar)) continue;
    keys.emplace(std::move(key), std::move(value));
  }
}

/// Schema 1: kv v1.
struct StateV1 {
  static constexpr molt::api::SchemaVersion kSchema{1};
  Keyspace keys;
  Clients clients;

  template <class Archive>
  void save(Archive& ar, unsigned) const {
    write_keyspace(ar, keys);
    ar & clients;
  }
  template <class Archive>
  void load(Archive& ar, unsigned) {
    read_keyspace(ar, keys);
    ar & clients;
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

/// Schema 2: kv v2 and v3 — schema 1 plus expiry deadlines.
struct StateV2 {
  static constexpr molt::api::SchemaVersion kSchema{2};
  Keyspace keys;
  Expires expires;
  Clients clients;

  template <class Archive>
  void save(Archive& ar, unsigned) const {
    write_keyspace(ar, keys);
    std::uint64_t n = expires.size();
    ar & n;
    for (const auto& [key, deadline] : expires) ar & key & deadline;
    ar & clients;
  }
  template <class Archive>
  void load(Archive& ar, unsigned) {
    read_keyspace(ar, keys);
    std::uint64_t n = 0;
    ar & n;
    molt::api::expect_items(ar, n, kMinExpiryBytes, "expiry deadlines");
    expires.clear();
    expires.reserve(n);
    for (std::uint64_t i = 0; i < n; ++i) {
      std::string key;
      std::int64_t deadline = 0;
      ar & key & deadline;
      expires.emplace(std::move(key), deadline);
    }
    ar & clients;
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

}  // namespace kv
