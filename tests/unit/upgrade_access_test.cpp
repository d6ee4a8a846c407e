// ModuleSlot::UpgradeAccess (upgrade_access.hpp), the slot as the upgrade
// transaction sees it: one access at a time, and the serving instance
// swapped only behind a closed, drained gate. The transaction itself is
// transaction_test's.
#include <future>
#include <stdexcept>

#include <catch2/catch.hpp>

#include "molt/host/slot/upgrade_access.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;
using host::ModuleSlot;
using Swap = ModuleSlot::UpgradeAccess::Swap;
using test::call_ok;

namespace {

/// Whether another thread gets an access to `slot` now (one thread must not
/// lock a std::mutex it holds, so the test asks from another).
bool another_thread_gets_access(ModuleSlot& slot) {
  return std::async(std::launch::async, [&] { return ModuleSlot::UpgradeAccess::try_take(slot).has_value(); }).get();
}

}  // namespace

TEST_CASE("a slot's upgrade access is one at a time", "[slot]") {
  test::Harness h;
  auto slot = h.start(test::probe_path(1), "probe");
  auto access = ModuleSlot::UpgradeAccess::try_take(*slot);
  REQUIRE(access);
  CHECK_FALSE(another_thread_gets_access(*slot));
  access.reset();
  CHECK(another_thread_gets_access(*slot));
}

TEST_CASE("swap replaces the serving instance only behind a closed, drained gate", "[slot]") {
  test::Harness h;
  auto slot = h.start(test::probe_path(1), "probe");
  call_ok(*slot, "POST", "/probe/add?item=old");
  auto access = ModuleSlot::UpgradeAccess::try_take(*slot);
  REQUIRE(access);
  auto make_next = [&] {
    auto next = access->make_live(access->live().image);  // a fresh instance of the same image
    REQUIRE(next);
    return std::move(next.value());
  };

  CHECK_THROWS_AS(access->swap(make_next(), Swap::Upgrade), std::logic_error);
  CHECK(slot->stats().gate.suspended == false);
  CHECK(call_ok(*slot, "GET", "/probe") == R"({"version":1,"items":["old"]})");  // the old one serves on

  REQUIRE(access->suspend(host::CallGate::Clock::now() + 5s));
  SECTION("an upgrade keeps the version replaced as the one to roll back to") {
    auto replaced = access->swap(make_next(), Swap::Upgrade);
    CHECK(replaced != nullptr);
    REQUIRE(slot->previous());
    CHECK(slot->previous()->info.version.value == 1);
  }
  SECTION("a restore is not an upgrade: nothing to roll back to") {
    auto replaced = access->swap(make_next(), Swap::Restore);
    CHECK(replaced != nullptr);
    CHECK_FALSE(slot->previous());
  }
  access->set_state_bytes(42);
  CHECK(access->resume() == 0);
  access.reset();
  CHECK(slot->stats().state_bytes == 42u);
  CHECK(call_ok(*slot, "GET", "/probe") == R"({"version":1,"items":[]})");  // the new instance serves
}
