// Crash tests: the real moltd is killed (SIGKILL, through the test-only
// MOLT_FAULT switch) at each phase of a two-module release and at each step
// of the atomic writes of its record and snapshots. After a restart it must
// run one consistent release (both modules old or both new, as its record
// says) with every acknowledged write from before the last completed
// snapshot, and no snapshot may have been damaged.
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "resp_client.hpp"

using namespace molt::test;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kOk = "+OK\r\n";

struct Fault {
  const char* point;       ///< MOLT_FAULT
  int booted;              ///< the version both modules run after the restart, when releases need no probation
  bool upgrade_snapshotted;///< whether counter's snapshot after the upgrade was complete when the host died
};

// In the order a release reaches them. releases.json is written once at
// boot, so ":2" is the install's write; counter.molt and kv.molt are written
// once by `moltctl save`, so ":2" is the snapshot the install takes: in the
// background, after the install answered (host.install_snapshot_delay_ms).
const Fault kFaults[] = {
    {"upgrade.prepare", 1, false},
    {"upgrade.quiesce", 1, false},
    {"upgrade.migrate", 1, false},
    {"upgrade.resume", 1, false},
    {"upgrade.cleanup", 1, false},
    {"release.commit", 1, false},
    {"release.installed", 1, false},
    {"release.record:2", 1, false},
    {"write.temp-open:2@releases.json", 1, false},
    {"write.temp-written:2@releases.json", 1, false},
    {"write.before-rename:2@releases.json", 1, false},
    {"write.after-rename:2@releases.json", 2, false},
    {"write.temp-open:2@counter.molt", 2, false},
    {"write.temp-written:2@counter.molt", 2, false},
    {"write.before-rename:2@counter.molt", 2, false},
    {"write.after-rename:2@counter.molt", 2, true},
    {"write.temp-open:2@kv.molt", 2, true},
    {"write.temp-written:2@kv.molt", 2, true},
    {"write.before-rename:2@kv.molt", 2, true},
    {"write.after-rename:2@kv.molt", 2, true},
};

int version_of(const Daemon& d, const std::string& module) {
  const Json status = d.status();
  for (const auto& m : status["modules"])
    if (m["name"] == module) return m["version"].get<int>();
  return 0;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// What is in the snapshot directory besides the modules' snapshots, the
/// states kept before an upgrade (<module>.schema-<N>.molt) and a snapshot
/// that a restart did not boot from, written by a release on probation
/// (<module>.molt.unbooted-...): set aside as damaged
/// (<module>.molt.corrupt-...), or temporaries a crash left.
std::vector<std::string> unexpected_files(const Daemon& d) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(d.run_dir() / "snapshots")) {
    const std::string name = entry.path().filename().string();
    if (name == "counter.molt" || name == "kv.molt") continue;
    if (name == "counter.schema-1.molt" || name == "kv.schema-1.molt") continue;
    if (name.starts_with("counter.molt.unbooted-") || name.starts_with("kv.molt.unbooted-")) continue;
    // A kill between keeping the state before an upgrade and the upgrade's
    // first snapshot: the boot takes the newer kept state and sets the older
    // snapshot aside.
    if (name.starts_with("counter.molt.older-") || name.starts_with("kv.molt.older-")) continue;
    found.push_back(name);
  }
  return found;
}

std::vector<ModuleSpec> counter_and_kv() {
  return {{"counter", plugin_path("counter", 1), 1}, {"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}};
}

/// One kill -9 at `fault` during a release, with `probation` seconds of
/// probation (0: the release is permanent at once), and what the next boot finds.
void kill_during_release(int probation, const Fault& fault) {
  INFO("MOLT_FAULT=" << fault.point << ", probation_seconds = " << probation);

  Daemon d(counter_and_kv(), "probation_seconds = " + std::to_string(probation));
  d.install(plugin_path("counter", 2), "counter-2.so");
  d.install(plugin_path("kv", 2), "kv-2.so");
  d.start({std::string("MOLT_FAULT=") + fault.point});

  // Acknowledged, then snapshotted: must all survive.
  for (int i = 0; i < 5; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  {
    RespClient kv(d.stream_port("kv"));
    for (int i = 0; i < 5; ++i) REQUIRE(kv.call({"SET", "saved" + std::to_string(i), "v"}) == kOk);
  }
  const auto saved = d.ctl({"save"});
  INFO(saved.out << saved.err);
  REQUIRE(saved.exit_code == 0);
  // Acknowledged after the last completed snapshot: what a crash may cost,
  // unless the release's own snapshot got them to disk first.
  for (int i = 0; i < 2; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");

  const auto up = d.ctl({"upgrade", (fs::path(MOLT_SCRIPT_DIR) / "2026.12.0.toml").string()});
  INFO(up.out << up.err);
  const bool after_reply = std::string(fault.point).find(".molt") != std::string::npos;  // the install's snapshot
  CHECK(up.exit_code == (after_reply ? 0 : 1));
  REQUIRE(d.process().wait(std::chrono::seconds(20)).has_value());
  REQUIRE_THAT(read_text(d.dir() / "moltd.out"), Catch::Contains("MOLT_FAULT reached"));

  d.start();
  const int counter = version_of(d, "counter");
  const int kv_version = version_of(d, "kv");
  CHECK(counter == kv_version);  // never a mix
  CHECK(counter == (probation == 0 ? fault.booted : 1));
  const Json record = Json::parse(d.ctl({"releases", "--json"}).out);
  for (const auto& m : record["current"]["modules"]) CHECK(m["version"] == counter);
  CHECK(record["current"]["permanent"] == true);
  if (std::string(fault.point).find("write.t") != std::string::npos || std::string(fault.point).find("before") != std::string::npos)
    CHECK_THAT(d.log(), Catch::Contains("a write interrupted by a crash"));

  const Json counts = d.get_json("/counter");
  if (fault.upgrade_snapshotted) CHECK(counts["total"] == 7);
  else CHECK(counts["total"].get<int>() >= 5);
  RespClient kv(d.stream_port("kv"));
  for (int i = 0; i < 5; ++i) CHECK(kv.call({"GET", "saved" + std::to_string(i)}) == "$1\r\nv\r\n");
  CHECK(unexpected_files(d).empty());

  // And the host goes on: the release can be installed now.
  if (counter == 1) {
    const auto again = d.ctl({"upgrade", (fs::path(MOLT_SCRIPT_DIR) / "2026.12.0.toml").string()});
    INFO(again.out << again.err);
    CHECK(again.exit_code == 0);
    CHECK(version_of(d, "counter") == 2);
    CHECK(version_of(d, "kv") == 2);
  }
  CHECK(d.stop() == 0);
}

}  // namespace

// Two test cases, not one GENERATE over the probation: each is a ctest entry
// of its own, run in parallel, and within the time limit under the sanitizers.
TEST_CASE("kill -9 at every phase of a release and of its writes: one consistent release, nothing acknowledged lost "
          "(permanent at once)",
          "[fault]") {
  kill_during_release(0, GENERATE(from_range(std::begin(kFaults), std::end(kFaults))));
}

TEST_CASE("kill -9 at every phase of a release and of its writes: one consistent release, nothing acknowledged lost "
          "(on probation)",
          "[fault]") {
  kill_during_release(600, GENERATE(from_range(std::begin(kFaults), std::end(kFaults))));
}

TEST_CASE("kill -9 between snapshots costs exactly the writes since the last one", "[fault]") {
  Daemon d(counter_and_kv(), "probation_seconds = 600");
  d.start();
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  REQUIRE(d.ctl({"save"}).exit_code == 0);
  for (int i = 0; i < 4; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  d.kill9();
  d.start();
  CHECK(d.get_json("/counter")["total"] == 3);
  CHECK(unexpected_files(d).empty());
  CHECK(d.stop() == 0);
}

TEST_CASE("periodic snapshots bound that cost without anyone asking", "[fault]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}}, "snapshot_interval_seconds = 1");
  d.start();
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  const fs::path snapshot = d.run_dir() / "snapshots" / "counter.molt";
  // Two periodic snapshots after the last acknowledgement: the second one
  // certainly began after it.
  for (int round = 0; round < 2; ++round) {
    const auto before = fs::exists(snapshot) ? fs::last_write_time(snapshot) : fs::file_time_type::min();
    REQUIRE(wait_until([&] { return fs::exists(snapshot) && fs::last_write_time(snapshot) > before; }));
  }
  d.kill9();
  d.start();
  CHECK(d.get_json("/counter")["total"] == 3);
  CHECK(d.stop() == 0);
}
