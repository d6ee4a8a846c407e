#include <atomic>
#include <future>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "molt/host/slot/call_gate.hpp"
#include "test_support.hpp"

using molt::api::CallMode;
using molt::host::CallGate;
using molt::test::wait_until;
using namespace std::chrono_literals;

namespace {
CallGate::Clock::time_point in(std::chrono::milliseconds ms) { return CallGate::Clock::now() + ms; }
}  // namespace

TEST_CASE("serial gate never lets two calls in at once", "[call_gate]") {
  CallGate gate(CallMode::Serial);
  std::atomic<int> inside{0}, most{0}, calls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 500; ++i) {
        auto pass = gate.enter();
        const int now = ++inside;
        int seen = most.load();
        while (now > seen && !most.compare_exchange_weak(seen, now)) {
        }
        ++calls;
        --inside;
      }
    });
  for (auto& t : threads) t.join();
  CHECK(most == 1);
  CHECK(calls == 8 * 500);
}

TEST_CASE("concurrent gate lets calls overlap", "[call_gate]") {
  CallGate gate(CallMode::Concurrent);
  auto first = gate.enter();
  auto second = std::async(std::launch::async, [&] { auto pass = gate.enter(); return true; });
  REQUIRE(second.wait_for(10s) == std::future_status::ready);  // entered while `first` is inside
  CHECK(gate.counts().inside == 1);
}

TEST_CASE("calls that arrive while suspended wait, and are admitted in arrival order after resume", "[call_gate]") {
  CallGate gate(CallMode::Serial);
  REQUIRE(gate.suspend(in(1s)));
  std::mutex order_mutex;
  std::vector<int> order;
  std::vector<std::thread> threads;
  for (int i = 0; i < 6; ++i) {
    threads.emplace_back([&, i] {
      auto pass = gate.enter();
      std::lock_guard lock(order_mutex);
      order.push_back(i);
    });
    // Start the next caller only once this one is in line, so arrival order is known.
    REQUIRE(wait_until([&] { return gate.counts().waiting == static_cast<std::uint64_t>(i + 1); }));
  }
  CHECK(order.empty());
  CHECK(gate.resume() == 6);
  for (auto& t : threads) t.join();
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4, 5});
}

TEST_CASE("suspend waits for the call inside to finish", "[call_gate]") {
  CallGate gate(CallMode::Serial);
  std::promise<void> release;
  std::atomic<bool> entered{false};
  std::thread caller([&] {
    auto pass = gate.enter();
    entered = true;
    release.get_future().wait();
  });
  REQUIRE(wait_until([&] { return entered.load(); }));
  auto drained = std::async(std::launch::async, [&] { return gate.suspend(in(10s)); });
  REQUIRE(wait_until([&] { return gate.counts().suspended; }));
  CHECK(drained.wait_for(0s) == std::future_status::timeout);  // the call is still inside
  release.set_value();
  CHECK(drained.get());
  CHECK(gate.counts().inside == 0);
  caller.join();
  gate.resume();
}

TEST_CASE("suspend gives up at the deadline and reopens the gate", "[call_gate]") {
  CallGate gate(CallMode::Serial);
  std::promise<void> release;
  std::atomic<bool> entered{false};
  std::thread caller([&] {
    auto pass = gate.enter();
    entered = true;
    release.get_future().wait();
  });
  REQUIRE(wait_until([&] { return entered.load(); }));
  CHECK_FALSE(gate.suspend(in(20ms)));
  CHECK_FALSE(gate.counts().suspended);
  release.set_value();
  caller.join();
  auto after = std::async(std::launch::async, [&] { auto pass = gate.enter(); return true; });
  REQUIRE(after.wait_for(10s) == std::future_status::ready);
}

TEST_CASE("resume can switch the gate from serial to concurrent", "[call_gate]") {
  CallGate gate(CallMode::Serial);
  REQUIRE(gate.suspend(in(1s)));
  gate.resume(CallMode::Concurrent);
  auto first = gate.enter();
  auto second = std::async(std::launch::async, [&] { auto pass = gate.enter(); return true; });
  REQUIRE(second.wait_for(10s) == std::future_status::ready);
}

TEST_CASE("a caller that gives up waiting keeps no place in line: the calls behind it still enter, in order",
          "[call_gate]") {
  CallGate gate(CallMode::Serial);
  std::optional<CallGate::Pass> stuck(gate.enter("handle"));  // a call that does not return
  // Gives up while first in line.
  const auto start = CallGate::Clock::now();
  CHECK_FALSE(gate.enter_until(in(50ms), "health").has_value());
  CHECK(CallGate::Clock::now() - start >= 50ms);
  // Gives up while second in line, behind a call that waits without a deadline.
  std::atomic<bool> behind_entered{false};
  std::thread behind([&] {
    auto pass = gate.enter();
    behind_entered = true;
  });
  REQUIRE(wait_until([&] { return gate.counts().waiting == 1; }, 10s));
  CHECK_FALSE(gate.enter_until(in(50ms), "health").has_value());
  CHECK(gate.counts().waiting == 1);  // the one that gave up is not counted
  stuck.reset();
  behind.join();
  CHECK(behind_entered);
  // Nothing is left in line: the next call enters at once.
  CHECK(gate.enter_until(in(1s)).has_value());
  CHECK(gate.counts().waiting == 0);
}

TEST_CASE("the gate names the longest-running call inside, or what holds it suspended", "[call_gate]") {
  CallGate gate(CallMode::Concurrent);
  CHECK_FALSE(gate.counts().oldest.has_value());
  const auto before = CallGate::Clock::now();
  std::optional<CallGate::Pass> first(gate.enter("handle"));
  std::optional<CallGate::Pass> second(gate.enter("on_data"));
  auto counts = gate.counts();
  REQUIRE(counts.oldest.has_value());
  CHECK(std::string(counts.oldest->what) == "handle");
  CHECK(counts.oldest->since >= before);
  first.reset();
  CHECK(std::string(gate.counts().oldest->what) == "on_data");
  second.reset();
  CHECK_FALSE(gate.counts().oldest.has_value());
  REQUIRE(gate.suspend(in(1s), "snapshot"));
  counts = gate.counts();
  REQUIRE(counts.oldest.has_value());
  CHECK(std::string(counts.oldest->what) == "snapshot");
  gate.resume();
  CHECK_FALSE(gate.counts().oldest.has_value());
}

TEST_CASE("a serial gate: the calls that find it busy keep their order, and each call inside is named with its own id",
          "[call_gate]") {
  CallGate gate(CallMode::Serial);
  const auto before = CallGate::Clock::now();
  std::optional<CallGate::Pass> first(gate.enter("handle"));  // the idle gate: no line to join
  CHECK(first->alone());
  auto counts = gate.counts();
  REQUIRE(counts.oldest.has_value());
  CHECK(std::string(counts.oldest->what) == "handle");
  // `since` on the idle path is the coarse clock: at most a few ticks old.
  CHECK(counts.oldest->since >= before - 20ms);
  CHECK(counts.oldest->since <= CallGate::Clock::now());
  const auto first_id = counts.oldest->id;

  std::mutex order_mutex;
  std::vector<int> order;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      auto pass = gate.enter("on_data");
      std::lock_guard lock(order_mutex);
      order.push_back(i);
    });
    REQUIRE(wait_until([&] { return gate.counts().waiting == static_cast<std::uint64_t>(i + 1); }));
  }
  CHECK(gate.counts().inside == 1);
  first.reset();  // leaving wakes the line
  for (auto& t : threads) t.join();
  CHECK(order == std::vector<int>{0, 1, 2, 3});
  counts = gate.counts();
  CHECK(counts.waiting == 0);
  CHECK(counts.inside == 0);
  CHECK_FALSE(counts.oldest.has_value());

  // The line is empty again: the next call comes straight in, as another call.
  const CallGate::Pass again = gate.enter("handle");
  counts = gate.counts();
  REQUIRE(counts.oldest.has_value());
  CHECK(counts.oldest->id != first_id);
  CHECK(counts.inside == 1);
}

TEST_CASE("a serial gate switched to concurrent on resume admits overlapping calls, and back", "[call_gate]") {
  CallGate gate(CallMode::Serial);
  REQUIRE(gate.suspend(in(1s)));
  gate.resume(CallMode::Concurrent);
  {
    auto first = gate.enter();
    CHECK_FALSE(first.alone());
    auto second = std::async(std::launch::async, [&] { auto pass = gate.enter(); return true; });
    REQUIRE(second.wait_for(10s) == std::future_status::ready);
  }
  REQUIRE(gate.suspend(in(1s)));
  gate.resume(CallMode::Serial);
  auto only = gate.enter();
  CHECK(only.alone());
  auto blocked = std::async(std::launch::async, [&] { auto pass = gate.enter(); return true; });
  CHECK(blocked.wait_for(50ms) == std::future_status::timeout);  // a bound on how long it may not enter, not a wait for it
  { auto gone = std::move(only); }
  REQUIRE(blocked.wait_for(10s) == std::future_status::ready);
}
