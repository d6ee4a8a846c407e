// ModuleTimers, one module's timers by name, on a real TimerService (one
// thread). The Due handler stands in for the slot: it claims each firing and
// counts the ones the slot would run in the module. That the table is the
// slot's and keeps firing across upgrades is handoff_test's and jobs_test's.
#include <atomic>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>

#include "molt/host/slot/module_timers.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;
using host::SavedTimer;
using host::TimerKind;
using host::TimerService;
using test::wait_until;

namespace {

/// A module's timer table with the firings it ran, by timer name.
struct Table {
  std::shared_ptr<TimerService> service = std::make_shared<TimerService>();
  std::mutex mutex;
  std::map<std::string, int> runs;
  std::map<std::string, TimerService::Id> last_id;
  /// Runs before each claim, on the timer thread (a slot takes its gate there).
  std::function<void(const std::string&)> before_claim = [](const std::string&) {};
  std::atomic<int> returned{0};  ///< firings handled, claimed or not
  // Last: destroyed first, waiting for a firing in progress, which uses the above.
  host::ModuleTimers timers{service, [this](const std::string& name, TimerService::Id id) {
                              before_claim(name);
                              if (timers.claim(name, id)) {
                                std::lock_guard lock(mutex);
                                ++runs[name];
                                last_id[name] = id;
                              }
                              ++returned;
                            }};

  int ran(const std::string& name) {
    std::lock_guard lock(mutex);
    return runs[name];
  }
  TimerService::Id id_of(const std::string& name) {
    std::lock_guard lock(mutex);
    return last_id[name];
  }
  /// Waits until every firing due by now has returned: a one-shot on the
  /// same timer thread, due now, runs after them.
  void settle() {
    auto done = std::make_shared<std::atomic<bool>>(false);
    service->after(0ms, [done](TimerService::Id) { done->store(true); });
    REQUIRE(wait_until([&] { return done->load(); }));
  }
};

std::vector<std::string> names(std::initializer_list<const char*> list) { return {list.begin(), list.end()}; }

}  // namespace

TEST_CASE("a periodic timer fires again and again until it is cancelled", "[timers]") {
  Table t;
  t.timers.set("tick", TimerKind::Periodic, 1ms);
  REQUIRE(wait_until([&] { return t.ran("tick") >= 3; }));
  CHECK(t.timers.names() == names({"tick"}));

  t.timers.cancel("tick");
  CHECK(t.timers.names().empty());
  t.settle();  // a firing claimed before the cancel may still be running until here
  const int at_cancel = t.ran("tick");
  t.settle();
  CHECK(t.ran("tick") == at_cancel);
}

TEST_CASE("a one-shot timer fires once, then is gone", "[timers]") {
  Table t;
  t.timers.set("ping", TimerKind::Once, 1ms);
  CHECK(t.timers.names() == names({"ping"}));
  REQUIRE(wait_until([&] { return t.ran("ping") == 1; }));
  CHECK(t.timers.names().empty());
  t.settle();
  CHECK(t.ran("ping") == 1);
}

TEST_CASE("setting a timer again replaces it: a firing of the one replaced is not claimed", "[timers]") {
  Table t;
  t.timers.set("a", TimerKind::Periodic, 1ms);
  REQUIRE(wait_until([&] { return t.ran("a") >= 1; }));
  const TimerService::Id replaced = t.id_of("a");

  t.timers.set("a", TimerKind::Periodic, 1h);
  CHECK_FALSE(t.timers.claim("a", replaced));
  t.settle();
  const int at_replace = t.ran("a");
  t.settle();
  CHECK(t.ran("a") == at_replace);  // the new one is an hour away
  REQUIRE(t.timers.saved().size() == 1);
  CHECK(t.timers.saved()[0].period == 1h);

  SECTION("by a one-shot of the same name") {
    t.timers.set("a", TimerKind::Once, 1ms);
    REQUIRE(wait_until([&] { return t.ran("a") == at_replace + 1; }));
    CHECK(t.timers.names().empty());
  }
  SECTION("cancelling a name that is not set changes nothing") {
    t.timers.cancel("b");
    CHECK(t.timers.names() == names({"a"}));
  }
}

TEST_CASE("saved timers hold their kind, their period and the time they have left", "[timers]") {
  Table t;
  t.timers.set("p", TimerKind::Periodic, 1h);
  t.timers.set("o", TimerKind::Once, 30min);
  const auto saved = t.timers.saved();
  REQUIRE(saved.size() == 2);
  CHECK(saved[0].name == "o");
  CHECK(saved[0].kind == TimerKind::Once);
  CHECK(saved[0].period == 0ms);
  CHECK(saved[0].due_in <= 30min);
  CHECK(saved[0].due_in > 29min);
  CHECK(saved[1].name == "p");
  CHECK(saved[1].kind == TimerKind::Periodic);
  CHECK(saved[1].period == 1h);
  CHECK(saved[1].due_in <= 1h);
  CHECK(saved[1].due_in > 59min);
}

TEST_CASE("a restored periodic timer fires first after the time it had left, then every period", "[timers]") {
  Table t;
  t.timers.restore({SavedTimer{"p", TimerKind::Periodic, 1h, 1ms}});
  REQUIRE(wait_until([&] { return t.ran("p") == 1; }));
  const auto saved = t.timers.saved();
  REQUIRE(saved.size() == 1);
  CHECK(saved[0].kind == TimerKind::Periodic);
  CHECK(saved[0].period == 1h);
  CHECK(saved[0].due_in > 59min);  // next due one period after that first firing
}

TEST_CASE("restoring replaces the timers of the same names and keeps the others", "[timers]") {
  Table t;
  t.timers.set("keep", TimerKind::Periodic, 1h);
  t.timers.set("both", TimerKind::Once, 1h);
  t.timers.restore({SavedTimer{"both", TimerKind::Periodic, 2h, 90min}, SavedTimer{"new", TimerKind::Once, 0ms, 1ms}});
  REQUIRE(wait_until([&] { return t.ran("new") == 1; }));
  CHECK(t.timers.names() == names({"both", "keep"}));
  const auto saved = t.timers.saved();
  CHECK(saved[0].kind == TimerKind::Periodic);
  CHECK(saved[0].period == 2h);
  CHECK(saved[0].due_in <= 90min);
  CHECK(saved[0].due_in > 89min);
}

TEST_CASE("cancel_all waits for a firing in progress, which then finds its timer gone", "[timers]") {
  Table t;
  std::atomic<bool> inside{false}, release{false};
  t.before_claim = [&](const std::string&) {
    inside = true;
    while (!release) std::this_thread::yield();
  };
  t.timers.set("slow", TimerKind::Once, 0ms);
  REQUIRE(wait_until([&] { return inside.load(); }));

  auto cancelling = std::async(std::launch::async, [&] {
    t.timers.cancel_all();
    return t.returned.load();  // firings that had returned by then
  });
  REQUIRE(wait_until([&] { return t.timers.names().empty(); }));  // cancel_all took the table
  release = true;
  CHECK(cancelling.get() == 1);  // it returned only after the firing did
  CHECK(t.ran("slow") == 0);     // which claimed nothing
}
