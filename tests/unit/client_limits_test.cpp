#include <catch2/catch.hpp>

#include "molt/host/net/client_limits.hpp"

using namespace molt::host;
using namespace std::chrono_literals;

TEST_CASE("the memory budget takes only what fits, and everything when it is 0", "[limits]") {
  MemoryBudget budget(100);
  CHECK(budget.try_reserve(60));
  CHECK_FALSE(budget.try_reserve(41));
  CHECK(budget.used() == 60);
  CHECK(budget.try_reserve(40));
  CHECK_FALSE(budget.try_reserve(1));
  budget.release(30);
  CHECK(budget.try_reserve(30));
  budget.force_reserve(10);  // past it: nothing more fits until it is back under
  CHECK(budget.used() == 110);
  CHECK_FALSE(budget.try_reserve(0));
  budget.release(20);
  CHECK(budget.try_reserve(10));

  MemoryBudget unlimited(0);
  CHECK(unlimited.try_reserve(1ull << 50));
  CHECK_FALSE(unlimited.limited());
}

TEST_CASE("eviction closes the largest holders first until the ask fits", "[limits]") {
  // used 100 of 100; the asker (index 0, holding 5) wants 20.
  const std::vector<Holder> holders{{5, false}, {40, false}, {10, false}, {30, false}, {15, false}};
  const auto plan = plan_eviction(100, 100, 20, holders, 0);
  CHECK(plan.close == std::vector<std::size_t>{1});  // 40 freed: 60 + 20 fits
  CHECK_FALSE(plan.asker_closes);

  // Over the budget already (output written past it): 40 + 30 must go.
  const auto more = plan_eviction(100, 60, 10, holders, 0);
  CHECK(more.close == std::vector<std::size_t>{1, 3});
  CHECK_FALSE(more.asker_closes);
}

TEST_CASE("eviction closes the asker when it holds the most, and nobody smaller", "[limits]") {
  const std::vector<Holder> holders{{10, false}, {50, false}, {40, false}};
  // The asker (index 1) would hold 50 + 30: the largest.
  const auto plan = plan_eviction(100, 100, 30, holders, 1);
  CHECK(plan.asker_closes);
  CHECK(plan.close.empty());
}

TEST_CASE("eviction closes larger holders before reaching the asker", "[limits]") {
  const std::vector<Holder> holders{{60, false}, {30, false}, {10, false}};
  // The asker (index 1, 30 + 20 = 50) comes after the holder of 60; that is
  // not enough (100 - 60 + 20 = 60 fits in 50? no), so the asker goes too.
  const auto plan = plan_eviction(100, 50, 20, holders, 1);
  CHECK(plan.close == std::vector<std::size_t>{0});
  CHECK(plan.asker_closes);
}

TEST_CASE("eviction counts holders already closing as freed, and then waits", "[limits]") {
  const std::vector<Holder> holders{{5, false}, {40, true}, {10, false}};
  const auto plan = plan_eviction(100, 100, 20, holders, 0);
  CHECK(plan.close.empty());  // the 40 on their way back make room
  CHECK_FALSE(plan.asker_closes);
}

TEST_CASE("an ask larger than the whole budget closes the asker alone", "[limits]") {
  const std::vector<Holder> holders{{64, false}, {90, false}};
  const auto plan = plan_eviction(154, 256, 200, holders, 0);  // 64 + 200 > 256
  CHECK(plan.asker_closes);
  CHECK(plan.close.empty());
}

TEST_CASE("maxclients is lowered only when the descriptors cannot cover every listener", "[limits]") {
  const std::vector<std::uint32_t> wanted{10000, 10000};
  CHECK_FALSE(maxclients_cap(wanted, 30000, 64).has_value());
  CHECK(maxclients_cap(wanted, 20000, 64) == 9968u);  // 2 x 9968 = 19936
  // The small listener keeps its 50; the large ones share the rest.
  const std::vector<std::uint32_t> mixed{50, 10000, 10000};
  CHECK(maxclients_cap(mixed, 1024, 64) == 455u);  // 50 + 2 x 455 = 960
  // Never below 1, even with no descriptors to spare.
  CHECK(maxclients_cap(wanted, 10, 64) == 1u);
}

TEST_CASE("accept backs off 50 ms doubling to 500 ms, logs once per interval, and resets on success", "[limits]") {
  AcceptBackoff backoff(10s);
  const auto t0 = AcceptBackoff::Clock::now();
  auto step = backoff.failed(t0);
  CHECK(step.delay == 50ms);
  CHECK(step.log);
  CHECK(step.failures == 1);
  std::vector<long> delays;
  for (int i = 0; i < 6; ++i) {
    step = backoff.failed(t0 + std::chrono::seconds(1 + i));
    delays.push_back(static_cast<long>(step.delay.count()));
    CHECK_FALSE(step.log);
  }
  CHECK(delays == std::vector<long>{100, 200, 400, 500, 500, 500});
  step = backoff.failed(t0 + 10s);
  CHECK(step.log);
  CHECK(step.failures == 7);  // the six unlogged ones and this one
  CHECK(backoff.succeeded() == 8);
  CHECK_FALSE(backoff.backing_off());
  step = backoff.failed(t0 + 11s);
  CHECK(step.delay == 50ms);
  CHECK_FALSE(step.log);  // within 10 s of the last line
  CHECK(backoff.succeeded() == 0);  // nothing was logged in that streak: nothing to say
}

TEST_CASE("only the want of descriptors or kernel memory makes accept back off", "[limits]") {
  CHECK(out_of_descriptors(EMFILE));
  CHECK(out_of_descriptors(ENFILE));
  CHECK(out_of_descriptors(ENOBUFS));
  CHECK(out_of_descriptors(ENOMEM));
  CHECK_FALSE(out_of_descriptors(ECONNABORTED));
  CHECK_FALSE(out_of_descriptors(EINTR));
}
