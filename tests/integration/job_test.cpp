// Jobs through the real moltd, with the batch module: a chunked checksum job
// runs through 20 upgrades and downgrades and two host restarts (SIGTERM,
// then kill -9 after a snapshot) and still records every chunk exactly once;
// a step that throws fails the job and it can be restarted; a step that
// overruns the quiesce timeout makes the upgrade roll back while the job
// carries on; moltctl jobs lists, cancels and restarts.
#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "molt/host/state/state_blob.hpp"

using namespace molt::test;
using Json = nlohmann::json;

namespace {

/// The checksum the job must arrive at, computed here independently of the
/// module: the sum (mod 2^64) of splitmix64(i) over every item.
std::string expected_checksum(std::uint64_t items) {
  std::uint64_t sum = 0;
  for (std::uint64_t i = 0; i < items; ++i) {
    std::uint64_t z = i + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    sum += z ^ (z >> 31);
  }
  return std::to_string(sum);
}

Daemon batch_daemon() {
  return Daemon({{"batch", plugin_path("batch", 1), 1}});
}

/// The host's record of the job, from `moltctl jobs batch --json`.
Json record(const Daemon& d, const std::string& job) {
  const auto result = d.ctl({"jobs", "batch", "--json"});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  const Json reply = Json::parse(result.out);
  for (const auto& entry : reply["jobs"])
    if (entry["name"] == job) return entry;
  FAIL("no job " << job << " in " << result.out);
  return {};
}

std::uint64_t chunks_done(const Daemon& d, const std::string& job) {
  return d.get_json("/batch?job=" + job)["chunks_done"].get<std::uint64_t>();
}

int version_of(const Daemon& d) { return d.status()["modules"][0]["version"].get<int>(); }

/// Waits (up to a minute) for the job to leave "running", and returns its record.
Json wait_done(const Daemon& d, const std::string& job) {
  Json last;
  const bool ended = wait_until([&] {
    last = record(d, job);
    return last["state"] != "running";
  }, std::chrono::seconds(60));
  INFO(last.dump());
  REQUIRE(ended);
  return last;
}

/// Every chunk recorded once, and the checksum right.
void check_result(const Daemon& d, const std::string& job, std::uint64_t items, std::uint64_t chunks) {
  const Json result = d.get_json("/batch?job=" + job);
  INFO(result.dump());
  CHECK(result["chunks_done"] == chunks);
  CHECK(result["recorded"] == chunks);
  CHECK(result["duplicates"] == 0);
  CHECK(result["checksum"] == expected_checksum(items));
}

}  // namespace

TEST_CASE("a job runs through 20 upgrades and downgrades and two restarts, every chunk is recorded exactly once",
          "[jobs]") {
  Daemon d = batch_daemon();
  d.install(plugin_path("batch", 2), "batch-2.so");
  d.start();
  // 1200 chunks, one every 50 ms or more: at least 60 s, far longer than what follows before the pace drops,
  // even under the sanitizers on a slow machine (20 s was not, once).
  constexpr std::uint64_t kItems = 600000, kChunks = 1200;
  REQUIRE(d.http_code("POST", "/batch/start?job=sum&items=600000&chunk=500&pace_ms=50") == "200");

  std::uint64_t seen = 0;
  const auto moves_on = [&] {
    const bool moved = wait_until([&] { return chunks_done(d, "sum") > seen; });
    seen = chunks_done(d, "sum");
    return moved;
  };
  for (int i = 0; i < 20; ++i) {
    REQUIRE(moves_on());  // on every version, the job goes on from where the last one stopped
    const auto result = i % 2 == 0 ? d.ctl({"reload", "batch"}) : d.ctl({"rollback", "batch"});
    INFO("change " << i << ": " << result.out << result.err);
    REQUIRE(result.exit_code == 0);
    CHECK(version_of(d) == (i % 2 == 0 ? 2 : 1));
  }
  REQUIRE(moves_on());

  // Restart 1, SIGTERM: the steps stop, then the snapshot; nothing is redone or lost.
  REQUIRE(d.stop() == 0);
  d.start();
  CHECK(chunks_done(d, "sum") >= seen);
  CHECK(record(d, "sum")["state"] == "running");
  REQUIRE(moves_on());

  // Restart 2, kill -9 after a snapshot: back to the snapshot, and the steps since then run again.
  REQUIRE(d.ctl({"save"}).exit_code == 0);
  const std::uint64_t saved = seen;  // the snapshot holds at least this much
  REQUIRE(moves_on());  // now at or past the snapshot...
  REQUIRE(moves_on());  // ...and now past it: these steps are lost with the crash
  REQUIRE(record(d, "sum")["state"] == "running");  // the test proves nothing if the job ended already
  d.kill9();
  // What the last completed snapshot holds: the job's record, saved with the state.
  const auto snapshot = molt::host::read_state_file(d.run_dir() / "snapshots" / "batch.molt", UINT64_MAX);
  REQUIRE(snapshot);
  const Json host_part = Json::parse(snapshot->host);
  REQUIRE(host_part["jobs"].size() == 1);
  const std::uint64_t in_snapshot = host_part["jobs"][0]["done"].get<std::uint64_t>();
  CHECK(in_snapshot >= saved);
  CHECK(in_snapshot < seen);  // the crash lost the steps after it: they run again, their results not doubled
  d.start();
  CHECK(chunks_done(d, "sum") >= in_snapshot);
  CHECK(record(d, "sum")["state"] == "running");
  CHECK_THAT(d.log(), Catch::Contains("job 'sum' continues from its checkpoint"));

  REQUIRE(d.http_code("POST", "/batch/pace?job=sum&ms=0") == "200");
  const Json finished = wait_done(d, "sum");
  CHECK(finished["state"] == "finished");
  CHECK(finished["done"] == kChunks);
  CHECK(finished["total"] == kChunks);
  CHECK_THAT(finished["note"].get<std::string>(), Catch::Contains("checksum " + expected_checksum(kItems)));
  check_result(d, "sum", kItems, kChunks);
  CHECK(d.stop() == 0);
}

TEST_CASE("a job whose step throws is marked failed with the reason, the module serves, restart finishes it",
          "[jobs]") {
  Daemon d = batch_daemon();
  d.start();
  REQUIRE(d.http_code("POST", "/batch/fail-once?chunk=50") == "200");
  REQUIRE(d.http_code("POST", "/batch/start?job=x&items=10000&chunk=100") == "200");

  const Json failed = wait_done(d, "x");
  CHECK(failed["state"] == "failed");
  CHECK_THAT(failed["note"].get<std::string>(), Catch::Contains("chunk 50 failed on purpose"));
  CHECK(failed["done"] == 50);
  CHECK(chunks_done(d, "x") == 50);        // the failed step changed nothing
  CHECK(d.http_code("GET", "/batch") == "200");  // and the module serves
  CHECK_THAT(d.log(), Catch::Contains("job 'x' failed at step 51 on v1"));
  const auto listed = d.ctl({"jobs"});
  CHECK_THAT(listed.out, Catch::Contains("batch") && Catch::Contains("failed") && Catch::Contains("50/100 (50%)"));

  const auto restarted = d.ctl({"jobs", "restart", "batch", "x"});
  INFO(restarted.out << restarted.err);
  REQUIRE(restarted.exit_code == 0);
  CHECK_THAT(restarted.out, Catch::StartsWith("batch x: "));  // (its steps may have begun already)
  CHECK(wait_done(d, "x")["state"] == "finished");
  check_result(d, "x", 10000, 100);

  // What cannot be done is refused in one line, with exit 1.
  for (const auto& args : {std::vector<std::string>{"jobs", "restart", "batch", "x"},
                           std::vector<std::string>{"jobs", "cancel", "batch", "x"},
                           std::vector<std::string>{"jobs", "cancel", "batch", "nope"},
                           std::vector<std::string>{"jobs", "cancel", "nope", "x"}}) {
    const auto refused = d.ctl(args);
    INFO(args[1] << ' ' << args[2] << ' ' << args[3] << ": " << refused.err);
    CHECK(refused.exit_code == 1);
    CHECK(std::count(refused.err.begin(), refused.err.end(), '\n') == 1);
  }
  CHECK(d.stop() == 0);
}

TEST_CASE("a step that overruns the quiesce timeout makes the upgrade roll back, the job goes on on the old version",
          "[jobs]") {
  // quiesce_timeout_ms = 2000. Without a rehearsal, whose state taken for
  // it would meet the slow step first: this is about the upgrade's pause.
  Daemon d({{"batch", plugin_path("batch", 1), 1}}, "rehearse = \"never\"");
  d.install(plugin_path("batch", 2), "batch-2.so");
  d.start();
  // One step a second, so that a step seen in flight is almost surely the slow one.
  REQUIRE(d.http_code("POST", "/batch/start?job=slow&items=20000&chunk=100&pace_ms=1000") == "200");
  REQUIRE(wait_until([&] { return chunks_done(d, "slow") >= 1; }));
  // v2 reads another schema: before the upgrade pauses batch, keeping its
  // state in schema 1 waits for the step too (up to quiesce_timeout, and
  // fails); then the upgrade waits again. The step outlasts both.
  REQUIRE(d.http_code("POST", "/batch/slow-once?ms=7000") == "200");
  REQUIRE(wait_until([&] { return d.status()["modules"][0]["in_flight"] == 1; }));

  const auto reload = d.ctl({"reload", "batch"});
  INFO(reload.out << reload.err);
  CHECK(reload.exit_code == 1);
  CHECK_THAT(reload.out, Catch::StartsWith("batch v1 -> v2: rolled back"));
  CHECK_THAT(reload.err, Catch::Contains("quiesce"));
  CHECK(version_of(d) == 1);
  CHECK_THAT(d.log(), Catch::Contains("batch v1: state not kept in schema 1 before the upgrade to v2 ("));

  const std::uint64_t after = chunks_done(d, "slow");  // waits for the slow step, like any call
  REQUIRE(wait_until([&] { return chunks_done(d, "slow") > after; }));
  CHECK(record(d, "slow")["state"] == "running");
  REQUIRE(d.http_code("POST", "/batch/pace?job=slow&ms=0") == "200");
  CHECK(wait_done(d, "slow")["state"] == "finished");
  check_result(d, "slow", 20000, 200);
  CHECK(d.stop() == 0);
}

TEST_CASE("moltctl jobs cancel stops a job at a step boundary, restart continues it from its checkpoint", "[jobs]") {
  Daemon d = batch_daemon();
  d.start();
  REQUIRE(d.http_code("POST", "/batch/start?job=c&items=5000&chunk=10&pace_ms=20") == "200");
  REQUIRE(wait_until([&] { return chunks_done(d, "c") >= 3; }));
  const auto cancelled = d.ctl({"jobs", "cancel", "batch", "c"});
  INFO(cancelled.out << cancelled.err);
  REQUIRE(cancelled.exit_code == 0);
  CHECK_THAT(cancelled.out, Catch::StartsWith("batch c: cancelled at "));
  const std::uint64_t stopped = chunks_done(d, "c");
  CHECK(record(d, "c")["state"] == "cancelled");
  // It stays where it stopped: a start of another job shows the workers are free and stepping.
  REQUIRE(d.http_code("POST", "/batch/start?job=other&items=100&chunk=10") == "200");
  REQUIRE(wait_done(d, "other")["state"] == "finished");
  CHECK(chunks_done(d, "c") == stopped);
  // Starting a running job again through the module is refused with 409.
  REQUIRE(d.http_code("POST", "/batch/start?job=c&items=5000&chunk=10&pace_ms=20") == "200");  // not running: anew
  CHECK(d.http_code("POST", "/batch/start?job=c&items=5000&chunk=10") == "409");
  REQUIRE(d.ctl({"jobs", "cancel", "batch", "c"}).exit_code == 0);
  const std::uint64_t second_stop = chunks_done(d, "c");
  CHECK(second_stop < 500);
  REQUIRE(d.http_code("POST", "/batch/pace?job=c&ms=0") == "200");

  REQUIRE(d.ctl({"jobs", "restart", "batch", "c"}).exit_code == 0);
  const Json finished = wait_done(d, "c");
  CHECK(finished["state"] == "finished");
  CHECK(finished["steps"].get<std::uint64_t>() >= 500 - second_stop);
  check_result(d, "c", 5000, 500);

  const Json listed = Json::parse(d.ctl({"jobs", "--json"}).out);
  CHECK(listed["jobs"].size() == 2);
  CHECK(d.stop() == 0);
}

TEST_CASE("a job in progress carries on through two hot restarts of moltd, every chunk recorded exactly once",
          "[jobs][hot-restart]") {
  Daemon d = batch_daemon();
  d.start();
  // 1000 chunks, one every 30 ms or more: at least 30 s, longer than two hot restarts under the sanitizers.
  constexpr std::uint64_t kItems = 200000, kChunks = 1000;
  REQUIRE(d.http_code("POST", "/batch/start?job=sum&items=200000&chunk=200&pace_ms=30") == "200");
  std::uint64_t seen = 0;
  const auto moves_on = [&] {
    const bool moved = wait_until([&] { return chunks_done(d, "sum") > seen; });
    seen = chunks_done(d, "sum");
    return moved;
  };
  for (int generation = 2; generation <= 3; ++generation) {
    REQUIRE(moves_on());
    REQUIRE(record(d, "sum")["state"] == "running");  // proves nothing once the job has ended
    const Json reply = d.hot_restart();
    INFO(reply.dump());
    REQUIRE(reply.value("ok", false));
    CHECK(d.status()["host"]["generation"] == generation);
    CHECK(chunks_done(d, "sum") >= seen);  // nothing redone, nothing lost: the checkpoint moved with the state
    CHECK(record(d, "sum")["state"] == "running");
  }
  REQUIRE(moves_on());
  REQUIRE(d.http_code("POST", "/batch/pace?job=sum&ms=0") == "200");
  const Json finished = wait_done(d, "sum");
  CHECK(finished["state"] == "finished");
  CHECK(finished["done"] == kChunks);
  check_result(d, "sum", kItems, kChunks);
  CHECK(d.stop() == 0);
}
