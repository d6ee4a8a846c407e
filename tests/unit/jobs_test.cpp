// Jobs and one-shot timers at the slot level, with the probe module: a job is
// stepped to the end on the runner's workers; a throwing step fails the job
// and leaves the module serving; cancel and restart; the records and timers
// go out with the state (host_part) and come back with it; an upgrade between
// two steps hands the job to the new version.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "molt/host/slot/jobs.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/host/upgrade/transaction.hpp"
#include "test_support.hpp"

using namespace molt;
using host::JobState;
using test::call_ok;
using test::wait_until;
using Json = nlohmann::json;

namespace {

/// A runner that finds one slot, once it is set.
struct Runner {
  std::shared_ptr<host::ModuleSlot> slot;
  std::shared_ptr<host::JobRunner> runner = std::make_shared<host::JobRunner>(host::JobRunnerOptions{
      2, [this](std::string_view module) { return slot && slot->name() == module ? slot : nullptr; }});
  ~Runner() { runner->stop(); }
};

std::optional<host::JobRecord> job(const host::ModuleSlot& slot, const std::string& name) {
  for (const auto& record : slot.jobs())
    if (record.name == name) return record;
  return std::nullopt;
}

std::size_t items_with(host::ModuleSlot& slot, const std::string& prefix) {
  const Json state = Json::parse(call_ok(slot, "GET", "/probe"));
  std::size_t n = 0;
  for (const auto& item : state["items"]) n += item.get<std::string>().starts_with(prefix) ? 1 : 0;
  return n;
}

bool in_state(const host::ModuleSlot& slot, const std::string& name, JobState state) {
  const auto record = job(slot, name);
  return record && record->state == state;
}

}  // namespace

TEST_CASE("a job is stepped on the runner until it finishes, each step once", "[jobs]") {
  test::Harness h;
  Runner r;
  r.slot = h.start(test::probe_path(1), "probe", {}, r.runner);
  call_ok(*r.slot, "POST", "/probe/job?name=fill-50");
  REQUIRE(wait_until([&] { return in_state(*r.slot, "fill-50", JobState::Finished); }));
  const auto record = *job(*r.slot, "fill-50");
  CHECK(record.done == 50);
  CHECK(record.total == 50);
  CHECK(record.steps == 50);
  CHECK(record.note == "50 items");
  CHECK(items_with(*r.slot, "fill-50:") == 50);

  // Starting it again while it runs is refused; after it finished, it starts anew.
  call_ok(*r.slot, "POST", "/probe/job?name=fill-50");
  CHECK(wait_until([&] { return in_state(*r.slot, "fill-50", JobState::Finished); }));
  CHECK(job(*r.slot, "fill-50")->steps == 1);  // the checkpoint (50 items) says it is done: one step
}

TEST_CASE("a step that throws fails the job with the reason, the module serves, restart continues it", "[jobs]") {
  test::Harness h;
  Runner r;
  r.slot = h.start(test::probe_path(1), "probe", {}, r.runner);
  call_ok(*r.slot, "POST", "/probe/job?name=boom-5");
  REQUIRE(wait_until([&] { return in_state(*r.slot, "boom-5", JobState::Failed); }));
  const auto failed = *job(*r.slot, "boom-5");
  CHECK_THAT(failed.note, Catch::Contains("step 3 on v1") && Catch::Contains("step 3 of boom-5 fails on purpose"));
  CHECK(failed.done == 2);
  CHECK(items_with(*r.slot, "boom-5:") == 2);  // the failed step left the state as it was
  call_ok(*r.slot, "GET", "/probe");             // and the module serves

  CHECK_FALSE(r.slot->cancel_job("boom-5"));  // not running
  REQUIRE(r.slot->restart_job("boom-5"));
  REQUIRE(wait_until([&] { return !in_state(*r.slot, "boom-5", JobState::Running); }));
  CHECK(in_state(*r.slot, "boom-5", JobState::Failed));  // it fails again at the same checkpoint: nothing skipped
  CHECK(items_with(*r.slot, "boom-5:") == 2);
  CHECK_FALSE(r.slot->restart_job("nope"));
}

TEST_CASE("cancel stops a job after its step in progress, restart continues from its checkpoint", "[jobs]") {
  test::Harness h;
  Runner r;
  r.slot = h.start(test::probe_path(1), "probe", {}, r.runner);
  call_ok(*r.slot, "POST", "/probe/job?name=long-100000");
  REQUIRE(wait_until([&] { return job(*r.slot, "long-100000")->done >= 10; }));
  REQUIRE(r.slot->cancel_job("long-100000"));
  CHECK(in_state(*r.slot, "long-100000", JobState::Cancelled));
  const std::size_t at_cancel = items_with(*r.slot, "long-100000:");
  CHECK(at_cancel < 100000);
  // At most the step in progress lands after the cancel, then nothing more.
  const std::size_t settled = items_with(*r.slot, "long-100000:");
  CHECK(settled <= at_cancel + 1);
  CHECK(items_with(*r.slot, "long-100000:") == settled);

  REQUIRE(r.slot->restart_job("long-100000"));
  REQUIRE(wait_until([&] { return items_with(*r.slot, "long-100000:") > settled + 10; }));
  REQUIRE(r.slot->cancel_job("long-100000"));
}

TEST_CASE("the host part (jobs, timers) is saved with the state and restores running jobs", "[jobs]") {
  test::Harness h;
  Runner first;
  first.slot = h.start(test::probe_path(1), "probe", {}, first.runner);
  call_ok(*first.slot, "POST", "/probe/job?name=slow-100000");
  call_ok(*first.slot, "POST", "/probe/job?name=quick-3");
  call_ok(*first.slot, "POST", "/probe/once?name=later&ms=600000");
  REQUIRE(wait_until([&] { return in_state(*first.slot, "quick-3", JobState::Finished); }));
  REQUIRE(wait_until([&] { return job(*first.slot, "slow-100000")->done >= 5; }));
  first.runner->stop();  // as moltd does before its last snapshots

  auto blob = first.slot->save_state(std::chrono::seconds(5));
  REQUIRE(blob);
  REQUIRE_FALSE(blob->host.empty());
  const auto saved_done = items_with(*first.slot, "slow-100000:");
  // Through the file format, as a snapshot goes.
  auto decoded = host::decode_state_file(host::encode_state_file(blob.value()), UINT64_MAX);
  REQUIRE(decoded);
  CHECK(decoded->host == blob->host);

  Runner second;
  second.slot = h.start(test::probe_path(1), "probe", {}, second.runner);
  const auto restored = host::restore(*second.slot, h.loader, decoded.value());
  REQUIRE(restored.outcome == host::Outcome::Succeeded);
  REQUIRE(second.slot->restore_host_part(decoded->host));
  CHECK(in_state(*second.slot, "quick-3", JobState::Finished));
  CHECK(second.slot->timers() == std::vector<std::string>{"later"});
  // The running job continues from the checkpoint the state holds.
  REQUIRE(wait_until([&] { return job(*second.slot, "slow-100000")->done > saved_done + 5; }));
  REQUIRE(second.slot->cancel_job("slow-100000"));
  call_ok(*second.slot, "GET", "/probe");  // after the step in progress, if any
  CHECK(items_with(*second.slot, "slow-100000:") == job(*second.slot, "slow-100000")->done);

  SECTION("an altered host part is refused") {
    std::string file = host::encode_state_file(blob.value());
    const auto at = file.find("\"quick-3\"");
    REQUIRE(at != std::string::npos);
    file[at + 1] = 'Q';
    const auto damaged = host::decode_state_file(file, UINT64_MAX);
    REQUIRE_FALSE(damaged);
    CHECK_THAT(damaged.error().reason, Catch::Contains("host's part"));
  }
  SECTION("malformed text changes nothing") {
    CHECK_FALSE(second.slot->restore_host_part("{\"jobs\":[{\"name\":1}],\"timers\":[]}"));
    CHECK(in_state(*second.slot, "quick-3", JobState::Finished));
  }
}

TEST_CASE("a one-shot timer fires once, and an upgrade between two steps hands the job to the new version", "[jobs]") {
  test::Harness h;
  Runner r;
  r.slot = h.start(test::probe_path(1), "probe", {}, r.runner);
  call_ok(*r.slot, "POST", "/probe/once?name=ping&ms=1");
  REQUIRE(wait_until([&] { return items_with(*r.slot, "timer:ping") == 1; }));
  CHECK(r.slot->timers().empty());  // gone once fired

  call_ok(*r.slot, "POST", "/probe/job?name=span-100000");
  REQUIRE(wait_until([&] { return job(*r.slot, "span-100000")->done >= 5; }));
  const auto report = host::upgrade(*r.slot, h.loader, test::probe_path(2));
  REQUIRE(report.outcome == host::Outcome::Succeeded);
  const auto at_upgrade = job(*r.slot, "span-100000")->steps;
  REQUIRE(wait_until([&] { return job(*r.slot, "span-100000")->steps > at_upgrade + 5; }));
  CHECK(in_state(*r.slot, "span-100000", JobState::Running));
  REQUIRE(r.slot->cancel_job("span-100000"));
  // v2 admits calls concurrently: a step in progress may still be finishing.
  CHECK(wait_until([&] { return items_with(*r.slot, "span-100000:") == job(*r.slot, "span-100000")->done; }));
  CHECK(items_with(*r.slot, "timer:ping") == 1);  // and the one-shot did not fire again
}
