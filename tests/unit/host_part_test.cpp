// The host part's text (host_part.hpp): what snapshots hold besides the
// state. Snapshots written by an older moltd must still boot, so the text is
// pinned: a fixture's host part reads back and writes out byte for byte, and
// a part with timers is written exactly as before.
#include <filesystem>

#include <catch2/catch.hpp>

#include "molt/host/slot/host_part.hpp"
#include "molt/host/state/state_blob.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;
using host::HostPart;
using host::JobRecord;
using host::JobState;
using host::SavedTimer;
using host::TimerKind;

TEST_CASE("the host part of a snapshot from an older moltd reads back and writes out byte for byte", "[host_part]") {
  test::TempDir temp;  // a copy: a test never touches the fixture itself
  const auto copy = temp.path() / "state.molt";
  std::filesystem::copy_file(test::fixture_root() / "batch" / "1-2" / "state.molt", copy);
  const auto blob = host::read_state_file(copy, 1 << 20);
  REQUIRE(blob);
  REQUIRE_FALSE(blob->host.empty());

  const auto part = host::decode_host_part(blob->host, "batch");
  REQUIRE(part);
  REQUIRE(part->jobs.size() == 2);
  CHECK(part->jobs[0].name == "done");
  CHECK(part->jobs[0].state == JobState::Finished);
  CHECK(part->jobs[1].name == "sum");
  CHECK(part->jobs[1].state == JobState::Cancelled);
  CHECK(part->jobs[1].done == 13);
  CHECK(part->jobs[1].total == 100);
  CHECK(part->timers.empty());
  CHECK(host::encode_host_part(part.value()) == blob->host);
}

TEST_CASE("jobs and timers are written with their keys in order, a one-shot with period 0", "[host_part]") {
  JobRecord job;
  job.name = "j";
  job.done = 1;
  job.total = 2;
  job.steps = 3;
  job.note = "n";
  job.started_ms = 10;
  job.updated_ms = 20;
  const SavedTimer periodic{"p", TimerKind::Periodic, 1000ms, 250ms};
  const SavedTimer once{"o", TimerKind::Once, 0ms, 5ms};
  const HostPart part{{job}, {periodic, once}};
  const std::string text = host::encode_host_part(part);
  CHECK(text ==
        R"({"jobs":[{"done":1,"name":"j","note":"n","started_ms":10,"state":"running","steps":3,"total":2,)"
        R"("updated_ms":20}],)"
        R"("timers":[{"due_in_ms":250,"name":"p","period_ms":1000},{"due_in_ms":5,"name":"o","period_ms":0}]})");

  const auto back = host::decode_host_part(text, "m");
  REQUIRE(back);
  REQUIRE(back->jobs.size() == 1);
  CHECK(back->jobs[0].steps == 3);
  REQUIRE(back->timers.size() == 2);
  CHECK(back->timers[0].kind == TimerKind::Periodic);
  CHECK(back->timers[0].period == 1000ms);
  CHECK(back->timers[0].due_in == 250ms);
  CHECK(back->timers[1].kind == TimerKind::Once);
  CHECK(back->timers[1].due_in == 5ms);
  CHECK(host::encode_host_part(back.value()) == text);
}

TEST_CASE("nothing to keep is no text, and no text is nothing to restore", "[host_part]") {
  CHECK(host::encode_host_part(HostPart{}).empty());
  const auto empty = host::decode_host_part("", "m");
  REQUIRE(empty);
  CHECK(empty->jobs.empty());
  CHECK(empty->timers.empty());
  CHECK(host::encode_host_part(HostPart{{}, {SavedTimer{"t", TimerKind::Once, 0ms, 0ms}}}) ==
        R"({"jobs":[],"timers":[{"due_in_ms":0,"name":"t","period_ms":0}]})");
}

TEST_CASE("a saved period of 0 or less is a one-shot timer", "[host_part]") {
  const auto part =
      host::decode_host_part(R"({"jobs":[],"timers":[{"due_in_ms":7,"name":"t","period_ms":-3}]})", "m");
  REQUIRE(part);
  REQUIRE(part->timers.size() == 1);
  CHECK(part->timers[0].kind == TimerKind::Once);
  CHECK(part->timers[0].period == 0ms);
  CHECK(part->timers[0].due_in == 7ms);
}

TEST_CASE("a malformed host part is an error naming the module", "[host_part]") {
  const char* malformed[] = {
      R"({"jobs":[{"name":1}],"timers":[]})",  // a job's name is text
      R"({"jobs":[]})",                        // no timers
      R"({"jobs":[{"name":"j","state":"paused","done":0,"total":0,"steps":0,"note":"","started_ms":0,)"
      R"("updated_ms":0}],"timers":[]})",
      R"({"jobs":[],"timers":[{"name":"t","period_ms":"1s","due_in_ms":0}]})",
      "not JSON",
  };
  for (const char* text : malformed) {
    INFO(text);
    const auto part = host::decode_host_part(text, "kv");
    REQUIRE_FALSE(part);
    CHECK(part.error().module == "kv");
    CHECK(part.error().phase == host::Phase::Snapshot);
    CHECK_THAT(part.error().reason, Catch::StartsWith("jobs and timers not restored: "));
  }
}
