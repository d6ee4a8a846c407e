// What a boot starts each module with, over a real module table, real
// images and a real run directory, without moltd and without sockets: the
// kept states an upgrade leaves behind (SnapshotStore, ModuleTable's
// before-migrating hook), and the release handler booting the last
// permanent release from them. A "restart" is a second Host on the same
// directory, after the first one is gone.
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "molt/host/release/release_handler.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "molt/host/state/snapshot_store.hpp"
#include "test_support.hpp"

namespace molt {
namespace {

namespace fs = std::filesystem;
using test::call_ok;
using test::plugin_path;
using test::probe_path;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

/// The files in `dir` whose name starts with `prefix`.
std::vector<fs::path> files_starting(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.path().filename().string().starts_with(prefix)) found.push_back(entry.path());
  return found;
}

/// Whether this process maps a copy of `module`'s image `version` (the
/// loader names its copies <module>-<version>-<sha256 prefix>.<n>.so).
bool maps_image_of(const std::string& module, unsigned version) {
  const std::string maps = read_text("/proc/self/maps");
  return maps.find("/" + module + "-" + std::to_string(version) + "-") != std::string::npos;
}

/// One moltd's worth of host on `dir` (its run directory), every logger
/// writing into `log`.
struct Host {
  Host(const fs::path& dir, std::ostringstream& log, std::set<std::string, std::less<>> allow_empty = {})
      : sink(std::make_shared<spdlog::sinks::ostream_sink_mt>(log)),
        loader(host::LoaderOptions{dir / "images"}),
        table(loader, host::TableOptions{dir, {}, [this](const std::string& name) { return logger(name); }, 0}),
        snapshots(dir / "snapshots", 1u << 20),
        releases(table, listeners, snapshots, options(dir, std::move(allow_empty)), logger("moltd")) {
    sink->set_pattern("[%n] %l %v");
  }
  ~Host() { (void)releases.shut_down(); }

  static host::ReleaseOptions options(const fs::path& dir, std::set<std::string, std::less<>> allow_empty) {
    host::ReleaseOptions o;
    o.record_path = dir / "releases.json";
    o.plugin_dir = dir;
    o.probation = std::chrono::seconds(600);  // what an upgrade installs stays on probation
    o.allow_empty = std::move(allow_empty);
    return o;
  }
  std::shared_ptr<spdlog::logger> logger(const std::string& name) {
    return std::make_shared<spdlog::logger>(name, sink);
  }
  /// Boots `modules` (name, v1 image) as the configuration gives them.
  void boot(const std::vector<std::pair<std::string, fs::path>>& modules) {
    host::HostConfig config;
    for (const auto& [name, file] : modules) config.modules.push_back(host::ModuleConfig{name, file, {}, {}});
    REQUIRE(releases.boot(config));
  }
  unsigned version_of(const std::string& module) const {
    const auto slot = table.find(module);
    return slot ? slot->running().info.version.value : 0;
  }
  int total() { return nlohmann::json::parse(call_ok(*table.find("counter"), "GET", "/counter"))["total"].get<int>(); }

  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink;
  host::Loader loader;
  host::ModuleTable table;
  host::SnapshotStore snapshots;
  host::NoListeners listeners;
  host::ReleaseHandler releases;
};

const std::vector<std::pair<std::string, fs::path>> kCounterAndProbe{{"counter", plugin_path("counter", 1)},
                                                                      {"probe", probe_path(1)}};

/// Boots counter v1 and probe v1 on `dir`, counts 3, upgrades counter to
/// v2 (on probation: the state in schema 1 is kept), counts 2 more on v2,
/// and stops (snapshots in schema 2).
void count_then_upgrade(const fs::path& dir) {
  std::ostringstream log;
  Host h(dir, log);
  h.boot(kCounterAndProbe);
  for (int i = 0; i < 3; ++i) call_ok(*h.table.find("counter"), "POST", "/counter/incr");
  call_ok(*h.table.find("probe"), "POST", "/probe/add?item=kept");
  const auto reloaded = h.releases.reload("counter", plugin_path("counter", 2), {});
  REQUIRE(reloaded);
  REQUIRE(reloaded->outcome == host::Outcome::Succeeded);
  CHECK_THAT(log.str(), Catch::Contains("[counter] info kept counter's state in schema 1 before the upgrade to v2 "
                                        "(schema 2): ") &&
                            Catch::Contains(" bytes in ") && Catch::Contains("counter.schema-1.molt"));
  CHECK(h.releases.view().probation_left);
  for (int i = 0; i < 2; ++i) call_ok(*h.table.find("counter"), "POST", "/counter/incr");
  CHECK(h.total() == 5);
}

}  // namespace

TEST_CASE("kept states: one file per schema, read back only as the module's and that schema's", "[boot][snapshot]") {
  test::TempDir dir;
  host::SnapshotStore store(dir.path(), 1 << 20);
  CHECK(store.path_of_kept("kv", api::SchemaVersion{1}) == dir.path() / "kv.schema-1.molt");
  auto none = store.load_kept("kv", api::SchemaVersion{1});
  REQUIRE(none);
  CHECK_FALSE(none.value());

  const host::StateBlob blob{"kv", api::ModuleVersion{1}, api::SchemaVersion{1}, "state bytes", ""};
  REQUIRE(store.save_kept(blob));
  REQUIRE(store.save(blob));
  auto kept = store.load_kept("kv", api::SchemaVersion{1});
  REQUIRE(kept);
  REQUIRE(kept.value());
  CHECK(kept.value()->blob.bytes == "state bytes");
  CHECK(kept.value()->at > std::chrono::system_clock::now() - std::chrono::minutes(1));
  CHECK(store.modules() == std::vector<std::string>{"kv"});  // a kept state is not a module

  SECTION("a kept state larger than max_state_bytes is not written") {
    const host::StateBlob big{"kv", api::ModuleVersion{2}, api::SchemaVersion{2}, std::string((1 << 20) + 1, 'x'), ""};
    CHECK_FALSE(store.save_kept(big));
    CHECK_FALSE(fs::exists(store.path_of_kept("kv", api::SchemaVersion{2})));
  }
  SECTION("a file under another schema's name is refused") {
    fs::copy_file(store.path_of_kept("kv", api::SchemaVersion{1}), store.path_of_kept("kv", api::SchemaVersion{2}));
    auto wrong = store.load_kept("kv", api::SchemaVersion{2});
    REQUIRE_FALSE(wrong);
    CHECK_THAT(wrong.error().to_string(), Catch::Contains("holds a state in schema 1, not 2"));
  }
  SECTION("moved aside, it is no kept state any more") {
    auto moved = store.move_kept_aside("kv", api::SchemaVersion{1}, "stale");
    REQUIRE(moved);
    REQUIRE(moved.value());
    CHECK(moved.value()->filename().string().starts_with("kv.schema-1.molt.stale-"));
    CHECK_FALSE(store.load_kept("kv", api::SchemaVersion{1}).value());
  }
  SECTION("replace keeps the old snapshot aside, byte for byte, and writes the new one") {
    const std::string before = read_text(store.path_of("kv"));
    const host::StateBlob next{"kv", api::ModuleVersion{1}, api::SchemaVersion{1}, "newer bytes", ""};
    auto replaced = store.replace(next, "unbooted");
    REQUIRE(replaced);
    REQUIRE(replaced.value());
    CHECK(replaced.value()->filename().string().starts_with("kv.molt.unbooted-"));
    CHECK(read_text(*replaced.value()) == before);
    CHECK(store.load("kv").value()->bytes == "newer bytes");
  }
}

TEST_CASE("the before-migrating hook runs for a step to another schema only, before the upgrade", "[boot][upgrade]") {
  test::TempDir dir;
  host::Loader loader{host::LoaderOptions{dir.path() / "images"}};
  host::ModuleTable table{loader, host::TableOptions{dir.path(), {}, test::test_logger, 0}};
  REQUIRE(table.start(host::ModuleConfig{"counter", plugin_path("counter", 1), {}, {}}));
  REQUIRE(table.start(host::ModuleConfig{"probe", probe_path(1), {}, {}}));
  std::vector<std::string> seen;
  table.set_before_migrating([&](host::ModuleSlot& slot, const host::ImageInfo& to) {
    seen.push_back(slot.name() + " v" + std::to_string(slot.running().info.version.value) + " schema " +
                   std::to_string(slot.running().info.schema.value) + " -> schema " + std::to_string(to.schema.value));
  });
  REQUIRE(table.reload("probe", probe_path(2))->outcome == host::Outcome::Succeeded);  // probe 1 and 2 share schema 1
  CHECK(seen.empty());
  REQUIRE(table.reload("counter", plugin_path("counter", 2))->outcome == host::Outcome::Succeeded);
  CHECK(seen == std::vector<std::string>{"counter v1 schema 1 -> schema 2"});  // called while v1 still ran
  REQUIRE(table.rollback("counter")->outcome == host::Outcome::Succeeded);
  CHECK(seen.back() == "counter v2 schema 2 -> schema 1");
  (void)table.reload("counter", dir.path() / "no-such.so");  // refused by the transaction; no hook
  CHECK(seen.size() == 2);
}

TEST_CASE("a restart boots the permanent version from the state kept in its schema, never loading the newer image",
          "[boot][restart]") {
  test::TempDir dir;
  count_then_upgrade(dir.path());
  const fs::path snapshots = dir.path() / "snapshots";
  REQUIRE(host::SnapshotStore(snapshots, 1u << 20).load("counter").value()->schema.value == 2);

  std::ostringstream log;
  Host h(dir.path(), log);
  h.boot(kCounterAndProbe);
  CHECK(h.version_of("counter") == 1);
  CHECK(h.total() == 3);  // the two counted on v2 are not in it, and the log says so
  CHECK(call_ok(*h.table.find("probe"), "GET", "/probe").find("kept") != std::string::npos);
  CHECK_FALSE(maps_image_of("counter", 2));
  CHECK(h.loader.loaded_images() == 2);
  CHECK(h.releases.not_started().empty());
  CHECK_FALSE(h.table.find("counter")->previous());  // nothing to roll back to

  const auto unbooted = files_starting(snapshots, "counter.molt.unbooted-");
  REQUIRE(unbooted.size() == 1);
  const std::string text = log.str();
  INFO(text);
  CHECK_THAT(text, Catch::Contains("[moltd] warning counter: booting v1 from the state kept in schema 1 at ") &&
                       Catch::Contains(" UTC: writes to counter since then are not in it; the newer snapshot (v2, "
                                       "schema 2) is kept at " + unbooted[0].string() +
                                       " for moltctl restore once a version that reads it runs"));
  CHECK(test::occurrences(text, "booting v1 from the state kept") == 1);
  // The kept state is now the snapshot: a crash now boots the same.
  CHECK(host::SnapshotStore(snapshots, 1u << 20).load("counter").value()->schema.value == 1);
}

TEST_CASE("with no snapshot but a state kept in its schema, a restart boots from the kept state, not empty",
          "[boot][restart]") {
  // moltd kept counter's state in schema 1, then stopped before the
  // upgrade's first snapshot was written (a crash in the new code's
  // start, a save_state that never returned): no counter.molt.
  test::TempDir dir;
  count_then_upgrade(dir.path());
  const fs::path snapshots = dir.path() / "snapshots";
  REQUIRE(fs::remove(snapshots / "counter.molt"));

  std::ostringstream log;
  Host h(dir.path(), log);
  h.boot(kCounterAndProbe);
  CHECK(h.version_of("counter") == 1);
  CHECK(h.total() == 3);
  CHECK(h.releases.not_started().empty());
  const std::string text = log.str();
  INFO(text);
  CHECK_THAT(text, Catch::Contains("[moltd] warning counter: booting v1 from the state kept in schema 1 at ") &&
                       Catch::Contains(" UTC: writes to counter since then are not in it; no snapshot was written "
                                       "after it"));
  CHECK_THAT(text, !Catch::Contains("it never saved one"));
  // The kept state is now the snapshot; nothing was set aside.
  CHECK(host::SnapshotStore(snapshots, 1u << 20).load("counter").value()->schema.value == 1);
  CHECK(files_starting(snapshots, "counter.molt.").empty());
}

TEST_CASE("a restart with state no booted version can read and none kept does not start that module, restore starts it",
          "[boot][restart]") {
  test::TempDir dir;
  count_then_upgrade(dir.path());
  const fs::path snapshots = dir.path() / "snapshots";
  const fs::path archive = dir.path() / "counter-v1.molt";  // a state v1 reads: the kept one, saved by the operator
  fs::rename(snapshots / "counter.schema-1.molt", archive);

  std::ostringstream log;
  {
    Host h(dir.path(), log);
    h.boot(kCounterAndProbe);
    CHECK_FALSE(h.table.find("counter"));
    CHECK(h.version_of("probe") == 1);  // the others start
    const std::string reason =
        "no state v1 can read (the snapshot was written by v2 in schema 2) and none kept in schema 1; restore one "
        "with 'moltctl restore counter FILE', or start moltd with --allow-empty counter to start it with its initial "
        "state";
    REQUIRE(h.releases.not_started().size() == 1);
    CHECK(h.releases.not_started()[0].module == "counter");
    CHECK(h.releases.not_started()[0].reason == reason);
    CHECK_THAT(log.str(), Catch::Contains("[moltd] error counter: not started: " + reason));
    CHECK_FALSE(maps_image_of("counter", 2));
    CHECK(fs::exists(snapshots / "counter.molt"));  // where it was: the next boot refuses it again
    CHECK(h.releases.summary().starts_with("serving 1 module: probe v1"));

    // v1 cannot read the snapshot v2 wrote: refused, still not started.
    const auto newer = h.releases.restore("counter", snapshots / "counter.molt");
    REQUIRE(newer);
    CHECK(newer->outcome != host::Outcome::Succeeded);
    CHECK_FALSE(h.table.find("counter"));
    CHECK(h.releases.not_started().size() == 1);

    const auto restored = h.releases.restore("counter", archive);
    REQUIRE(restored);
    CHECK(restored->outcome == host::Outcome::Succeeded);
    CHECK(h.version_of("counter") == 1);
    CHECK(h.total() == 3);
    CHECK(h.releases.not_started().empty());
    CHECK(files_starting(snapshots, "counter.molt.unbooted-").size() == 1);  // the one it could not boot from
    CHECK(host::SnapshotStore(snapshots, 1u << 20).load("counter").value()->schema.value == 1);
  }
  std::ostringstream again;
  Host h(dir.path(), again);  // the restored state is the snapshot now
  h.boot(kCounterAndProbe);
  CHECK(h.total() == 3);
}

TEST_CASE("moltd --allow-empty starts such a module with its initial state, says so, and keeps the snapshot aside",
          "[boot][restart]") {
  test::TempDir dir;
  count_then_upgrade(dir.path());
  const fs::path snapshots = dir.path() / "snapshots";
  fs::remove(snapshots / "counter.schema-1.molt");
  std::ostringstream log;
  Host h(dir.path(), log, {"counter"});
  h.boot(kCounterAndProbe);
  CHECK(h.total() == 0);
  CHECK(h.releases.not_started().empty());
  const auto aside = files_starting(snapshots, "counter.molt.unbooted-");
  REQUIRE(aside.size() == 1);
  CHECK_THAT(log.str(), Catch::Contains("[moltd] warning counter: started with its initial state (--allow-empty "
                                        "counter): no state v1 can read (the snapshot was written by v2 in schema 2) "
                                        "and none kept in schema 1; the snapshot is kept at " + aside[0].string()));
}

TEST_CASE("a corrupt snapshot and no kept state: the module is not started, not started empty", "[boot][restart]") {
  test::TempDir dir;
  {
    std::ostringstream log;
    Host h(dir.path(), log);
    h.boot(kCounterAndProbe);
    call_ok(*h.table.find("counter"), "POST", "/counter/incr");
  }
  const fs::path snapshot = dir.path() / "snapshots" / "counter.molt";
  std::string bytes = read_text(snapshot);
  bytes[bytes.size() - 3] ^= 0x20;
  std::ofstream(snapshot, std::ios::binary | std::ios::trunc) << bytes;

  std::ostringstream log;
  Host h(dir.path(), log);
  h.boot(kCounterAndProbe);
  CHECK_FALSE(h.table.find("counter"));
  REQUIRE(h.releases.not_started().size() == 1);
  const std::string reason = h.releases.not_started()[0].reason;
  CHECK_THAT(reason, Catch::StartsWith("no state v1 can read (counter (" + snapshot.string() + "): snapshot: ") &&
                         Catch::EndsWith(") and none kept in schema 1; restore one with 'moltctl restore counter "
                                         "FILE', or start moltd with --allow-empty counter to start it with its "
                                         "initial state"));
  CHECK(read_text(snapshot) == bytes);  // untouched
}

TEST_CASE("a module that never saved a state starts with its initial state, logged at info", "[boot]") {
  test::TempDir dir;
  std::ostringstream log;
  Host h(dir.path(), log);
  h.boot(kCounterAndProbe);
  CHECK(h.total() == 0);
  CHECK_THAT(log.str(), Catch::Contains("[counter] info no snapshot in ") &&
                            Catch::Contains("starts with its initial state (it never saved one)"));
}

}  // namespace molt
