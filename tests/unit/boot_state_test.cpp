// Kept states: the state an upgrade keeps in the schema it leaves, one file
// per module and schema in the snapshot directory (SnapshotStore), and
// ModuleTable's before-migrating hook, through which the release handler
// keeps it before every upgrade to another schema.
#include <fstream>

#include <catch2/catch.hpp>

#include "molt/host/runtime/module_table.hpp"
#include "molt/host/state/snapshot_store.hpp"
#include "test_support.hpp"

namespace molt {
namespace {

namespace fs = std::filesystem;
using test::plugin_path;
using test::probe_path;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
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

}  // namespace molt
