// Pre-copy in the upgrade transaction and in snapshots (slot/precopy.hpp),
// with kv's real images: a writer keeps writing on its own thread through
// the slot, as clients do, while the state moves; every write it had
// acknowledged is then in the new version, with its last value.
#include <atomic>
#include <map>
#include <thread>

#include <catch2/catch.hpp>

#include "molt/host/slot/upgrade_access.hpp"
#include "molt/host/upgrade/progress.hpp"
#include "molt/host/upgrade/transaction.hpp"
#include "resp_client.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;

namespace {

struct Capture final : api::StreamOutput {
  std::string bytes;
  void write(std::string_view data) override { bytes.append(data); }
  void close_after_write() override {}
  bool has_room() const override { return true; }
};

/// One command on connection `connection`; its reply.
std::string command(host::ModuleSlot& slot, const std::vector<std::string>& args, api::ConnectionId connection = 1) {
  Capture out;
  const std::string bytes = test::RespClient::encode(args);
  auto consumed = slot.stream_data(connection, bytes, out);
  if (!consumed || consumed.value() != bytes.size()) return "(failed)";
  return out.bytes;
}

void fill(host::ModuleSlot& slot, int keys) {
  for (int i = 0; i < keys; ++i) REQUIRE(command(slot, {"SET", "k" + std::to_string(i), "v0"}) == "+OK\r\n");
}

/// Writes until stopped: SET and DEL over 5000 keys, on its own connection;
/// remembers what each key holds after the last acknowledged write.
class Writer {
 public:
  explicit Writer(host::ModuleSlot& slot) : slot_(slot) {
    thread_ = std::thread([this] {
      for (std::uint64_t n = 1; !stop_; ++n) {
        const std::string key = "k" + std::to_string((n * 7919) % 5000);
        if (n % 9 == 0) {
          if (command(slot_, {"DEL", key}, 2).starts_with(":")) last_[key] = std::nullopt;
        } else {
          const std::string value = "v" + std::to_string(n);
          if (command(slot_, {"SET", key, value}, 2) == "+OK\r\n") last_[key] = value;
        }
        writes_ = n;
      }
    });
  }
  ~Writer() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] std::uint64_t writes() const { return writes_; }
  /// Every key written: GET on the slot (the new version) gives its last value.
  void check(host::ModuleSlot& slot) const {
    for (const auto& [key, value] : last_) {
      INFO(key);
      CHECK(command(slot, {"GET", key}) ==
            (value ? "$" + std::to_string(value->size()) + "\r\n" + *value + "\r\n" : std::string("$-1\r\n")));
    }
  }

 private:
  host::ModuleSlot& slot_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> writes_{0};
  std::map<std::string, std::optional<std::string>> last_;
};

host::UpgradeOptions with_precopy(std::chrono::milliseconds pause_target = 10ms) {
  host::UpgradeOptions options;
  options.precopy.budget = api::TransferBudget{16u << 10, 200000};  // small parts: many of them
  options.precopy.pause_target = pause_target;
  return options;
}

}  // namespace

TEST_CASE("a migrating upgrade pre-copies kv's state while a writer writes: nothing acknowledged is lost, up and down",
          "[precopy][transaction]") {
  test::Harness h;
  auto slot = h.start(test::plugin_path("kv", 1), "kv");
  fill(*slot, 20000);
  const auto options = with_precopy();
  for (const unsigned to : {2u, 1u}) {
    INFO("to v" << to);
    Writer writer(*slot);
    REQUIRE(test::wait_until([&] { return writer.writes() > 200; }));
    const auto report = host::upgrade(*slot, h.loader, test::plugin_path("kv", to), {}, options);
    REQUIRE(report.outcome == host::Outcome::Succeeded);
    const std::uint64_t during = writer.writes();
    writer.stop();
    CHECK(slot->running().info.version.value == to);
    REQUIRE(report.precopy);
    const auto& precopy = *report.precopy;
    CHECK(precopy.rounds.size() >= 2);           // the whole state, then what changed
    CHECK(precopy.rounds[0].parts > 10);        // in parts, each a call of its own
    CHECK(precopy.rounds[0].entries >= 15000);  // 20000 keys, less what the writer deleted
    CHECK(report.phases.precopy > report.pause);
    CHECK(during > 200);
    writer.check(*slot);
    CHECK(command(*slot, {"DBSIZE"}) != ":0\r\n");
  }
}

TEST_CASE("pre-copy that does not converge: moved in the pause by default, or refused, leaving the old version as it was",
          "[precopy][transaction]") {
  test::Harness h;
  auto slot = h.start(test::plugin_path("kv", 1), "kv");
  fill(*slot, 5000);
  auto options = with_precopy(0ms);  // no round is ever short enough
  options.precopy.max_rounds = 2;
  // Writes between every two parts, on the upgrade's own thread (its
  // progress reports come between parts): every round has changes.
  std::map<std::string, std::string> last;
  int written = 0;
  const host::ProgressScope writes([&](const host::UpgradeProgress& p) {
    if (p.phase != "precopy") return;
    for (int n = 0; n < 3; ++n, ++written) {
      const std::string key = "k" + std::to_string(written % 5000), value = "w" + std::to_string(written);
      if (command(*slot, {"SET", key, value}, 2) == "+OK\r\n") last[key] = value;
    }
  });

  options.precopy.refuse_unconverged = true;
  const auto refused = host::upgrade(*slot, h.loader, test::plugin_path("kv", 2), {}, options);
  CHECK(refused.outcome == host::Outcome::Refused);
  REQUIRE(refused.error);
  CHECK_THAT(refused.error->reason, Catch::Contains("pre-copy did not converge: 2 rounds (host.precopy_max_rounds)") &&
                                        Catch::Contains("(host.precopy_fallback = \"refuse\")"));
  CHECK(slot->running().info.version.value == 1);

  options.precopy.refuse_unconverged = false;
  const auto moved = host::upgrade(*slot, h.loader, test::plugin_path("kv", 2), {}, options);
  REQUIRE(moved.outcome == host::Outcome::Succeeded);
  CHECK(slot->running().info.version.value == 2);
  REQUIRE(moved.precopy);
  CHECK_THAT(moved.precopy->ended, Catch::Contains("; the rest moved in the pause"));
  CHECK(moved.precopy->final.entries > 0);
  CHECK(written > 30);
  for (const auto& [key, value] : last) {
    INFO(key);
    CHECK(command(*slot, {"GET", key}) == "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n");
  }
}

TEST_CASE("a snapshot of a module with pre-copy pauses it only for the last changes, and holds its state at that instant",
          "[precopy][snapshot]") {
  test::Harness h;
  auto slot = h.start(test::plugin_path("kv", 2), "kv");
  fill(*slot, 20000);
  Writer writer(*slot);
  REQUIRE(test::wait_until([&] { return writer.writes() > 200; }));
  auto blob = slot->save_state(5s);
  writer.stop();
  REQUIRE(blob);
  // Taken while the writer wrote: a state the module had, which restores.
  auto restored = h.start(test::plugin_path("kv", 2), "kv");
  const auto report = host::restore(*restored, h.loader, blob.value());
  REQUIRE(report.outcome == host::Outcome::Succeeded);
  CHECK(command(*restored, {"DBSIZE"}) != ":0\r\n");
  // With the writer stopped, a snapshot holds every write it acknowledged.
  auto quiet = slot->save_state(5s);
  REQUIRE(quiet);
  auto again = h.start(test::plugin_path("kv", 2), "kv");
  REQUIRE(host::restore(*again, h.loader, quiet.value()).outcome == host::Outcome::Succeeded);
  writer.check(*again);
}

TEST_CASE("a snapshot moltd takes by itself gives way to an upgrade that waits for the slot, and is whole when nothing "
          "waits",
          "[precopy][snapshot]") {
  test::Harness h;
  auto slot = h.start(test::plugin_path("kv", 2), "kv");
  fill(*slot, 300000);  // a pre-copy of many parts: the upgrade below comes in the middle of it
  const std::string dbsize = command(*slot, {"DBSIZE"});

  std::optional<host::Result<host::StateBlob>> saved;
  std::atomic<bool> returned{false};
  std::thread snapshot([&] {
    saved.emplace(slot->save_state(5s, 10s, {}, host::ModuleSlot::Yield::ToUpgrades));
    returned = true;
  });
  // Once the snapshot holds the slot, an upgrade asks for it.
  REQUIRE(test::wait_until([&] { return !host::ModuleSlot::UpgradeAccess::try_take(*slot).has_value() || returned; }));
  const auto asked = std::chrono::steady_clock::now();
  auto access = host::ModuleSlot::UpgradeAccess::take_ahead_of_snapshots(*slot, asked + 5s);
  const auto waited = std::chrono::steady_clock::now() - asked;
  snapshot.join();
  REQUIRE(access);
  REQUIRE(saved);
  REQUIRE_FALSE(saved->ok());
  CHECK(saved->error().reason == host::kGaveWayToUpgrade);
  CHECK(saved->error().to_string() == "kv v2: snapshot: " + std::string(host::kGaveWayToUpgrade));
  CHECK(waited < 1s);  // one part at most, not the whole pre-copy
  access.reset();

  // The module served on, untouched; a snapshot with nothing waiting is whole.
  CHECK(command(*slot, {"DBSIZE"}) == dbsize);
  auto whole = slot->save_state(5s, 10s, {}, host::ModuleSlot::Yield::ToUpgrades);
  REQUIRE(whole);
  auto restored = h.start(test::plugin_path("kv", 2), "kv");
  REQUIRE(host::restore(*restored, h.loader, whole.value()).outcome == host::Outcome::Succeeded);
  CHECK(command(*restored, {"DBSIZE"}) == dbsize);
  CHECK(command(*restored, {"GET", "k299999"}) == "$2\r\nv0\r\n");
}
