// kv's pre-copy (plugins/kv/common/transfer.hpp) through the host's calls
// (ModuleSlot::UpgradeAccess): the real images, the parts applied to a new
// instance of the next version in order, and the result compared with what
// the old version's save_state holds at the final part, entry by entry.
#include <algorithm>
#include <atomic>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <catch2/catch.hpp>

#include "../../plugins/kv/common/state.hpp"
#include "../../plugins/kv/common/transfer.hpp"
#include "molt/host/slot/state_hooks.hpp"
#include "molt/host/slot/upgrade_access.hpp"
#include "molt/host/state/buffers.hpp"
#include "molt/host/state/snapshot_store.hpp"
#include "molt/host/upgrade/transaction.hpp"
#include "resp_client.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;

namespace {

struct Discard final : api::StreamOutput {
  void write(std::string_view) override {}
  void close_after_write() override {}
  bool has_room() const override { return true; }
};

void send(host::ModuleSlot& slot, const std::vector<std::string>& command, api::ConnectionId connection = 1) {
  Discard out;
  const std::string bytes = test::RespClient::encode(command);
  auto consumed = slot.stream_data(connection, bytes, out);
  REQUIRE(consumed);
  REQUIRE(consumed.value() == bytes.size());
}

/// A state as comparable text: key -> type and members (sorted), and the
/// deadlines; the clients' names.
struct Contents {
  std::map<std::string, std::string> keys;
  std::map<std::string, std::int64_t> deadlines;
  std::map<api::ConnectionId, std::string> clients;
  friend bool operator==(const Contents&, const Contents&) = default;
};

std::string describe(const kv::Value& value) {
  std::string out = std::to_string(static_cast<int>(value.type)) + ":";
  if (value.type == kv::Type::String) return out + value.str;
  std::vector<std::string> members;
  for (const auto& m : value.coll->list) members.push_back(m);  // order kept
  if (value.type != kv::Type::List) {
    for (const auto& m : value.coll->set) members.push_back(m);
    for (const auto& [f, v] : value.coll->hash) members.push_back(f + "=" + v);
    std::sort(members.begin(), members.end());
  }
  for (const auto& m : members) out += m + ",";
  return out;
}

template <class State>
Contents contents_of(const State& state) {
  Contents c;
  for (const auto& [key, value] : state.keys) c.keys[key] = describe(value);
  if constexpr (requires { state.expires; })
    for (const auto& [key, deadline] : state.expires) c.deadlines[key] = deadline;
  for (const auto& [id, client] : state.clients) c.clients[id] = client.name;
  return c;
}

/// The serving instance's state in `schema`, as save_state writes it.
/// Only while `access` holds the module suspended.
Contents saved(host::ModuleSlot::UpgradeAccess& access, api::SchemaVersion schema) {
  host::StringSink sink(1ull << 30);
  REQUIRE(access.save(api::SaveTarget{schema, api::Direction::Same, {}}, sink));
  const std::string bytes = sink.take();
  host::ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  if (schema.value == 1) {
    kv::StateV1 state;
    reader.read(state);
    return contents_of(state);
  }
  kv::StateV2 state;
  reader.read(state);
  return contents_of(state);
}

/// What a transfer did, per kind of part.
struct Moved {
  std::size_t chunks = 0, deltas = 0, rounds = 0;
  std::uint64_t entries = 0;
};

/// Transfers `from`'s state in `schema` to a new instance of `to_image`,
/// as the upgrade does, and swaps it in: chunks, then `rounds` delta rounds
/// (each between calls of `between`), then the final part in the pause.
/// Returns what the old version held at the final part.
Contents transfer(host::ModuleSlot& slot, test::Harness& h, const std::filesystem::path& to_image,
                  api::SchemaVersion schema, api::TransferBudget budget, int rounds, Moved& moved,
                  const std::function<void()>& between = {}) {
  auto access = host::ModuleSlot::UpgradeAccess::try_take(slot);
  REQUIRE(access);
  REQUIRE(access->can_transfer());
  auto image = h.loader.load(to_image, "kv");
  REQUIRE(image);
  auto next = access->make_live(std::move(image.value()));
  REQUIRE(next);
  const api::Migration migration{schema, slot.running().info.version, api::Direction::Same, {}};
  const auto apply = [&](const std::string& bytes, api::TransferPart part) {
    host::ViewSource source(bytes);
    api::StateReader reader(source, bytes.size());
    next.value()->hooks().receive_part(reader, migration, part);
  };
  REQUIRE(access->transfer_begin(api::SaveTarget{schema, api::Direction::Same, {}}));
  for (bool done = false; !done;) {
    host::StringSink sink(1ull << 30);
    auto step = access->transfer_chunk(budget, sink);
    REQUIRE(step);
    done = step->done;
    moved.entries += step->entries;
    ++moved.chunks;
    apply(sink.take(), api::TransferPart::Chunk);
    if (between) between();
  }
  for (int round = 0; round < rounds; ++round, ++moved.rounds) {
    for (bool done = false; !done;) {
      host::StringSink sink(1ull << 30);
      auto step = access->transfer_delta(budget, sink);
      REQUIRE(step);
      done = step->done;
      moved.entries += step->entries;
      ++moved.deltas;
      apply(sink.take(), api::TransferPart::Delta);
      if (between) between();
    }
  }
  REQUIRE(access->suspend(std::chrono::steady_clock::now() + 5s));
  const Contents old = saved(*access, schema);
  host::StringSink sink(1ull << 30);
  REQUIRE(access->transfer_final(sink));
  access->transfer_end();
  apply(sink.take(), api::TransferPart::Final);
  auto replaced = access->swap(std::move(next.value()), host::ModuleSlot::UpgradeAccess::Swap::Upgrade);
  access->resume();
  return old;
}

Contents now_saved(host::ModuleSlot& slot, api::SchemaVersion schema) {
  auto access = host::ModuleSlot::UpgradeAccess::try_take(slot);
  REQUIRE(access);
  REQUIRE(access->suspend(std::chrono::steady_clock::now() + 5s));
  Contents c = saved(*access, schema);
  access->resume();
  return c;
}

/// Every kind of value kv has, `n` keys, some with deadlines (v2).
void fill(host::ModuleSlot& slot, int n, bool expiry) {
  for (int i = 0; i < n; ++i) {
    const std::string k = std::to_string(i);
    switch (i % 4) {
      case 0: send(slot, {"SET", "s" + k, "v" + k}); break;
      case 1: send(slot, {"RPUSH", "l" + k, "a", "b", k}); break;
      case 2: send(slot, {"SADD", "t" + k, "x", k}); break;
      case 3: send(slot, {"HSET", "h" + k, "f", k, "g", "1"}); break;
    }
    if (expiry && i % 10 == 0) send(slot, {"PEXPIRE", (i % 4 == 0 ? "s" : i % 4 == 1 ? "l" : i % 4 == 2 ? "t" : "h") + k, "600000"});
  }
  send(slot, {"CLIENT", "SETNAME", "first"}, 1);
  send(slot, {"CLIENT", "SETNAME", "second"}, 2);
}

}  // namespace

TEST_CASE("kv pre-copy: chunks and the final part give the state a one-shot save_state and load_state give",
          "[kv][transfer]") {
  struct Case {
    unsigned from, to, schema;
  };
  for (const Case c : {Case{1, 2, 1}, Case{2, 1, 1}, Case{2, 2, 2}, Case{2, 3, 2}, Case{1, 1, 1}}) {
    INFO("kv " << c.from << " -> " << c.to << " in schema " << c.schema);
    test::Harness h;
    auto slot = h.start(test::plugin_path("kv", c.from), "kv");
    fill(*slot, 2000, c.from >= 2);
    // One shot, as without pre-copy: the old version saves, the new loads.
    test::Harness one;
    auto reference = one.start(test::plugin_path("kv", c.to), "kv");
    {
      auto access = host::ModuleSlot::UpgradeAccess::try_take(*slot);
      REQUIRE(access->suspend(std::chrono::steady_clock::now() + 5s));
      host::StringSink sink(1ull << 30);
      REQUIRE(access->save(api::SaveTarget{api::SchemaVersion{c.schema}, api::Direction::Same, {}}, sink));
      access->resume();
      const std::string bytes = sink.take();
      auto to = host::ModuleSlot::UpgradeAccess::try_take(*reference);
      REQUIRE(to->suspend(std::chrono::steady_clock::now() + 5s));
      REQUIRE_FALSE(host::load_state_from_bytes(to->live().hooks(), bytes,
                                                api::Migration{api::SchemaVersion{c.schema}, api::ModuleVersion{c.from},
                                                               api::Direction::Same, {}}));
      to->resume();
    }
    Moved moved;
    (void)transfer(*slot, h, test::plugin_path("kv", c.to), api::SchemaVersion{c.schema},
                   api::TransferBudget{4096, 1000000}, 1, moved);
    CHECK(moved.chunks > 10);  // a small budget: many parts
    const api::SchemaVersion own{c.to >= 2 ? 2u : 1u};
    CHECK(now_saved(*slot, own) == now_saved(*reference, own));
    CHECK(now_saved(*slot, own).keys.size() == 2000);
  }
}

TEST_CASE("kv pre-copy under a writer: every key ends as the old version had it at the final part", "[kv][transfer]") {
  for (const unsigned to : {2u, 1u}) {
    INFO("kv 2 -> " << to);
    test::Harness h;
    auto slot = h.start(test::plugin_path("kv", 2), "kv");
    fill(*slot, 3000, true);
    std::mt19937 random(to);
    int writes = 0;
    bool flushed = false;
    // Between parts, as a client would: writes of every kind kv has,
    // deletions, deadlines set and dropped, a key set to expire at once,
    // and one FLUSHDB while the chunks are still being taken.
    const auto write_some = [&] {
      for (int n = 0; n < 25; ++n, ++writes) {
        const std::string k = std::to_string(random() % 4000);
        switch (random() % 12) {
          case 0: send(*slot, {"SET", "s" + k, "w" + std::to_string(writes)}); break;
          case 1: send(*slot, {"DEL", "s" + k, "l" + k}); break;
          case 2: send(*slot, {"INCR", "n" + k}); break;
          case 3: send(*slot, {"APPEND", "s" + k, "+"}); break;
          case 4: send(*slot, {"LPUSH", "l" + k, "p"}); break;
          case 5: send(*slot, {"LPOP", "l" + k}); break;
          case 6: send(*slot, {"SADD", "t" + k, "y"}); break;
          case 7: send(*slot, {"SREM", "t" + k, "x", k}); break;
          case 8: send(*slot, {"HSET", "h" + k, "f", "w"}); break;
          case 9: send(*slot, {"HDEL", "h" + k, "f", "g"}); break;
          case 10: send(*slot, {"PEXPIRE", "s" + k, "600000"}); break;
          case 11: send(*slot, {"PERSIST", "s" + k}); break;
        }
      }
      if (writes == 500) {
        send(*slot, {"FLUSHDB"});
        flushed = true;
      }
      if (writes % 250 == 0) {  // a key that expires, removed by the next look at it
        send(*slot, {"SET", "brief", "x", "PX", "1"});
        const auto set = std::chrono::system_clock::now();
        REQUIRE(test::wait_until([&] { return std::chrono::system_clock::now() - set > 2ms; }));
        send(*slot, {"GET", "brief"});
      }
    };
    Moved moved;
    const Contents old = transfer(*slot, h, test::plugin_path("kv", to), api::SchemaVersion{to},
                                  api::TransferBudget{2048, 1000000}, 3, moved, write_some);
    CHECK(moved.deltas >= 3);
    CHECK(flushed);
    CHECK(writes >= 600);
    const Contents now = now_saved(*slot, api::SchemaVersion{to});
    CHECK(now.clients == old.clients);
    CHECK(old.keys.count("brief") == 0);
    CHECK(now.keys.size() == old.keys.size());
    CHECK(now == old);
  }
}

TEST_CASE("kv pre-copy: a table that grows tenfold during the chunks is not rehashed under them, nothing missed",
          "[kv][transfer]") {
  test::Harness h;
  auto slot = h.start(test::plugin_path("kv", 2), "kv");
  fill(*slot, 100, true);
  int added = 0;
  Moved moved;
  const Contents old = transfer(*slot, h, test::plugin_path("kv", 2), api::SchemaVersion{2},
                                api::TransferBudget{256, 1000000}, 1, moved, [&] {
                                  for (int n = 0; n < 40; ++n, ++added) send(*slot, {"SET", "new" + std::to_string(added), "x"});
                                });
  CHECK(added > 1000);  // the table grew many times over
  CHECK(now_saved(*slot, api::SchemaVersion{2}) == old);
  CHECK(moved.chunks < 200);  // one pass: never started over
}

TEST_CASE("kv's key table keeps its buckets while the load factor is raised, and rehashes at the next insert once "
          "it is put back (what a transfer relies on)",
          "[kv][transfer]") {
  kv::Keyspace keys;
  for (int i = 0; i < 1000; ++i) keys.emplace("k" + std::to_string(i), kv::Value{});
  const float own = keys.max_load_factor();
  const std::size_t buckets = keys.bucket_count();
  keys.max_load_factor(kv::TransferSender::kNoRehash);
  CHECK(keys.bucket_count() == buckets);  // setting it moved nothing
  for (int i = 1000; i < 20000; ++i) keys.emplace("k" + std::to_string(i), kv::Value{});
  CHECK(keys.bucket_count() == buckets);  // grew twentyfold, not rehashed
  keys.max_load_factor(own);
  CHECK(keys.bucket_count() == buckets);
  keys.emplace("one more", kv::Value{});
  CHECK(keys.bucket_count() >= keys.size());  // back to its own load factor
}

TEST_CASE("kv snapshot as a file of pre-copy parts: written while kv serves, it reads back the state a one-shot "
          "save_state gives, with no second instance",
          "[kv][transfer][snapshot]") {
  test::Harness h;
  auto slot = h.start(test::plugin_path("kv", 2), "kv");
  fill(*slot, 2000, true);
  const host::SnapshotStore store(h.dir.path() / "snapshots", 1ull << 30);
  auto blob = slot->save_state(5s, host::kNoDeadline, {}, host::ModuleSlot::Yield::Never,
                               [&](const host::StateBlob& about) { return store.open_parts(about); });
  REQUIRE(blob);
  CHECK(blob->encoding == host::StateEncoding::Parts);
  CHECK(blob->bytes.empty());  // written to the file as the parts came, never held here

  auto file = store.load("kv");
  REQUIRE(file);
  REQUIRE(file.value());
  const host::StateBlob& written = *file.value();
  CHECK(written.encoding == host::StateEncoding::Parts);
  CHECK(written.version.value == 2);
  CHECK(written.bytes.size() == slot->stats().state_bytes.value_or(0));
  const std::string text = test::read_file(store.path_of("kv"));
  CHECK(text.find('\n') == host::PartFile::kHeaderRoom - 1);  // the header filled the room kept for it
  CHECK(text.substr(0, text.find('\n')).find(R"("encoding":"parts")") != std::string::npos);

  auto restored = h.start(test::plugin_path("kv", 2), "kv");
  const auto report = host::restore(*restored, h.loader, written);
  INFO(report.summary());
  REQUIRE(report.outcome == host::Outcome::Succeeded);
  const api::SchemaVersion schema{2};
  CHECK(now_saved(*restored, schema) == now_saved(*slot, schema));
  CHECK(now_saved(*restored, schema).keys.size() == 2000);
}

TEST_CASE("a state of pre-copy parts given to a version without pre-copy is refused with the reason",
          "[transfer][snapshot]") {
  test::Harness h;
  auto counter = h.start(test::plugin_path("counter", 1), "counter");
  auto access = host::ModuleSlot::UpgradeAccess::try_take(*counter);
  REQUIRE(access);
  const host::StateBlob parts{"counter", api::ModuleVersion{1}, api::SchemaVersion{1},
                              host::part_frame(api::TransferPart::Final, 0), {}, host::StateEncoding::Parts};
  const auto failure = host::load_state_blob(access->live().hooks(), parts,
                                             api::Migration{api::SchemaVersion{1}, api::ModuleVersion{1}, api::Direction::Same, {}});
  REQUIRE(failure);
  CHECK(*failure == "the state is pre-copy parts (written by counter 1 while it served), and this version does not "
                    "implement receive_part (Feature::Transfer) to read them");
}
