#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "molt/host/upgrade/transaction.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;
using host::Outcome;
using host::Phase;
using test::call_ok;
using test::plugin_path;
using test::probe_path;
using test::wait_until;
using Json = nlohmann::json;

namespace {

Json get_json(host::ModuleSlot& slot, std::string_view target) { return Json::parse(call_ok(slot, "GET", target)); }

std::string state_of(host::ModuleSlot& slot) {
  auto blob = slot.save_state(5s);
  if (!blob) FAIL(blob.error().to_string());
  return blob->bytes;
}

std::shared_ptr<host::ModuleSlot> probe_with_items(test::Harness& h, unsigned version = 1) {
  auto slot = h.start(probe_path(version), "probe");
  call_ok(*slot, "POST", "/probe/add?item=alpha");
  call_ok(*slot, "POST", "/probe/add?item=beta");
  return slot;
}

}  // namespace

TEST_CASE("counter upgrades 1 -> 2 and downgrades 2 -> 1 keeping its counts", "[upgrade][counter]") {
  test::Harness h;
  auto slot = h.start(plugin_path("counter", 1), "counter");
  for (int i = 0; i < 3; ++i) call_ok(*slot, "POST", "/counter/incr");

  const auto up = host::upgrade(*slot, h.loader, plugin_path("counter", 2));
  INFO(up.summary());
  REQUIRE(up.outcome == Outcome::Succeeded);
  CHECK(up.from.value == 1);
  CHECK(up.to.value == 2);
  CHECK(up.direction == api::Direction::Up);
  CHECK(up.state_bytes > 0);
  CHECK(up.pause >= up.phases.save + up.phases.migrate);
  CHECK(slot->running().info.version.value == 2);
  CHECK(slot->previous()->info.version.value == 1);
  auto shown = get_json(*slot, "/counter");
  CHECK(shown["version"] == 2);
  CHECK(shown["total"] == 3);
  CHECK(shown["counts"] == Json{{"default", 3}});

  call_ok(*slot, "POST", "/counter/incr?key=apples");
  call_ok(*slot, "POST", "/counter/incr?key=apples");
  const auto down = host::upgrade(*slot, h.loader, plugin_path("counter", 1));
  INFO(down.summary());
  REQUIRE(down.outcome == Outcome::Succeeded);
  CHECK(down.direction == api::Direction::Down);
  CHECK(down.from_schema.value == 2);
  CHECK(down.to_schema.value == 1);
  shown = get_json(*slot, "/counter");
  CHECK(shown["version"] == 1);
  CHECK(shown["total"] == 5);
}

TEST_CASE("extra arguments reach the migration hook", "[upgrade][counter]") {
  test::Harness h;
  auto slot = h.start(plugin_path("counter", 1), "counter");
  call_ok(*slot, "POST", "/counter/incr");
  SECTION("a valid default_key") {
    const auto up = host::upgrade(*slot, h.loader, plugin_path("counter", 2), {{"default_key", "legacy"}});
    REQUIRE(up.outcome == Outcome::Succeeded);
    CHECK(get_json(*slot, "/counter")["counts"] == Json{{"legacy", 1}});
  }
  SECTION("an invalid one is refused by the module and rolled back") {
    const auto up = host::upgrade(*slot, h.loader, plugin_path("counter", 2), {{"default_key", ""}});
    REQUIRE(up.outcome == Outcome::RolledBack);
    CHECK(up.error->phase == Phase::Migrate);
    CHECK_THAT(up.error->to_string(), Catch::Contains("counter v2 (") &&
                                          Catch::Contains("refused: extra argument 'default_key': must be 1 to 200 bytes"));
    CHECK(get_json(*slot, "/counter")["version"] == 1);
  }
}

TEST_CASE("a failing load_state rolls back with byte-identical state", "[upgrade][rollback]") {
  test::Harness h;
  auto slot = probe_with_items(h);
  const std::string before = state_of(*slot);
  const std::string before_image = slot->running().image;

  const auto [fail, reason] = GENERATE(table<std::string, std::string>({
      {"load", "migrate: refused: probe refuses to load on purpose"},
      {"load-crash", "migrate: load_state threw: probe load crashes on purpose"},
      {"non-std", "migrate: load_state threw a non-standard exception"},
      {"short-read", "migrate: load_state returned with"},
  }));
  INFO("fail=" << fail);
  const auto report = host::upgrade(*slot, h.loader, probe_path(2), {{"fail", fail}});
  INFO(report.summary());
  CHECK(report.outcome == Outcome::RolledBack);
  REQUIRE(report.error.has_value());
  CHECK(report.error->phase == Phase::Migrate);
  CHECK_THAT(report.error->to_string(), Catch::Contains("probe v2 (" + probe_path(2).string() + "): " + reason));

  CHECK(state_of(*slot) == before);
  CHECK(slot->running().info.version.value == 1);
  CHECK(slot->running().image == before_image);
  CHECK(get_json(*slot, "/probe") == Json{{"version", 1}, {"items", {"alpha", "beta"}}});
  CHECK_FALSE(slot->previous().has_value());
}

TEST_CASE("a failing save_state leaves the old version serving, unchanged", "[upgrade][rollback]") {
  test::Harness h;
  auto slot = probe_with_items(h);
  const std::string before = state_of(*slot);
  const auto [fail, reason] = GENERATE(table<std::string, std::string>({
      {"save", "save: refused: probe refuses to save on purpose"},
      {"save-crash", "save: save_state threw: probe save crashes on purpose"},
  }));
  const auto report = host::upgrade(*slot, h.loader, probe_path(2), {{"fail", fail}});
  INFO(report.summary());
  CHECK(report.outcome == Outcome::RolledBack);
  CHECK_THAT(report.error->to_string(), Catch::Contains("probe v1 (" + probe_path(1).string() + "): " + reason));
  CHECK(state_of(*slot) == before);
  call_ok(*slot, "POST", "/probe/add?item=gamma");
  CHECK(get_json(*slot, "/probe") == Json{{"version", 1}, {"items", {"alpha", "beta", "gamma"}}});
}

TEST_CASE("a state larger than the limit fails the upgrade", "[upgrade][rollback]") {
  test::Harness h;
  auto slot = probe_with_items(h);
  host::UpgradeOptions options;
  options.max_state_bytes = 16;
  const auto report = host::upgrade(*slot, h.loader, probe_path(2), {}, options);
  CHECK(report.outcome == Outcome::RolledBack);
  CHECK_THAT(report.error->reason, Catch::Contains("larger than the limit of 16 bytes"));
  CHECK(slot->running().info.version.value == 1);
}

TEST_CASE("a module that does not quiesce in time fails the upgrade and keeps serving", "[upgrade][quiesce]") {
  test::Harness h;
  auto slot = probe_with_items(h);
  auto sleeping = std::async(std::launch::async, [&] { return slot->call(test::request("POST", "/probe/sleep?ms=1500")); });
  REQUIRE(wait_until([&] { return slot->stats().gate.inside == 1; }));

  host::UpgradeOptions options;
  options.quiesce_timeout = 100ms;
  auto upgrading = std::async(std::launch::async, [&] { return host::upgrade(*slot, h.loader, probe_path(2), {}, options); });
  REQUIRE(wait_until([&] { return slot->stats().gate.suspended; }));
  // A call arriving while the module is paused waits; after the failed
  // quiesce it is served by the old version, not refused.
  auto queued = std::async(std::launch::async, [&] { return slot->call(test::request("GET", "/probe")); });

  const auto report = upgrading.get();
  INFO(report.summary());
  CHECK(report.outcome == Outcome::RolledBack);
  CHECK(report.error->phase == Phase::Quiesce);
  CHECK_THAT(report.error->reason, Catch::Contains("1 call(s) still running after 100 ms"));
  const auto answered = queued.get();
  REQUIRE(answered.ok());
  CHECK(Json::parse(answered->body)["version"] == 1);
  const auto slept = sleeping.get();
  REQUIRE(slept.ok());
  CHECK(slept->status == 200);
  CHECK(get_json(*slot, "/probe")["version"] == 1);
}

TEST_CASE("calls that arrive during an upgrade wait and are answered by the new version", "[upgrade][quiesce]") {
  test::Harness h;
  auto slot = probe_with_items(h);
  auto in_flight = std::async(std::launch::async, [&] { return slot->call(test::request("POST", "/probe/sleep?ms=200")); });
  REQUIRE(wait_until([&] { return slot->stats().gate.inside == 1; }));
  auto upgrading = std::async(std::launch::async, [&] { return host::upgrade(*slot, h.loader, probe_path(2)); });
  REQUIRE(wait_until([&] { return slot->stats().gate.suspended; }));
  std::vector<std::future<host::Result<api::Response>>> waiting;
  for (int i = 0; i < 4; ++i)
    waiting.push_back(std::async(std::launch::async, [&] { return slot->call(test::request("GET", "/probe")); }));
  REQUIRE(wait_until([&] { return slot->stats().gate.waiting == 4; }));

  const auto report = upgrading.get();
  INFO(report.summary());
  REQUIRE(report.outcome == Outcome::Succeeded);
  CHECK(report.queued_calls == 4);
  REQUIRE(in_flight.get().ok());  // finished on v1 before the switch
  for (auto& call : waiting) {
    const auto response = call.get();
    REQUIRE(response.ok());
    CHECK(Json::parse(response->body) == Json{{"version", 2}, {"items", {"alpha", "beta"}}});
  }
}

TEST_CASE("calls that wait during an upgrade that rolls back are counted in its report", "[upgrade][rollback]") {
  test::Harness h;
  auto slot = probe_with_items(h);
  auto in_flight = std::async(std::launch::async, [&] { return slot->call(test::request("POST", "/probe/sleep?ms=200")); });
  REQUIRE(wait_until([&] { return slot->stats().gate.inside == 1; }));
  auto upgrading = std::async(std::launch::async,
                              [&] { return host::upgrade(*slot, h.loader, probe_path(2), {{"fail", "load"}}); });
  REQUIRE(wait_until([&] { return slot->stats().gate.suspended; }));
  std::vector<std::future<host::Result<api::Response>>> waiting;
  for (int i = 0; i < 3; ++i)
    waiting.push_back(std::async(std::launch::async, [&] { return slot->call(test::request("GET", "/probe")); }));
  REQUIRE(wait_until([&] { return slot->stats().gate.waiting == 3; }));

  const auto report = upgrading.get();
  INFO(report.summary());
  REQUIRE(report.outcome == Outcome::RolledBack);
  CHECK(report.queued_calls == 3);
  REQUIRE(in_flight.get().ok());
  for (auto& call : waiting) {
    const auto response = call.get();
    REQUIRE(response.ok());
    CHECK(Json::parse(response->body)["version"] == 1);  // they ran on the old version
  }
}

TEST_CASE("an upgrade refused in prepare never pauses the module", "[upgrade][prepare]") {
  test::Harness h;
  auto slot = probe_with_items(h);
  SECTION("the new version's start throws") {
    const auto report = host::upgrade(*slot, h.loader, probe_path(3));
    CHECK(report.outcome == Outcome::Refused);
    CHECK(report.error->phase == Phase::Start);
    CHECK_THAT(report.error->to_string(), Catch::Contains("start threw: probe start fails on purpose"));
    CHECK(report.pause == 0us);
  }
  SECTION("the file is another module") {
    const auto report = host::upgrade(*slot, h.loader, plugin_path("counter", 2));
    CHECK(report.outcome == Outcome::Refused);
    CHECK(report.error->to_string() ==
          "probe (" + plugin_path("counter", 2).string() + "): load: module is 'counter', expected 'probe'");
  }
  SECTION("the file does not exist") {
    const auto report = host::upgrade(*slot, h.loader, h.dir.path() / "probe-9.so");
    CHECK(report.outcome == Outcome::Refused);
    CHECK_THAT(report.error->reason, Catch::Contains("cannot open"));
  }
  CHECK(slot->stats().gate.suspended == false);
  CHECK(get_json(*slot, "/probe") == Json{{"version", 1}, {"items", {"alpha", "beta"}}});
}

TEST_CASE("a module takes part in one upgrade at a time", "[upgrade]") {
  test::Harness h;
  auto slot = probe_with_items(h);
  auto in_flight = std::async(std::launch::async, [&] { return slot->call(test::request("POST", "/probe/sleep?ms=300")); });
  REQUIRE(wait_until([&] { return slot->stats().gate.inside == 1; }));
  auto first = std::async(std::launch::async, [&] { return host::upgrade(*slot, h.loader, probe_path(2)); });
  REQUIRE(wait_until([&] { return slot->stats().gate.suspended; }));
  // A second one waits for the first up to its quiesce timeout, then gives up.
  const auto second = host::upgrade(*slot, h.loader, probe_path(2), {}, host::UpgradeOptions{50ms});
  CHECK(second.outcome == Outcome::Refused);
  CHECK_THAT(second.error->reason,
             Catch::Contains("another upgrade or a snapshot of this module was still in progress after 50 ms"));
  CHECK(first.get().outcome == Outcome::Succeeded);
  REQUIRE(in_flight.get().ok());
}

TEST_CASE("after an upgrade the old image is gone from memory and disk", "[upgrade][unload]") {
  test::Harness h;
  auto slot = h.start(plugin_path("counter", 1), "counter");
  const std::filesystem::path old_image = slot->running().image;
  REQUIRE(test::is_mapped(old_image));
  REQUIRE(host::upgrade(*slot, h.loader, plugin_path("counter", 2)).outcome == Outcome::Succeeded);
  CHECK_FALSE(test::is_mapped(old_image));
  CHECK_FALSE(std::filesystem::exists(old_image));
  CHECK(test::is_mapped(slot->running().image));
}

TEST_CASE("100 upgrades and downgrades under concurrent calls lose no call and no count", "[upgrade][stress]") {
  test::Harness h;
  auto slot = h.start(plugin_path("counter", 1), "counter");
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> succeeded{0}, failed{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      while (!done) {
        const auto response = slot->call(test::request("POST", "/counter/incr"));
        (response.ok() && response->status == 200 ? succeeded : failed)++;
      }
    });

  std::vector<std::string> failures;
  std::uint64_t queued = 0;
  for (int i = 0; i < 100; ++i) {
    const auto report = host::upgrade(*slot, h.loader, plugin_path("counter", i % 2 == 0 ? 2 : 1));
    queued += report.queued_calls;
    if (report.outcome != Outcome::Succeeded) failures.push_back(report.summary());
  }
  REQUIRE(wait_until([&] { return succeeded > 1000; }));
  done = true;
  for (auto& t : callers) t.join();

  CHECK(failures.empty());
  CHECK(failed == 0);
  CHECK(queued > 0);  // calls did arrive during pauses, and waited
  const auto shown = get_json(*slot, "/counter");
  CHECK(shown["version"] == 1);
  CHECK(shown["total"] == succeeded.load());
  // Every replaced image was unloaded: only the running one is left.
  CHECK(std::distance(std::filesystem::directory_iterator(h.dir.path() / "images"),
                      std::filesystem::directory_iterator()) == 1);
}

TEST_CASE("a multi-module upgrade is all or nothing", "[upgrade][multi]") {
  test::Harness h;
  auto counter = h.start(plugin_path("counter", 1), "counter");
  call_ok(*counter, "POST", "/counter/incr");
  auto probe = probe_with_items(h);
  const std::string counter_before = state_of(*counter);

  std::vector<host::UpgradeTarget> steps{{counter.get(), plugin_path("counter", 2), std::nullopt, {}, std::nullopt},
                                       {probe.get(), probe_path(2), std::nullopt, {{"fail", "load"}}, std::nullopt}};
  auto reports = host::run_upgrade(steps, h.loader);
  REQUIRE(reports.size() == 2);
  CHECK(reports[0].outcome == Outcome::RolledBack);
  CHECK_THAT(reports[0].error->reason, Catch::Contains("not upgraded because probe failed"));
  CHECK(reports[1].outcome == Outcome::RolledBack);
  CHECK_THAT(reports[1].error->reason, Catch::Contains("probe refuses to load"));
  CHECK(counter->running().info.version.value == 1);
  CHECK(state_of(*counter) == counter_before);
  CHECK(get_json(*probe, "/probe")["version"] == 1);

  steps[1].extra.clear();
  reports = host::run_upgrade(steps, h.loader);
  CHECK(reports[0].outcome == Outcome::Succeeded);
  CHECK(reports[1].outcome == Outcome::Succeeded);
  CHECK(get_json(*counter, "/counter")["counts"] == Json{{"default", 1}});
  CHECK(get_json(*probe, "/probe")["version"] == 2);
}

TEST_CASE("restore puts a saved state into a fresh instance, migrating it when needed", "[upgrade][restore]") {
  test::Harness h;
  auto source = h.start(plugin_path("counter", 1), "counter");
  for (int i = 0; i < 5; ++i) call_ok(*source, "POST", "/counter/incr");
  auto blob = source->save_state(5s);
  REQUIRE(blob.ok());

  SECTION("into the same version") {
    auto slot = h.start(plugin_path("counter", 1), "counter");
    const auto report = host::restore(*slot, h.loader, blob.value());
    REQUIRE(report.outcome == Outcome::Succeeded);
    CHECK(report.direction == api::Direction::Same);
    CHECK(get_json(*slot, "/counter")["total"] == 5);
  }
  SECTION("into a newer version") {
    auto slot = h.start(plugin_path("counter", 2), "counter");
    const auto report = host::restore(*slot, h.loader, blob.value());
    REQUIRE(report.outcome == Outcome::Succeeded);
    CHECK(report.direction == api::Direction::Up);
    CHECK(get_json(*slot, "/counter")["counts"] == Json{{"default", 5}});
  }
  SECTION("a newer schema than the image reads is refused") {
    auto v2 = h.start(plugin_path("counter", 2), "counter");
    auto newer = v2->save_state(5s);
    REQUIRE(newer.ok());
    const auto report = host::restore(*source, h.loader, newer.value());
    CHECK(report.outcome == Outcome::Refused);
    CHECK_THAT(report.error->reason, Catch::Contains("state was written by v2 in schema 2; v1 reads schemas up to 1"));
  }
  SECTION("another module's state is refused") {
    auto probe = probe_with_items(h);
    const auto report = host::restore(*probe, h.loader, blob.value());
    CHECK(report.outcome == Outcome::Refused);
    CHECK_THAT(report.error->reason, Catch::Contains("state archive is of module 'counter'"));
  }
}

TEST_CASE("a handler that throws answers with an error and the module keeps serving", "[slot]") {
  test::Harness h;
  auto slot = probe_with_items(h);
  const auto thrown = slot->call(test::request("GET", "/probe/throw"));
  REQUIRE_FALSE(thrown.ok());
  CHECK(thrown.error().to_string() == "probe v1: call: GET /probe/throw: handler threw: boom");
  CHECK(slot->stats().failed_calls == 1);
  CHECK(get_json(*slot, "/probe")["items"].size() == 2);
}

TEST_CASE("an upgrade report serialises to JSON with every phase", "[report]") {
  test::Harness h;
  auto slot = h.start(plugin_path("counter", 1), "counter");
  const auto report = host::upgrade(*slot, h.loader, plugin_path("counter", 2));
  const Json json = report;
  CHECK(json["module"] == "counter");
  CHECK(json["outcome"] == "succeeded");
  CHECK(json["direction"] == "up");
  CHECK(json["error"].is_null());
  for (const char* phase : {"prepare", "quiesce", "save", "migrate", "resume", "rollback", "cleanup"})
    CHECK(json["phases_us"].contains(phase));
  CHECK(json["phases_us"]["prepare"].get<std::int64_t>() > 0);
  CHECK(json["state_bytes"] == report.state_bytes);
  CHECK_THAT(report.summary(), Catch::StartsWith("counter v1 -> v2 succeeded: pause "));
}

TEST_CASE("a state larger than one chunk streams from save_state into load_state", "[upgrade][stream]") {
  test::Harness h;
  auto slot = h.start(probe_path(1), "probe");
  call_ok(*slot, "POST", "/probe/fill?n=300000");  // several MiB: the load runs beside the save
  const std::string before = state_of(*slot);
  REQUIRE(before.size() > 4u << 20);

  SECTION("and arrives whole") {
    const auto report = host::upgrade(*slot, h.loader, probe_path(2));
    INFO(report.summary());
    REQUIRE(report.outcome == Outcome::Succeeded);
    CHECK(report.state_bytes == before.size());
    CHECK(get_json(*slot, "/probe?count") == Json{{"version", 2}, {"count", 300000}, {"last", "item-299999"}});
    CHECK(state_of(*slot) == before);  // v2 writes exactly what v1 wrote
  }
  SECTION("a load refused half way rolls back, state unchanged") {
    const auto report = host::upgrade(*slot, h.loader, probe_path(2), {{"fail", "load"}});
    CHECK(report.outcome == Outcome::RolledBack);
    CHECK_THAT(report.error->to_string(), Catch::Contains("migrate: refused: probe refuses to load on purpose"));
    CHECK(state_of(*slot) == before);
  }
  SECTION("a save that fails after streaming rolls back, and says why") {
    const auto report = host::upgrade(*slot, h.loader, probe_path(2), {{"fail", "save-late"}});
    CHECK(report.outcome == Outcome::RolledBack);
    CHECK_THAT(report.error->to_string(), Catch::Contains("save: refused: probe refuses after saving, on purpose"));
    CHECK(state_of(*slot) == before);
  }
  SECTION("a load that stops reading early is caught") {
    const auto report = host::upgrade(*slot, h.loader, probe_path(2), {{"fail", "short-read"}});
    CHECK(report.outcome == Outcome::RolledBack);
    // Which side notices first depends on timing; both say the load stopped early.
    CHECK_THAT(report.error->reason, Catch::Contains("load_state returned") && Catch::Contains("bytes unread"));
    CHECK(state_of(*slot) == before);
  }
  SECTION("a state over the limit is refused") {
    host::UpgradeOptions options;
    options.max_state_bytes = 2u << 20;
    const auto report = host::upgrade(*slot, h.loader, probe_path(2), {}, options);
    CHECK(report.outcome == Outcome::RolledBack);
    CHECK_THAT(report.error->reason, Catch::Contains("larger than the limit of 2097152 bytes"));
    CHECK(state_of(*slot) == before);
  }
  CHECK(slot->stats().gate.suspended == false);
}
