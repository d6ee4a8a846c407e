// kv's pre-copy (molt/transfer.hpp; docs/plugin-api.md, "Pre-copy"): what a
// transfer records while it runs, and the parts it writes and reads.
//
// A part is a run of records, ended by kEnd:
//   kPut    key, value (Value::write), then in schema 2 its deadline (-1: none)
//   kRemove key
//   kClear  (FLUSHDB, FLUSHALL: every key goes)
// The final part is followed by the clients (the per-connection state).
// Parts are written in the schema the transfer targets: a downgrade to
// schema 1 carries no deadlines, and a key whose deadline has passed is sent
// as a removal (as SchemaOneView leaves it out of a whole state).
//
// Why the result is exact (the rule in molt/transfer.hpp). The chunks visit
// every bucket of the key table once, so every key that exists throughout is
// sent. A rehash would move keys between buckets behind the cursor, so while
// a transfer runs the table does not rehash: its max_load_factor is raised
// (the table's chains grow a little longer as it grows; the next insert
// after the transfer rehashes it as usual). Should it rehash anyway, the
// next chunk starts over from bucket 0 (the receiver overwrites what it
// has), and the final part finishes the pass.
// Every key a command writes or removes while the transfer runs is noted
// (Changes, through Db), and the next round sends it as it is then. A round
// takes the keys noted so far and sends them, a budget at a time; what is
// noted meanwhile waits for the next round. The final part, written while
// the module is paused, sends the rest. The receiver applies parts in order,
// so for every key the last record it applies is the key's value (or
// absence) at the final part.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include <boost/serialization/map.hpp>
#include <boost/serialization/split_member.hpp>

#include "molt/state.hpp"
#include "molt/transfer.hpp"
#include "state.hpp"

namespace kv {

/// The keys written or removed since the round began. A Db notes into it
/// while a transfer runs (and holds null otherwise: no cost).
class Changes {
 public:
  void key(std::string_view key) {
    if (keys_.find(key) == keys_.end()) keys_.emplace(key);
  }
  /// Every key went (FLUSHDB): what was noted before is covered by the clear.
  void clear() {
    cleared_ = true;
    keys_.clear();
  }

  /// Hands over what was noted, and starts noting afresh.
  struct Noted {
    bool cleared = false;
    std::vector<std::string> keys;
  };
  Noted take() {
    Noted noted{cleared_, {}};
    noted.keys.reserve(keys_.size());
    while (!keys_.empty()) noted.keys.push_back(std::move(keys_.extract(keys_.begin()).value()));
    cleared_ = false;
    return noted;
  }
  [[nodiscard]] std::size_t size() const noexcept { return keys_.size(); }

 private:
  StringSet keys_;
  bool cleared_ = false;
};

enum class Record : std::uint8_t { End = 0, Put = 1, Remove = 2, Clear = 3 };

/// A transfer in progress, on the sending side: its target schema, the
/// chunk cursor, the round being sent, and the changes noted since.
struct TransferSender {
  /// While a transfer runs, the key table's max_load_factor: no insert
  /// rehashes it (a rehash moves keys behind the chunk cursor).
  static constexpr float kNoRehash = 1e6f;

  molt::api::SchemaVersion schema;
  float load_factor = 1.0f;  ///< the table's own, put back at the end
  Changes changes;
  std::size_t bucket = 0;   ///< next bucket for transfer_chunk
  std::size_t buckets = 0;  ///< the table's bucket count when the chunks (re)started
  std::uint64_t restarts = 0;
  Changes::Noted round;  ///< the keys of the round being sent
  std::size_t next = 0;  ///< in round.keys
  bool round_open = false;
};

namespace transfer_detail {

inline constexpr std::int64_t kNoDeadline = -1;

/// The fewest bytes a record of a key takes that the budget counts: the key,
/// its value's string or a guess at its members.
inline std::uint64_t record_bytes(std::string_view key, const Value& value) {
  std::uint64_t bytes = 16 + key.size();
  if (value.type == Type::String) return bytes + value.str.size();
  const Collection& c = *value.coll;
  return bytes + 16 * (c.list.size() + c.set.size() + 2 * c.hash.size());
}

/// Whether `state` has expiry (schema 2).
template <class State>
constexpr bool kHasExpiry = requires(State& s) { s.expires; };

/// The deadline of `key` in `state` (kNoDeadline without one, or in schema 1).
template <class State>
std::int64_t deadline_of(const State& state, std::string_view key) {
  if constexpr (kHasExpiry<State>) {
    const auto it = state.expires.find(key);
    return it == state.expires.end() ? kNoDeadline : it->second;
  } else {
    return kNoDeadline;
  }
}

/// Writes `key` as it is in `state` now: its value, or that it is gone (or,
/// in schema 1, expired). Returns the bytes it counts.
template <class Archive, class State>
std::uint64_t write_key(Archive& ar, const State& state, std::string_view key, molt::api::SchemaVersion schema,
                        std::int64_t now) {
  const auto it = state.keys.find(key);
  const std::int64_t deadline = it == state.keys.end() ? kNoDeadline : deadline_of(state, key);
  const bool expired = deadline != kNoDeadline && deadline <= now;
  std::string text(key);  // Boost writes std::string
  if (it == state.keys.end() || (expired && schema == StateV1::kSchema)) {
    auto tag = static_cast<std::uint8_t>(Record::Remove);
    ar & tag & text;
    return 16 + key.size();
  }
  auto tag = static_cast<std::uint8_t>(Record::Put);
  ar & tag & text;
  it->second.write(ar);
  if (schema != StateV1::kSchema) {
    std::int64_t d = deadline;
    ar & d;
  }
  return record_bytes(key, it->second);
}

/// A call's budget, spent entry by entry (or bucket by bucket); the clock is
/// read every 32 of them.
class Budget {
 public:
  explicit Budget(const molt::api::TransferBudget& budget)
      : budget_(budget), started_(std::chrono::steady_clock::now()) {}
  /// Counts one entry of `bytes`; false once the budget is spent.
  bool spend(std::uint64_t bytes) {
    bytes_ += bytes;
    if (bytes_ >= budget_.max_bytes) return false;
    if (++entries_ % 32 != 0) return true;
    const auto spent = std::chrono::steady_clock::now() - started_;
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(spent).count()) <
           budget_.max_nanoseconds;
  }

 private:
  molt::api::TransferBudget budget_;
  std::chrono::steady_clock::time_point started_;
  std::uint64_t bytes_ = 0;
  std::uint64_t entries_ = 0;
};

template <class State>
struct ChunkView {
  const State& state;
  TransferSender& sender;
  const molt::api::TransferBudget& budget;
  molt::api::TransferStep& step;
  std::int64_t now;

  template <class Archive>
  void save(Archive& ar, unsigned) const {
    const Keyspace& keys = state.keys;
    if (keys.bucket_count() != sender.buckets) {  // rehashed since the chunks began: keys moved buckets
      if (sender.buckets != 0) ++sender.restarts;
      sender.bucket = 0;
      sender.buckets = keys.bucket_count();
    }
    // Whole buckets: the cursor is a bucket.
    Budget spending(budget);
    for (bool within = true; within && sender.bucket < sender.buckets;) {
      std::uint64_t bytes = 0;
      const std::size_t bucket = sender.bucket++;
      for (auto it = keys.begin(bucket); it != keys.end(bucket); ++it, ++step.entries)
        bytes += write_key(ar, state, it->first, sender.schema, now);
      within = spending.spend(bytes);
    }
    step.done = sender.bucket >= sender.buckets;
    auto end = static_cast<std::uint8_t>(Record::End);
    ar & end;
  }
  template <class Archive>
  void load(Archive&, unsigned) {}
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

/// Begins a round with the keys noted so far (after a clear, if one came).
template <class Archive>
void open_round(Archive& ar, TransferSender& sender, molt::api::TransferStep& step) {
  sender.round = sender.changes.take();
  sender.next = 0;
  sender.round_open = true;
  if (sender.round.cleared) {
    auto tag = static_cast<std::uint8_t>(Record::Clear);
    ar & tag;
    ++step.entries;
  }
}

/// Sends the open round's keys, while `spend` allows; closes the round at
/// its end. Returns whether it did.
template <class Archive, class State, class Spend>
bool send_round(Archive& ar, const State& state, TransferSender& sender, molt::api::TransferStep& step,
                std::int64_t now, Spend spend) {
  auto& keys = sender.round.keys;
  while (sender.next < keys.size()) {
    const std::uint64_t bytes = write_key(ar, state, keys[sender.next++], sender.schema, now);
    ++step.entries;
    if (!spend(bytes)) break;
  }
  if (sender.next < keys.size()) return false;
  sender.round = {};
  sender.round_open = false;
  return true;
}

/// A part of a round, within the budget.
template <class State>
struct DeltaView {
  const State& state;
  TransferSender& sender;
  const molt::api::TransferBudget& budget;
  molt::api::TransferStep& step;
  std::int64_t now;

  template <class Archive>
  void save(Archive& ar, unsigned) const {
    if (!sender.round_open) open_round(ar, sender, step);
    Budget spending(budget);
    step.done = send_round(ar, state, sender, step, now, [&](std::uint64_t bytes) { return spending.spend(bytes); });
    auto end = static_cast<std::uint8_t>(Record::End);
    ar & end;
  }
  template <class Archive>
  void load(Archive&, unsigned) {}
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

/// The final part, written while the module is paused (nothing changes
/// meanwhile): the rest of the open round, every key noted since, then the
/// clients.
template <class State>
struct FinalView {
  const State& state;
  TransferSender& sender;
  molt::api::TransferStep& step;
  std::int64_t now;

  template <class Archive>
  void save(Archive& ar, unsigned) const {
    const auto all = [](std::uint64_t) { return true; };
    if (sender.buckets == 0 || sender.bucket < sender.buckets || state.keys.bucket_count() != sender.buckets) {
      // The chunks did not finish (the transfer stopped short): the rest of
      // the pass, or all of it again after a rehash.
      if (state.keys.bucket_count() != sender.buckets) sender.bucket = 0;
      for (std::size_t b = sender.bucket; b < state.keys.bucket_count(); ++b)
        for (auto it = state.keys.begin(b); it != state.keys.end(b); ++it, ++step.entries)
          write_key(ar, state, it->first, sender.schema, now);
      sender.bucket = sender.buckets = state.keys.bucket_count();
    }
    if (sender.round_open) send_round(ar, state, sender, step, now, all);
    open_round(ar, sender, step);
    send_round(ar, state, sender, step, now, all);
    step.done = true;
    auto end = static_cast<std::uint8_t>(Record::End);
    ar & end;
    ar & state.clients;
  }
  template <class Archive>
  void load(Archive&, unsigned) {}
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

/// Applies one part to `state`, whatever the schema it was written in.
template <class State>
struct PartReader {
  State& state;
  molt::api::SchemaVersion from_schema;
  bool final;

  template <class Archive>
  void save(Archive&, unsigned) const {}
  template <class Archive>
  void load(Archive& ar, unsigned) {
    for (;;) {
      std::uint8_t tag = 0;
      ar & tag;
      if (tag == static_cast<std::uint8_t>(Record::End)) break;
      if (tag == static_cast<std::uint8_t>(Record::Clear)) {
        state.keys.clear();
        if constexpr (kHasExpiry<State>) state.expires.clear();
        continue;
      }
      std::string key;
      ar & key;
      if (tag == static_cast<std::uint8_t>(Record::Remove)) {
        erase(key);
        continue;
      }
      if (tag != static_cast<std::uint8_t>(Record::Put))
        throw std::runtime_error("kv transfer: unknown record " + std::to_string(tag));
      Value value;
      const bool kept = value.read(ar);  // false: an empty collection, which kv does not keep
      std::int64_t deadline = kNoDeadline;
      if (from_schema != StateV1::kSchema) ar & deadline;
      if (!kept) {
        erase(key);
        continue;
      }
      if constexpr (kHasExpiry<State>) {
        if (deadline == kNoDeadline)
          state.expires.erase(key);
        else
          state.expires.insert_or_assign(key, deadline);
      }
      state.keys.insert_or_assign(std::move(key), std::move(value));
    }
    if (final) ar & state.clients;
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()

 private:
  void erase(const std::string& key) {
    state.keys.erase(key);
    if constexpr (kHasExpiry<State>) state.expires.erase(key);
  }
};

}  // namespace transfer_detail

/// The transfer hooks of a kv version over `State` (KvModule calls these).
template <class State>
struct Transfer {
  static molt::api::TransferStep chunk(const State& state, TransferSender& sender, molt::api::StateWriter& out,
                                       const molt::api::TransferBudget& budget, std::int64_t now) {
    molt::api::TransferStep step;
    out.write(transfer_detail::ChunkView<State>{state, sender, budget, step, now});
    return step;
  }
  static molt::api::TransferStep delta(const State& state, TransferSender& sender, molt::api::StateWriter& out,
                                       const molt::api::TransferBudget& budget, std::int64_t now) {
    molt::api::TransferStep step;
    out.write(transfer_detail::DeltaView<State>{state, sender, budget, step, now});
    return step;
  }
  static molt::api::TransferStep final(const State& state, TransferSender& sender, molt::api::StateWriter& out,
                                       std::int64_t now) {
    molt::api::TransferStep step;
    out.write(transfer_detail::FinalView<State>{state, sender, step, now});
    return step;
  }
  static void receive(State& state, molt::api::StateReader& in, molt::api::SchemaVersion from_schema,
                      molt::api::TransferPart part) {
    transfer_detail::PartReader<State> reader{state, from_schema, part == molt::api::TransferPart::Final};
    in.read(reader);
  }
};

}  // namespace kv
