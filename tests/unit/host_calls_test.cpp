// The calls the host makes into a module on its own behalf (health checks,
// snapshots) have deadlines, and a module stuck in a call shows it: the
// gate names the oldest call, and the call watch logs it once.
#include <future>

#include <catch2/catch.hpp>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "molt/host/runtime/call_watch.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;
using test::call_ok;
using test::probe_path;
using test::wait_until;

namespace {

using Clock = std::chrono::steady_clock;

/// Starts /probe/sleep?ms=<ms> on its own thread, and waits until it is inside the module.
std::future<void> stuck_call(host::ModuleSlot& slot, int ms) {
  auto call = std::async(std::launch::async, [&slot, ms] {
    (void)call_ok(slot, "POST", "/probe/sleep?ms=" + std::to_string(ms));
  });
  REQUIRE(wait_until([&] { return slot.stats().gate.inside == 1; }));
  return call;
}

/// How a snapshot of faulty (which has pre-copy) takes its state.
enum class Snapshots {
  Paused,     ///< save_state in the module itself, paused
  PreCopied,  ///< pre-copied into a second instance, saved from there
};

/// faulty-2-hang-save_state.so, in a slot whose snapshots are taken `snapshots`.
std::shared_ptr<host::ModuleSlot> hanging_save_state(test::Harness& h, Snapshots snapshots) {
  auto image = h.loader.load(test::test_image_path("faulty-2-hang-save_state.so"), "faulty");
  if (!image) FAIL(image.error().to_string());
  host::SlotOptions options{test::test_logger("faulty"), {}, nullptr, nullptr};
  options.precopy.enabled = snapshots == Snapshots::PreCopied;
  auto slot = host::ModuleSlot::start(std::move(image.value()), std::move(options));
  if (!slot) FAIL(slot.error().to_string());
  return std::move(slot.value());
}

}  // namespace

TEST_CASE("a health check gives up at its deadline while a call is stuck, naming the call", "[host_calls]") {
  test::Harness h;
  auto slot = h.start(probe_path(1), "probe");
  auto call = stuck_call(*slot, 3000);

  const auto oldest = slot->stats().gate.oldest;
  REQUIRE(oldest.has_value());
  CHECK(std::string(oldest->what) == "handle");

  const auto asked = Clock::now();
  const auto problem = slot->health(200ms);
  CHECK(Clock::now() - asked < 1s);
  REQUIRE(problem.has_value());
  CHECK_THAT(*problem, Catch::StartsWith("no answer within 200 ms: handle has run for "));

  call.get();
  CHECK(slot->health(2s) == std::nullopt);  // answered once the call returned; the one that gave up left no trace
  CHECK(slot->stats().gate.waiting == 0);
}

TEST_CASE("a snapshot gives up while a call is stuck, and the module serves on", "[host_calls]") {
  test::Harness h;
  auto slot = h.start(probe_path(1), "probe");
  call_ok(*slot, "POST", "/probe/add?item=kept");
  auto call = stuck_call(*slot, 2000);

  const auto asked = Clock::now();
  auto blob = slot->save_state(200ms, 5s);
  CHECK(Clock::now() - asked < 1s);
  REQUIRE_FALSE(blob);
  CHECK_THAT(blob.error().reason, Catch::StartsWith("handle, running for ") &&
                                      Catch::EndsWith(" ms, did not finish within 200 ms"));
  // The gate is open again: a call behind the stuck one is answered once it returns.
  auto behind = std::async(std::launch::async, [&] { return call_ok(*slot, "GET", "/probe"); });
  call.get();
  CHECK_THAT(behind.get(), Catch::Contains("kept"));
  // And a snapshot with a deadline works when nothing is stuck; `keep` sees the state.
  std::string kept;
  auto saved = slot->save_state(1s, 5s, [&](const host::StateBlob& state) -> host::Result<void> {
    kept = state.bytes;
    return {};
  });
  REQUIRE(saved);
  CHECK(kept == saved->bytes);
}

TEST_CASE("a save_state that never returns fails the snapshot save_timeout after the pause, however long the quiesce "
          "could have taken, and the module stays suspended inside it",
          "[host_calls]") {
  test::Harness h;
  auto slot = hanging_save_state(h, Snapshots::Paused);
  const auto asked = Clock::now();
  auto blob = slot->save_state(5s, 300ms);  // nothing in flight: the pause is at once
  const auto took = Clock::now() - asked;
  CHECK(took >= 300ms);
  CHECK(took < 2s);  // not the quiesce's 5 s on top
  REQUIRE_FALSE(blob);
  CHECK(blob.error().reason == "save_state did not return within 300 ms; the module stays suspended until it does");
  const auto oldest = slot->stats().gate.oldest;
  REQUIRE(oldest.has_value());
  CHECK(std::string(oldest->what) == "save_state");
  CHECK(slot->stats().gate.suspended);
}

TEST_CASE("a save_state that never returns in the second instance a snapshot pre-copied the state into fails the "
          "snapshot with one line that says so, and the module serves on",
          "[host_calls][precopy]") {
  test::Harness h;
  auto slot = hanging_save_state(h, Snapshots::PreCopied);
  call_ok(*slot, "POST", "/faulty/add?item=kept");
  const auto asked = Clock::now();
  auto blob = slot->save_state(5s, 300ms);
  const auto took = Clock::now() - asked;
  CHECK(took >= 300ms);
  CHECK(took < 2s);
  REQUIRE_FALSE(blob);
  CHECK(blob.error().to_string() ==
        "faulty v2: snapshot: save_state did not return within 300 ms; it runs in the second instance the state was "
        "pre-copied into: the module serves on, but no upgrade or snapshot of it can start until it returns");
  CHECK_FALSE(slot->stats().gate.suspended);
  CHECK_FALSE(slot->stats().gate.oldest.has_value());
  CHECK_THAT(call_ok(*slot, "GET", "/faulty"), Catch::Contains("kept"));
  // The second instance holds the upgrade lock: the next snapshot waits for it, and gives up.
  auto again = slot->save_state(200ms, 300ms);
  REQUIRE_FALSE(again);
  CHECK(again.error().reason == "an upgrade or another snapshot was still in progress after 200 ms");
}

TEST_CASE("the call watch logs a call that runs past host.call_warn_ms once, and once more when it returns",
          "[host_calls]") {
  test::Harness h;
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  const auto logged = [&] {
    std::string all;
    for (const auto& line : sink->last_formatted()) all += line;
    return all;
  };
  host::ModuleTable table(h.loader, host::TableOptions{h.dir.path(), {}, [&](const std::string& name) {
                                                         auto logger = std::make_shared<spdlog::logger>(name, sink);
                                                         logger->set_pattern("%n %l %v");
                                                         return logger;
                                                       },
                                                       0});
  REQUIRE(table.start(host::ModuleConfig{"probe", probe_path(1), {}, {}}));
  auto slot = table.find("probe");
  host::CallWatch watch(table, std::chrono::milliseconds(100));
  auto call = stuck_call(*slot, 700);
  REQUIRE(wait_until([&] { return logged().find("handle has run for") != std::string::npos; }));
  call.get();
  REQUIRE(wait_until([&] { return logged().find("handle returned after") != std::string::npos; }));
  const std::string log = logged();
  CHECK(test::occurrences(log, "probe warning handle has run for ") == 1);
  CHECK_THAT(log, Catch::Contains("(host.call_warn_ms = 100); 0 call(s) waiting for their turn"));
  CHECK(test::occurrences(log, "probe warning handle returned after ") == 1);
}
