// What a restart of the real moltd starts each module with when the release
// that ran was on probation: the permanent release's version, from a state
// its own code reads (the state kept in its schema when the newer version
// was installed), never the newer version's image; and a module with no
// such state is not started, says how to proceed, and `moltctl restore`
// starts it.
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
constexpr const char* kNil = "$-1\r\n";

/// counter v1 and kv v1 (on a free port).
std::vector<ModuleSpec> counter_and_kv() {
  return {{"counter", plugin_path("counter", 1), 1}, {"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}};
}

/// Long enough that no release becomes permanent by itself.
constexpr const char* kLongProbation = "probation_seconds = 600";

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

int version_of(const Daemon& d, const std::string& module) {
  const Json status = d.status();
  for (const auto& m : status["modules"])
    if (m["name"] == module) return m["version"].get<int>();
  return 0;
}

/// Whether moltd maps a copy of `module`'s image `version` (the loader
/// names its copies <module>-<version>-<sha256 prefix>.<n>.so).
bool maps_image_of(Daemon& d, const std::string& module, unsigned version) {
  const std::string maps = read_text("/proc/" + std::to_string(d.pid()) + "/maps");
  REQUIRE_FALSE(maps.empty());
  return maps.find("/" + module + "-" + std::to_string(version) + "-") != std::string::npos;
}

/// Starts `d`, sets "before" in kv v1, saves that state to <dir>/kv-v1.molt
/// (an archive v1 reads), reloads kv to v2 (a release on probation: kv's
/// state in schema 1 is kept first), sets "after" on v2, waits for the
/// install's snapshot, and SIGKILLs moltd.
void write_then_upgrade_then_crash(Daemon& d) {
  d.install(plugin_path("kv", 2), "kv-2.so");
  d.start();
  {
    RespClient kv(d.stream_port("kv"));
    REQUIRE(kv.call({"SET", "before", "1"}) == kOk);
  }
  REQUIRE(d.ctl({"snapshot", "kv", "-o", (d.dir() / "kv-v1.molt").string()}).exit_code == 0);
  const auto reloaded = d.ctl({"reload", "kv"});
  INFO(reloaded.out << reloaded.err);
  REQUIRE(reloaded.exit_code == 0);
  REQUIRE(version_of(d, "kv") == 2);
  CHECK_THAT(d.log(), Catch::Contains("[kv] kept kv's state in schema 1 before the upgrade to v2 (schema 2): ") &&
                          Catch::Contains(" bytes in "));
  RespClient kv(d.stream_port("kv"));
  REQUIRE(kv.call({"SET", "after", "2"}) == kOk);
  // The install's snapshot, in the background: written by v2, in schema 2.
  REQUIRE(wait_until([&] { return d.snapshots_written(); }));
  CHECK_THAT(d.log(), Catch::Contains("[kv] upgrade snapshot written: "));
  d.kill9();
}

const std::string kRefusal =
    "kv: not started: no state v1 can read (the snapshot was written by v2 in schema 2) and none kept in schema 1; "
    "restore one with 'moltctl restore kv FILE', or start moltd with --allow-empty kv to start it with its initial "
    "state";

}  // namespace

TEST_CASE("a restart after a crash during probation boots v1 from the state kept before the upgrade, without loading v2",
          "[boot][restart]") {
  Daemon d(counter_and_kv(), kLongProbation);
  write_then_upgrade_then_crash(d);

  d.start();
  CHECK(version_of(d, "kv") == 1);
  RespClient kv(d.stream_port("kv"));
  CHECK(kv.call({"GET", "before"}) == "$1\r\n1\r\n");
  CHECK(kv.call({"GET", "after"}) == kNil);  // written on v2: lost, and the log says so
  CHECK_FALSE(maps_image_of(d, "kv", 2));
  CHECK(maps_image_of(d, "kv", 1));
  const std::string log = d.log();
  CHECK(occurrences(log, "kv: booting v1 from the state kept in schema 1 at ") == 1);
  CHECK_THAT(log, Catch::Contains(" UTC: writes to kv since then are not in it; the newer snapshot (v2, schema 2) is "
                                  "kept at " + (d.run_dir() / "snapshots" / "kv.molt.unbooted-").string()) &&
                      Catch::Contains(" for moltctl restore once a version that reads it runs"));
  CHECK(d.status()["not_started"] == Json::array());
  CHECK(d.stop() == 0);
}

TEST_CASE("a restart with no state v1 can read does not start kv, says how to proceed, and moltctl restore starts it",
          "[boot][restart]") {
  Daemon d(counter_and_kv(), kLongProbation);
  write_then_upgrade_then_crash(d);
  const fs::path snapshots = d.run_dir() / "snapshots";
  REQUIRE(fs::remove(snapshots / "kv.schema-1.molt"));

  d.start();
  CHECK_THAT(d.log(), Catch::Contains("[moltd] " + kRefusal));
  const Json status = d.status();
  CHECK(status["not_started"] == Json::array({{{"module", "kv"}, {"reason", kRefusal.substr(4 + 13)}}}));
  CHECK(version_of(d, "kv") == 0);
  CHECK(d.get_json("/-/status")["not_started"] == status["not_started"]);
  const auto text = d.ctl({"status"});
  CHECK(text.exit_code == 0);
  CHECK_THAT(text.out, Catch::Contains("not started: kv: no state v1 can read ("));
  CHECK(d.http_code("POST", "/counter/incr") == "200");  // the others serve
  CHECK_FALSE(maps_image_of(d, "kv", 2));

  // The snapshot v2 wrote: v1 cannot read it.
  const auto newer = d.ctl({"restore", "kv", (snapshots / "kv.molt").string()});
  INFO(newer.out << newer.err);
  CHECK(newer.exit_code == 1);
  CHECK(d.status()["not_started"].size() == 1);
  CHECK_FALSE(maps_image_of(d, "kv", 2));

  const auto restored = d.ctl({"restore", "kv", (d.dir() / "kv-v1.molt").string()});
  INFO(restored.out << restored.err);
  REQUIRE(restored.exit_code == 0);
  CHECK(version_of(d, "kv") == 1);
  CHECK(d.status()["not_started"] == Json::array());
  RespClient kv(d.stream_port("kv"));
  CHECK(kv.call({"GET", "before"}) == "$1\r\n1\r\n");
  CHECK(d.stop() == 0);

  d.start();  // the restored state is kv's snapshot now
  RespClient again(d.stream_port("kv"));
  CHECK(again.call({"GET", "before"}) == "$1\r\n1\r\n");
  CHECK(d.stop() == 0);
}

TEST_CASE("moltd --allow-empty kv starts kv with its initial state instead, with a warning", "[boot][restart]") {
  Daemon d(counter_and_kv(), kLongProbation);
  write_then_upgrade_then_crash(d);
  REQUIRE(fs::remove(d.run_dir() / "snapshots" / "kv.schema-1.molt"));

  d.start({}, {"--allow-empty", "kv"});
  CHECK(version_of(d, "kv") == 1);
  RespClient kv(d.stream_port("kv"));
  CHECK(kv.call({"GET", "before"}) == kNil);
  CHECK(d.status()["not_started"] == Json::array());
  CHECK_THAT(d.log(), Catch::Contains("kv: started with its initial state (--allow-empty kv): no state v1 can read (the "
                                      "snapshot was written by v2 in schema 2) and none kept in schema 1; the snapshot "
                                      "is kept at " + (d.run_dir() / "snapshots" / "kv.molt.unbooted-").string()));
  CHECK(d.stop() == 0);
}

TEST_CASE("a corrupt snapshot and no kept state: the module is not started, not started empty", "[boot][restart]") {
  Daemon d(counter_and_kv(), kLongProbation);
  d.start();
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  CHECK(d.stop() == 0);
  const fs::path snapshot = d.run_dir() / "snapshots" / "counter.molt";
  std::string bytes = read_text(snapshot);
  bytes[bytes.size() - 3] ^= 0x20;
  std::ofstream(snapshot, std::ios::binary | std::ios::trunc) << bytes;

  d.start();
  CHECK(version_of(d, "counter") == 0);
  CHECK(version_of(d, "kv") == 1);
  const Json status = d.status();
  REQUIRE(status["not_started"].size() == 1);
  CHECK(status["not_started"][0]["module"] == "counter");
  const std::string reason = status["not_started"][0]["reason"];
  CHECK_THAT(reason, Catch::StartsWith("no state v1 can read (counter (" + snapshot.string() + "): snapshot: "));
  CHECK_THAT(reason, Catch::EndsWith("and none kept in schema 1; restore one with 'moltctl restore counter FILE', or "
                                     "start moltd with --allow-empty counter to start it with its initial state"));
  CHECK_THAT(d.log(), Catch::Contains("[moltd] counter: not started: " + reason));
  CHECK(d.http_code("GET", "/counter") == "404");
  CHECK(read_text(snapshot) == bytes);  // left where it was: the next boot refuses it again
  CHECK(d.stop() == 0);
}
