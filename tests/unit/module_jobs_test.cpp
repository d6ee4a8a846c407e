// ModuleJobs, one module's job records, without a module: the steps are
// handed in as a slot would report them. Running steps as calls, and the
// records crossing an upgrade or a snapshot with a real module, are
// jobs_test's. A JobRunner that finds no slot shows what was scheduled.
#include <algorithm>
#include <mutex>
#include <stdexcept>

#include <catch2/catch.hpp>

#include "molt/host/slot/module_jobs.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;
using host::JobRecord;
using host::JobState;
using host::ModuleJobs;
using test::wait_until;

namespace {

const api::ModuleVersion v2{2};

/// A runner with one worker that steps nothing: it counts, by module, the
/// steps it was asked for.
struct Schedule {
  std::mutex mutex;
  std::map<std::string, int, std::less<>> asked;
  std::shared_ptr<host::JobRunner> runner =
      std::make_shared<host::JobRunner>(host::JobRunnerOptions{1, [this](std::string_view module) {
                                                                 std::lock_guard lock(mutex);
                                                                 ++asked[std::string(module)];
                                                                 return std::shared_ptr<host::ModuleSlot>();
                                                               }});
  ~Schedule() { runner->stop(); }

  /// How many steps of `module` were scheduled until now: a marker scheduled
  /// last is stepped after them (one worker, in due order).
  int steps_of(const std::string& module) {
    runner->schedule("marker", "marker");
    REQUIRE(wait_until([&] {
      std::lock_guard lock(mutex);
      return asked["marker"] > 0;
    }));
    std::lock_guard lock(mutex);
    asked["marker"] = 0;
    return asked[module];
  }
};

JobRecord record_of(const ModuleJobs& jobs, const std::string& name) {
  for (const auto& record : jobs.records())
    if (record.name == name) return record;
  FAIL("no record of job " << name);
  return {};
}

bool has(const ModuleJobs& jobs, const std::string& name) {
  const auto records = jobs.records();
  return std::any_of(records.begin(), records.end(), [&](const JobRecord& record) { return record.name == name; });
}

api::JobStep progress(std::uint64_t done, std::uint64_t total, std::chrono::milliseconds pause = 0ms) {
  api::JobStep step;
  step.done = done;
  step.total = total;
  step.pause = pause;
  return step;
}

JobRecord ended(std::string name, JobState state, std::int64_t updated_ms) {
  JobRecord record;
  record.name = std::move(name);
  record.state = state;
  record.updated_ms = updated_ms;
  return record;
}

}  // namespace

TEST_CASE("a started job is recorded as running and scheduled, and starting it again while it runs is refused",
          "[jobs]") {
  Schedule schedule;
  ModuleJobs jobs("m", test::test_logger("m"), schedule.runner);
  REQUIRE(jobs.start("j"));
  const JobRecord record = record_of(jobs, "j");
  CHECK(record.state == JobState::Running);
  CHECK(record.steps == 0);
  CHECK(record.started_ms > 0);
  CHECK(record.updated_ms == record.started_ms);
  CHECK(jobs.running("j"));
  CHECK_FALSE(jobs.running("other"));

  CHECK_FALSE(jobs.start("j"));
  CHECK(jobs.records().size() == 1);
  CHECK(schedule.steps_of("m") == 1);
}

TEST_CASE("a step's progress is recorded and the job is stepped again after the pause it asked for", "[jobs]") {
  ModuleJobs jobs("m", test::test_logger("m"), nullptr);
  REQUIRE(jobs.start("j"));
  const auto next = jobs.record_step("j", v2, std::nullopt, progress(3, 10, 25ms));
  CHECK(next.again);
  CHECK(next.pause == 25ms);
  const JobRecord record = record_of(jobs, "j");
  CHECK(record.steps == 1);
  CHECK(record.done == 3);
  CHECK(record.total == 10);
  CHECK(record.state == JobState::Running);

  CHECK(jobs.record_step("j", v2, std::nullopt, progress(4, 10, -5ms)).pause == 0ms);
  CHECK_FALSE(jobs.record_step("gone", v2, std::nullopt, progress(1, 1)).again);
}

TEST_CASE("a step that throws fails the job, naming the step, the version and the reason", "[jobs]") {
  ModuleJobs jobs("m", test::test_logger("m"), nullptr);
  REQUIRE(jobs.start("j"));
  jobs.record_step("j", v2, std::nullopt, progress(1, 10));
  const auto next = jobs.record_step("j", v2, "run_job_step threw: disk full", progress(9, 9));
  CHECK_FALSE(next.again);
  const JobRecord record = record_of(jobs, "j");
  CHECK(record.state == JobState::Failed);
  CHECK(record.note == "step 2 on v2: run_job_step threw: disk full");
  CHECK(record.done == 1);  // a failed step's progress is not taken
  CHECK_FALSE(jobs.running("j"));
}

TEST_CASE("a finished job keeps the first 200 characters of its summary, and starts anew", "[jobs]") {
  ModuleJobs jobs("m", test::test_logger("m"), nullptr);
  REQUIRE(jobs.start("j"));
  api::JobStep last = progress(5, 5);
  last.finished = true;
  last.summary = std::string(300, 's');
  CHECK_FALSE(jobs.record_step("j", v2, std::nullopt, last).again);
  CHECK(record_of(jobs, "j").state == JobState::Finished);
  CHECK(record_of(jobs, "j").note == std::string(200, 's'));

  REQUIRE(jobs.start("j"));
  CHECK(record_of(jobs, "j").state == JobState::Running);
  CHECK(record_of(jobs, "j").steps == 0);
  CHECK(record_of(jobs, "j").note.empty());
}

TEST_CASE("cancel stops a running job, restart runs a failed or cancelled one again", "[jobs]") {
  Schedule schedule;
  ModuleJobs jobs("m", test::test_logger("m"), schedule.runner);
  REQUIRE(jobs.start("j"));
  CHECK(schedule.steps_of("m") == 1);  // stepped (by a runner that finds no slot) before the restart below
  jobs.record_step("j", v2, std::nullopt, progress(3, 10));

  const auto missing = jobs.cancel("nope");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().module == "m");
  CHECK(missing.error().phase == host::Phase::Call);
  CHECK(missing.error().reason == "no job 'nope'");

  REQUIRE(jobs.cancel("j"));
  CHECK(record_of(jobs, "j").state == JobState::Cancelled);
  CHECK(record_of(jobs, "j").note == "cancelled by the operator at 3/10");
  CHECK(jobs.cancel("j").error().reason == "job 'j' is cancelled, not running");
  // The step in progress at the cancel lands, and is the last.
  CHECK_FALSE(jobs.record_step("j", v2, std::nullopt, progress(4, 10)).again);
  CHECK(record_of(jobs, "j").done == 4);

  REQUIRE(jobs.restart("j"));
  CHECK(record_of(jobs, "j").state == JobState::Running);
  CHECK(record_of(jobs, "j").note.empty());
  CHECK(record_of(jobs, "j").steps == 2);  // a restart continues the count
  CHECK(jobs.restart("j").error().reason == "job 'j' is running; only a failed or cancelled job restarts");
  CHECK(jobs.restart("nope").error().reason == "no job 'nope'");
  CHECK(schedule.steps_of("m") == 2);  // and the restart
}

TEST_CASE("a module has at most 256 job records: the one that ended longest ago goes, and when all run none starts",
          "[jobs]") {
  ModuleJobs jobs("m", test::test_logger("m"), nullptr);
  std::vector<JobRecord> records;
  for (std::size_t i = 0; i < ModuleJobs::kMaxJobs - 2; ++i)
    records.push_back(ended("r" + std::to_string(i), JobState::Running, 1));
  records.push_back(ended("finished", JobState::Finished, 200));
  records.push_back(ended("failed", JobState::Failed, 100));
  jobs.replace(records);
  REQUIRE(jobs.records().size() == ModuleJobs::kMaxJobs);

  REQUIRE(jobs.start("new"));
  CHECK(jobs.records().size() == ModuleJobs::kMaxJobs);
  CHECK_FALSE(has(jobs, "failed"));
  CHECK(has(jobs, "finished"));
  REQUIRE(jobs.start("newer"));
  CHECK_FALSE(has(jobs, "finished"));
  CHECK_THROWS_AS(jobs.start("newest"), std::length_error);
  CHECK(jobs.records().size() == ModuleJobs::kMaxJobs);
}

TEST_CASE("replace keeps the first record of each name, at most 256, and schedules the running ones", "[jobs]") {
  Schedule schedule;
  ModuleJobs jobs("m", test::test_logger("m"), schedule.runner);
  REQUIRE(jobs.start("before"));
  CHECK(schedule.steps_of("m") == 1);

  jobs.replace({ended("a", JobState::Running, 1), ended("b", JobState::Finished, 1), ended("c", JobState::Running, 1),
                ended("a", JobState::Failed, 1)});
  const auto records = jobs.records();
  REQUIRE(records.size() == 3);
  CHECK(records[0].name == "a");
  CHECK(records[0].state == JobState::Running);
  CHECK(records[1].name == "b");
  CHECK(records[2].name == "c");
  CHECK_FALSE(jobs.running("before"));   // replaced, not merged
  CHECK(schedule.steps_of("m") == 1 + 2);  // a and c

  std::vector<JobRecord> many;
  for (int i = 0; i < 300; ++i) many.push_back(ended("j" + std::to_string(1000 + i), JobState::Finished, 1));
  jobs.replace(many);
  CHECK(jobs.records().size() == ModuleJobs::kMaxJobs);
  CHECK(jobs.records().back().name == "j1255");
}
