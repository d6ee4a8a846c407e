// Code-only upgrades hand the state object over; host timers survive
// upgrades; stream calls reach the running version with the unconsumed rest.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "molt/host/upgrade/transaction.hpp"
#include "test_support.hpp"

using namespace molt;
using host::Outcome;
using test::call_ok;
using test::wait_until;
using Json = nlohmann::json;

namespace {

std::filesystem::path stash_path(unsigned version) {
  return test::test_image_path("stash-" + std::to_string(version) + ".so");
}

Json show(host::ModuleSlot& slot) { return Json::parse(call_ok(slot, "GET", "/stash")); }

/// A StreamOutput collecting what the module writes.
struct Collector final : api::StreamOutput {
  std::string written;
  bool close = false;
  void write(std::string_view bytes) override { written.append(bytes); }
  void close_after_write() override { close = true; }
  bool has_room() const override { return true; }
};

}  // namespace

TEST_CASE("a code-only upgrade hands the state object to the new version without copying it", "[handoff]") {
  test::Harness h;
  auto slot = h.start(stash_path(1), "stash");
  call_ok(*slot, "POST", "/stash/fill?n=1000");
  const Json before = show(*slot);

  const auto report = host::upgrade(*slot, h.loader, stash_path(2));
  INFO(report.summary());
  REQUIRE(report.outcome == Outcome::Succeeded);
  CHECK(report.state_in_memory);
  CHECK(report.state_bytes == 0);
  CHECK_THAT(report.summary(), Catch::Contains("state in memory"));
  const Json after = show(*slot);
  CHECK(after["version"] == 2);
  CHECK(after["items"] == 1000);
  CHECK(after["state_at"] == before["state_at"]);  // the very same object

  SECTION("and back down the same way") {
    const auto down = host::upgrade(*slot, h.loader, stash_path(1));
    REQUIRE(down.outcome == Outcome::Succeeded);
    CHECK(down.state_in_memory);
    CHECK(show(*slot)["state_at"] == before["state_at"]);
  }
}

TEST_CASE("a different layout fingerprint makes the upgrade serialize the state", "[handoff]") {
  test::Harness h;
  auto slot = h.start(stash_path(2), "stash");
  call_ok(*slot, "POST", "/stash/put?k=a&v=1");
  const auto report = host::upgrade(*slot, h.loader, stash_path(3));
  REQUIRE(report.outcome == Outcome::Succeeded);
  CHECK_FALSE(report.state_in_memory);
  CHECK(report.state_bytes > 0);
  CHECK(show(*slot)["items"] == 1);
}

TEST_CASE("a rolled-back transaction gives a handed-over state object back to the old version", "[handoff][rollback]") {
  test::Harness h;
  auto stash = h.start(stash_path(1), "stash");
  call_ok(*stash, "POST", "/stash/put?k=a&v=1");
  const Json before = show(*stash);
  auto probe = h.start(test::probe_path(1), "probe");
  const std::string stash_bytes = stash->save_state(std::chrono::seconds(5))->bytes;

  // stash hands its object over first, then probe's migration fails.
  std::vector<host::UpgradeTarget> steps{{stash.get(), stash_path(2), std::nullopt, {}, std::nullopt},
                                       {probe.get(), test::probe_path(2), std::nullopt, {{"fail", "load"}}, std::nullopt}};
  const auto reports = host::run_upgrade(steps, h.loader);
  CHECK(reports[0].outcome == Outcome::RolledBack);
  CHECK(reports[1].outcome == Outcome::RolledBack);
  const Json after = show(*stash);
  CHECK(after["version"] == 1);
  CHECK(after["state_at"] == before["state_at"]);
  CHECK(stash->save_state(std::chrono::seconds(5))->bytes == stash_bytes);
}

TEST_CASE("host timers keep firing across upgrades, into the new version", "[timers]") {
  test::Harness h;
  auto slot = h.start(stash_path(1), "stash", {{"tick_ms", "2"}});
  REQUIRE(wait_until([&] { return show(*slot)["ticks"] >= 3; }));
  CHECK(slot->timers() == std::vector<std::string>{"tick"});
  REQUIRE(host::upgrade(*slot, h.loader, stash_path(3)).outcome == Outcome::Succeeded);  // serialized, ticks kept
  const auto ticks = show(*slot)["ticks"].get<int>();
  CHECK(ticks >= 3);
  REQUIRE(wait_until([&] { return show(*slot)["ticks"] >= ticks + 3; }));  // v3 receives them now
  CHECK(slot->timers() == std::vector<std::string>{"tick"});
}

TEST_CASE("a timer due while start() still runs fires once the slot has its instance, and not after a failed start",
          "[timers]") {
  test::Harness h;
  // start() sets a 1 ms timer, then takes 50 ms: the timer is due long before the slot is.
  auto slot = h.start(stash_path(1), "stash", {{"tick_ms", "1"}, {"start_ms", "50"}});
  REQUIRE(wait_until([&] { return show(*slot)["ticks"] >= 3; }));

  auto image = h.loader.load(stash_path(1), "stash");
  REQUIRE(image.ok());
  auto failed = host::ModuleSlot::start(
      std::move(image.value()),
      host::SlotOptions{test::test_logger("stash"), {{"tick_ms", "1"}, {"start_ms", "50"}, {"start_fails", ""}}, nullptr, nullptr});
  REQUIRE_FALSE(failed.ok());
  CHECK_THAT(failed.error().to_string(), Catch::Matchers::Contains("start_fails is set"));
  CHECK(show(*slot)["ticks"] >= 3);  // the first slot serves on
}

TEST_CASE("stream data reaches the running version, which consumes whole lines and leaves the rest", "[streams]") {
  test::Harness h;
  auto slot = h.start(stash_path(1), "stash");
  REQUIRE(slot->stream_connect(7).ok());
  Collector out;
  auto consumed = slot->stream_data(7, "SET a 1\nNAME alice\nGE", out);
  REQUIRE(consumed.ok());
  CHECK(consumed.value() == std::string_view("SET a 1\nNAME alice\n").size());  // "GE" waits for its line
  CHECK(out.written == "OK\nOK\n");

  // The unconsumed bytes and the connection's state cross an upgrade.
  REQUIRE(host::upgrade(*slot, h.loader, stash_path(2)).outcome == Outcome::Succeeded);
  out.written.clear();
  consumed = slot->stream_data(7, "GET a\nWHO\nQUIT\nSET ignored x\n", out);
  REQUIRE(consumed.ok());
  CHECK(out.written == "1 v2\nalice\nBYE\n");
  CHECK(out.close);
  CHECK(consumed.value() == std::string_view("GET a\nWHO\nQUIT\n").size());
  slot->stream_disconnect(7);
}
