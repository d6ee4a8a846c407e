// The release transaction over a real module table and real images, without
// moltd and without sockets: listeners are a fake that records what the
// release asked of it.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "molt/host/runtime/module_table.hpp"
#include "molt/host/state/snapshot_store.hpp"
#include "molt/host/upgrade/release_transaction.hpp"
#include "test_support.hpp"

namespace molt {
namespace {

using test::call_ok;
using test::plugin_path;
using test::probe_path;

/// Records which modules listen; refuses to listen when told to.
class FakeListeners final : public host::ModuleListeners {
 public:
  host::Result<std::vector<host::Endpoint>> listen_module(const std::vector<host::Endpoint>& endpoints,
                                                    std::shared_ptr<host::ModuleSlot> slot) override {
    if (refuse) return host::Error{slot->name(), {}, {}, host::Phase::Start, "address in use (fake)"};
    open.insert(slot->name());
    return endpoints;
  }
  void close_module(std::string_view module) override { open.erase(std::string(module)); }

  bool refuse = false;
  std::set<std::string> open;
};

struct Fixture {
  test::TempDir dir;
  host::Loader loader{host::LoaderOptions{dir.path() / "images"}};
  host::ModuleTable table{loader, host::TableOptions{dir.path(), {}, test::test_logger, 0}};
  host::SnapshotStore snapshots{dir.path() / "snapshots", 1u << 20};
  FakeListeners listeners;
  std::shared_ptr<spdlog::logger> log = test::test_logger("release");
  host::ReleaseScope scope{table, listeners, snapshots, std::chrono::milliseconds(5000), *log};

  void start(const std::string& module, const std::filesystem::path& file) {
    REQUIRE(table.start(host::ModuleConfig{module, file, {}, {}}));
  }
  std::uint32_t version_of(const std::string& module) const {
    const auto slot = table.find(module);
    return slot ? slot->running().info.version.value : 0;
  }
  std::string total() { return nlohmann::json::parse(call_ok(*table.find("counter"), "GET", "/counter"))["total"].dump(); }
};

host::StepOrigin origin(std::size_t number) { return host::StepOrigin{"r2.toml", number}; }

host::release_step::Upgrade upgrade(std::string module, std::filesystem::path file, std::uint32_t from, std::uint32_t to,
                                    api::Values extra = {}) {
  return host::release_step::Upgrade{origin(1), std::move(module), std::move(file), api::ModuleVersion{from},
                                     api::ModuleVersion{to}, std::nullopt, std::move(extra), {}};
}

}  // namespace

TEST_CASE("a release adds, upgrades and removes modules as one transaction, and the removed module's state is its snapshot", "[release]") {
  Fixture f;
  f.start("counter", plugin_path("counter", 1));
  f.start("probe", probe_path(1));
  for (int i = 0; i < 3; ++i) call_ok(*f.table.find("counter"), "POST", "/counter/incr");
  call_ok(*f.table.find("probe"), "POST", "/probe/add?item=kept");

  host::ReleasePlan plan{"r2", {}};
  plan.steps.push_back(upgrade("counter", plugin_path("counter", 2), 1, 2));
  plan.steps.push_back(host::release_step::Add{origin(2), host::ModuleConfig{"kv", plugin_path("kv", 1), {}, {}},
                                               api::ModuleVersion{1}, std::nullopt, std::nullopt});
  plan.steps.push_back(host::release_step::Remove{origin(3), "probe", api::ModuleVersion{1}});
  const host::ReleaseOutcome outcome = host::run_release(plan, f.scope);

  REQUIRE(outcome.installed);
  CHECK_FALSE(outcome.error);
  REQUIRE(outcome.reports.size() == 1);  // one per upgrade
  CHECK(f.version_of("counter") == 2);
  CHECK(f.total() == "3");
  CHECK(f.version_of("kv") == 1);
  CHECK(f.listeners.open == std::set<std::string>{"kv"});
  CHECK_FALSE(f.table.find("probe"));
  auto kept = f.snapshots.load("probe");
  REQUIRE(kept);
  REQUIRE(kept.value());
  CHECK(kept.value()->bytes.find("kept") != std::string::npos);
}

TEST_CASE("a release whose upgrade fails changes nothing: the added module is gone, the module to remove still serves", "[release]") {
  Fixture f;
  f.start("counter", plugin_path("counter", 1));
  f.start("probe", probe_path(1));
  call_ok(*f.table.find("counter"), "POST", "/counter/incr");

  host::ReleasePlan plan{"r2", {}};
  plan.steps.push_back(host::release_step::Add{origin(1), host::ModuleConfig{"kv", plugin_path("kv", 1), {}, {}},
                                               api::ModuleVersion{1}, std::nullopt, std::nullopt});
  plan.steps.push_back(upgrade("counter", plugin_path("counter", 2), 1, 2));
  plan.steps.push_back(upgrade("probe", probe_path(2), 1, 2, {{"fail", "load"}}));
  plan.steps.push_back(host::release_step::Remove{origin(4), "counter", api::ModuleVersion{1}});
  // counter appears twice: the check refuses that before anything runs
  const auto twice = host::run_release(plan, f.scope);
  REQUIRE(twice.error);
  CHECK(twice.error->to_string() == "r2.toml: script: step 4 (counter): counter appears twice in the release");
  CHECK(f.listeners.open.empty());

  plan.steps.pop_back();
  const host::ReleaseOutcome outcome = host::run_release(plan, f.scope);
  CHECK_FALSE(outcome.installed);
  REQUIRE(outcome.error);
  CHECK(outcome.error->to_string().find("probe refuses to load on purpose") != std::string::npos);
  REQUIRE(outcome.reports.size() == 2);
  CHECK(outcome.reports[0].outcome == host::Outcome::RolledBack);  // counter went back because probe failed
  CHECK(f.version_of("counter") == 1);
  CHECK(f.total() == "1");
  CHECK(f.version_of("probe") == 1);
  CHECK_FALSE(f.table.find("kv"));
  CHECK(f.listeners.open.empty());  // the added module's listeners closed again
}

TEST_CASE("a release whose added module cannot listen is refused before any upgrade runs", "[release]") {
  Fixture f;
  f.start("counter", plugin_path("counter", 1));
  f.listeners.refuse = true;
  host::ReleasePlan plan{"r2", {}};
  plan.steps.push_back(upgrade("counter", plugin_path("counter", 2), 1, 2));
  plan.steps.push_back(host::release_step::Add{origin(2), host::ModuleConfig{"kv", plugin_path("kv", 1), {}, {}},
                                               api::ModuleVersion{1}, std::nullopt, std::nullopt});
  const auto outcome = host::run_release(plan, f.scope);
  CHECK_FALSE(outcome.installed);
  REQUIRE(outcome.error);
  CHECK(outcome.error->to_string() == "kv: start: address in use (fake)");
  CHECK(outcome.reports.empty());  // the transaction never ran
  CHECK(f.version_of("counter") == 1);
  CHECK(f.table.history().list("counter", 10).empty());
}

TEST_CASE("the check phase changes nothing and refuses an image of another version or one that differs from its pin", "[release]") {
  Fixture f;
  f.start("counter", plugin_path("counter", 1));
  host::ReleasePlan plan{"r2", {}};
  plan.steps.push_back(upgrade("counter", plugin_path("counter", 2), 1, 3));
  auto wrong_version = host::check_release(plan, f.table);
  REQUIRE_FALSE(wrong_version);
  CHECK(wrong_version.error().to_string() ==
        "r2.toml: script: step 1 (counter): " + plugin_path("counter", 2).string() + " is v2, the step says to = 3");

  std::get<host::release_step::Upgrade>(plan.steps[0]).to = api::ModuleVersion{2};
  std::get<host::release_step::Upgrade>(plan.steps[0]).sha256 = std::string(64, '0');
  auto pinned = host::check_release(plan, f.table);
  REQUIRE_FALSE(pinned);
  const std::string actual = f.loader.check(plugin_path("counter", 2), "counter")->sha256;
  CHECK(pinned.error().to_string() == "r2.toml: script: step 1 (counter): counter (" + plugin_path("counter", 2).string() +
                                          "): load: differs from the pinned sha256 (expected 000000000000..., found " +
                                          actual.substr(0, 12) + "...)");

  std::get<host::release_step::Upgrade>(plan.steps[0]).sha256.reset();
  REQUIRE(host::check_release(plan, f.table));
  CHECK(std::get<host::release_step::Upgrade>(plan.steps[0]).sha256 == actual);  // the file's, for the transaction
  CHECK(f.version_of("counter") == 1);
  CHECK(f.table.history().list("counter", 10).empty());
}

}  // namespace molt
