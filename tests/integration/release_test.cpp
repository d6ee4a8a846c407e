// Releases through the real moltd and moltctl: the shipped upgrade scripts up
// and down, --check and --pin, all-or-nothing installs, adding and removing
// modules, probation (commit, automatic rollback), and what a restart boots.
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "resp_client.hpp"

using namespace molt::test;
using Json = nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

/// upgrade_scripts/<name> in the source tree: the scripts operators get.
std::string shipped_script(const std::string& name) { return (fs::path(MOLT_SCRIPT_DIR) / name).string(); }

/// Writes `text` to <daemon dir>/<name>, and returns its path.
std::string write_script(const Daemon& d, const std::string& name, const std::string& text) {
  const fs::path path = d.dir() / name;
  std::ofstream(path) << text;
  return path.string();
}

/// An upgrade script's text: release = "<release>", then `steps`, each from
/// upgrade_step() or remove_step().
std::string script_text(const std::string& release, std::initializer_list<std::string> steps) {
  std::string text = "release = \"" + release + "\"\n";
  for (const auto& step : steps) text += step;
  return text;
}

/// A [[step]] that upgrades `module` from `from` to `to`; `more`: lines of
/// its own, e.g. depends_on = ["probe"].
std::string upgrade_step(const std::string& module, unsigned from, unsigned to, const std::string& more = "") {
  return "[[step]]\nmodule = \"" + module + "\"\nfrom = " + std::to_string(from) + "\nto = " + std::to_string(to) +
         "\n" + (more.empty() ? "" : more + "\n");
}

/// A [[step]] that removes `module`, which runs version `from`.
std::string remove_step(const std::string& module, unsigned from) {
  return "[[step]]\naction = \"remove\"\nmodule = \"" + module + "\"\nfrom = " + std::to_string(from) + "\n";
}

/// The version `module` runs, or 0 when it does not run.
int version_of(const Daemon& d, const std::string& module) {
  const Json status = d.status();
  for (const auto& m : status["modules"])
    if (m["name"] == module) return m["version"].get<int>();
  return 0;
}

Json releases(const Daemon& d) {
  const auto result = d.ctl({"releases", "--json"});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  return Json::parse(result.out);
}

/// The events of the release record whose "what" is `what`.
std::vector<Json> events(const Daemon& d, const std::string& what) {
  std::vector<Json> found;
  const Json record = releases(d);
  for (const auto& event : record["events"])
    if (event["what"] == what) found.push_back(event);
  return found;
}

std::string sha256_of(const fs::path& file) {
  const auto result = run_process({"sha256sum", file.string()});
  REQUIRE(result.exit_code == 0);
  return result.out.substr(0, 64);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// counter v1 and kv v1 (on a free port).
std::vector<ModuleSpec> counter_and_kv() {
  return {{"counter", plugin_path("counter", 1), 1}, {"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}};
}

/// The newer shipped versions, under the names the shipped scripts use.
void install_newer(const Daemon& d) {
  d.install(plugin_path("counter", 2), "counter-2.so");
  d.install(plugin_path("kv", 2), "kv-2.so");
  d.install(plugin_path("kv", 3), "kv-3.so");
}

constexpr const char* kLongProbation = "probation_seconds = 600";

/// counter v1 and probe v1 (the module that fails on request).
std::vector<ModuleSpec> counter_and_probe() {
  return {{"counter", plugin_path("counter", 1), 1}, {"probe", probe_path(1), 1}};
}

/// counter-2.so and probe-2.so in the plugin directory.
void install_counter_and_probe_v2(const Daemon& d) {
  d.install(plugin_path("counter", 2), "counter-2.so");
  d.install(probe_path(2), "probe-2.so");
}

constexpr const char* kOk = "+OK\r\n";

}  // namespace

TEST_CASE("upgrade_scripts/counter-2.toml: counter 1 -> 2 keeps the total under default, --down returns it",
          "[releases][scripts]") {
  Daemon d(counter_and_kv(), kLongProbation);
  install_newer(d);
  d.start();
  for (int i = 0; i < 5; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");

  const auto up = d.ctl({"upgrade", shipped_script("counter-2.toml")});
  INFO(up.out << up.err);
  REQUIRE(up.exit_code == 0);
  CHECK_THAT(up.out, Catch::StartsWith("counter v1 -> v2: succeeded\n"));
  CHECK_THAT(up.out, Catch::Contains("release counter-2 installed; on probation"));
  const Json counts = d.get_json("/counter?key=default");
  CHECK(counts["version"] == 2);
  CHECK(counts["count"] == 5);
  CHECK(version_of(d, "kv") == 1);  // not in the script: untouched
  const Json record = releases(d);
  CHECK(record["current"]["name"] == "counter-2");
  CHECK(record["current"]["permanent"] == false);
  CHECK(record["previous"]["name"] == "initial");
  CHECK(record["permanent"]["name"] == "initial");

  const auto down = d.ctl({"upgrade", "--down", shipped_script("counter-2.toml")});
  INFO(down.out << down.err);
  REQUIRE(down.exit_code == 0);
  CHECK_THAT(down.out, Catch::StartsWith("counter v2 -> v1: succeeded\n"));
  CHECK(d.get_json("/counter") == Json{{"module", "counter"}, {"version", 1}, {"total", 5}});
  CHECK(releases(d)["current"]["name"] == "initial");  // --down of the current release returns to the previous one
  CHECK(d.stop() == 0);
}

TEST_CASE("upgrade_scripts/kv-2.toml and kv-3.toml: data loaded with redis-cli survives 1 -> 2 -> 3 -> 2 -> 1",
          "[releases][scripts]") {
  Daemon d(counter_and_kv(), kLongProbation);
  install_newer(d);
  d.start();
  const std::string port = std::to_string(d.stream_port("kv"));
  const auto cli = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{"redis-cli", "-p", port};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto result = run_process(argv);
    INFO(result.err);
    REQUIRE(result.exit_code == 0);
    return result.out;
  };
  CHECK(cli({"MSET", "a", "1", "b", "2", "c", "3"}) == "OK\n");

  const auto to2 = d.ctl({"upgrade", shipped_script("kv-2.toml")});
  INFO(to2.out << to2.err);
  REQUIRE(to2.exit_code == 0);
  CHECK(version_of(d, "kv") == 2);
  CHECK(cli({"EXPIRE", "c", "1000"}) == "1\n");  // v2's feature, on the state v1 left
  CHECK(cli({"TTL", "a"}) == "-1\n");

  const auto to3 = d.ctl({"upgrade", shipped_script("kv-3.toml")});
  INFO(to3.out << to3.err);
  REQUIRE(to3.exit_code == 0);
  CHECK_THAT(to3.out, Catch::Contains("in memory"));  // code only: no serialization
  CHECK(version_of(d, "kv") == 3);
  CHECK(cli({"GETDEL", "b"}) == "2\n");  // v3's feature
  CHECK(cli({"TYPE", "a"}) == "string\n");

  const auto from3 = d.ctl({"upgrade", "--down", shipped_script("kv-3.toml")});
  INFO(from3.out << from3.err);
  REQUIRE(from3.exit_code == 0);
  CHECK(version_of(d, "kv") == 2);
  const std::string ttl = cli({"TTL", "c"});
  CHECK(std::stoi(ttl) > 900);  // the TTL survived 2 -> 3 -> 2

  const auto from2 = d.ctl({"upgrade", "--down", shipped_script("kv-2.toml")});
  INFO(from2.out << from2.err);
  REQUIRE(from2.exit_code == 0);
  CHECK(version_of(d, "kv") == 1);
  CHECK(cli({"MGET", "a", "b", "c"}) == "1\n\n3\n");
  CHECK(d.stop() == 0);
}

TEST_CASE("upgrade_scripts/2026.12.0.toml upgrades counter and kv as one release, --down undoes both",
          "[releases][scripts]") {
  Daemon d(counter_and_kv(), kLongProbation);
  install_newer(d);
  d.start();
  for (int i = 0; i < 4; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  RespClient kv(d.stream_port("kv"));
  REQUIRE(kv.call({"SET", "k", "v"}) == kOk);

  const auto up = d.ctl({"upgrade", shipped_script("2026.12.0.toml")});
  INFO(up.out << up.err);
  REQUIRE(up.exit_code == 0);
  CHECK_THAT(up.out, Catch::Contains("counter v1 -> v2: succeeded"));
  CHECK_THAT(up.out, Catch::Contains("kv v1 -> v2: succeeded"));
  CHECK(d.get_json("/counter?key=legacy")["count"] == 4);  // extra.default_key from the script
  CHECK(kv.call({"GET", "k"}) == "$1\r\nv\r\n");           // the same connection, now served by v2
  const Json current = releases(d)["current"];
  CHECK(current["name"] == "2026.12.0");
  CHECK(current["modules"][0]["version"] == 2);
  CHECK(current["modules"][1]["version"] == 2);

  const auto down = d.ctl({"upgrade", "--down", shipped_script("2026.12.0.toml")});
  INFO(down.out << down.err);
  REQUIRE(down.exit_code == 0);
  // Reverse order: kv first, then counter.
  CHECK(appears_before(down.out, "kv v2 -> v1", "counter v2 -> v1"));
  CHECK(version_of(d, "counter") == 1);
  CHECK(version_of(d, "kv") == 1);
  CHECK(d.get_json("/counter")["total"] == 4);
  CHECK(kv.call({"GET", "k"}) == "$1\r\nv\r\n");
  CHECK(d.stop() == 0);
}

TEST_CASE("upgrade --check prints the plan and changes nothing, each bad script is one line naming its step",
          "[releases][check]") {
  Daemon d(counter_and_probe(), kLongProbation);
  install_counter_and_probe_v2(d);
  d.start();

  const std::string good = write_script(
      d, "good.toml",
      script_text("r1", {upgrade_step("counter", 1, 2, "depends_on = [\"probe\"]"), upgrade_step("probe", 1, 2)}));
  const auto plan = d.ctl({"upgrade", "--check", good});
  INFO(plan.out << plan.err);
  REQUIRE(plan.exit_code == 0);
  CHECK_THAT(plan.out, Catch::StartsWith("release r1: 2 step(s), in the order modules pause\n"));
  // counter depends on probe, so counter pauses first (and resumes last).
  CHECK(appears_before(plan.out, "counter      v1 -> v2", "probe        v1 -> v2"));
  CHECK_THAT(plan.out, Catch::EndsWith("check passed: nothing was changed\n"));
  const Json checked = Json::parse(d.ctl({"upgrade", "--check", "--json", good}).out);
  REQUIRE(checked["plan"].size() == 2);
  CHECK(checked["plan"][0]["module"] == "counter");
  CHECK(checked["plan"][0]["sha256"] == sha256_of(d.plugin_dir() / "counter-2.so"));

  // Each bad script, and what its one line of error says: every part, with
  // --check and without.
  struct Bad {
    const char* what;
    std::string text;
    std::vector<std::string> says;
  };
  const std::string zeros(64, '0');
  const std::vector<Bad> bad{
      {"unknown module", script_text("x", {upgrade_step("nope", 1, 2)}),
       {"bad.toml: script: step 1 (nope): nope is not running"}},
      {"wrong from-version", script_text("x", {upgrade_step("counter", 2, 3)}),
       {"bad.toml: script: step 1 (counter): from = 2 but counter runs v1"}},
      {"missing file",
       script_text("x", {upgrade_step("counter", 1, 2), upgrade_step("probe", 1, 2, "file = \"probe-9.so\"")}),
       {"step 2 (probe): ", "probe-9.so"}},
      {"sha256 mismatch", script_text("x", {upgrade_step("counter", 1, 2, "sha256 = \"" + zeros + "\"")}),
       {"step 1 (counter): ", "sha256"}},
      {"dependency cycle",
       script_text("x", {upgrade_step("counter", 1, 2, "depends_on = [\"probe\"]"),
                         upgrade_step("probe", 1, 2, "depends_on = [\"counter\"]")}),
       {"dependency cycle: ", "counter -> probe -> counter"}},
      // Found by moltctl itself, not by moltd.
      {"unreadable TOML", "release = \"x\"\n[[step]]\nmodule = counter\n", {"bad.toml", "line 3"}},
  };
  for (const auto& b : bad) {
    SECTION(b.what) {
      const std::string path = write_script(d, "bad.toml", b.text);
      for (const bool check : {true, false}) {
        std::vector<std::string> args{"upgrade", path};
        if (check) args.insert(args.begin() + 1, "--check");
        const auto result = d.ctl(args);
        INFO(b.what << (check ? " --check" : "") << ": " << result.out << result.err);
        CHECK(result.exit_code == 1);
        CHECK(result.out.empty());
        CHECK_THAT(result.err, Catch::StartsWith("moltctl: "));
        for (const auto& part : b.says) CHECK_THAT(result.err, Catch::Contains(part));
        CHECK(std::count(result.err.begin(), result.err.end(), '\n') == 1);  // one line
      }
      // With --json the reply has moltd's shape, whoever found the mistake.
      const auto as_json = d.ctl({"upgrade", "--json", path});
      INFO(b.what << " --json: " << as_json.out << as_json.err);
      CHECK(as_json.exit_code == 1);
      const Json reply = Json::parse(as_json.out);
      CHECK(reply["ok"] == false);
      for (const auto& part : b.says) CHECK_THAT(reply["error"].get<std::string>(), Catch::Contains(part));
      CHECK(version_of(d, "counter") == 1);
      CHECK(version_of(d, "probe") == 1);
      CHECK(releases(d)["current"]["name"] == "initial");
      CHECK(events(d, "installed").empty());
    }
  }
  CHECK(d.stop() == 0);
}

TEST_CASE("upgrade --pin writes the sha256 of the files present, a file changed afterwards is refused",
          "[releases][pin]") {
  Daemon d(counter_and_kv(), kLongProbation);
  install_newer(d);
  d.start();
  const fs::path script = d.dir() / "counter-2.toml";
  fs::copy_file(shipped_script("counter-2.toml"), script);

  const auto pinned = d.ctl({"upgrade", "--pin", script.string()});
  INFO(pinned.out << pinned.err);
  REQUIRE(pinned.exit_code == 0);
  const std::string text = read_text(script);
  const std::string sha_new = sha256_of(d.plugin_dir() / "counter-2.so");
  const std::string sha_old = sha256_of(d.plugin_dir() / "counter-1.so");
  CHECK_THAT(text, Catch::Contains("sha256 = \"" + sha_new + "\""));
  CHECK_THAT(text, Catch::Contains("from_sha256 = \"" + sha_old + "\""));
  CHECK_THAT(text, Catch::Contains("extra = { default_key = \"default\" }"));  // the rest kept as it was
  // Pinning again replaces the pins instead of adding more.
  REQUIRE(d.ctl({"upgrade", "--pin", script.string()}).exit_code == 0);
  const std::string again = read_text(script);
  CHECK(again == text);

  // Someone replaces counter-2.so with another build: the pinned script refuses it.
  d.install(plugin_path("kv", 2), "counter-2.so");
  const auto refused = d.ctl({"upgrade", script.string()});
  INFO(refused.out << refused.err);
  CHECK(refused.exit_code == 1);
  CHECK_THAT(refused.err, Catch::Contains("step 1 (counter)"));
  CHECK_THAT(refused.err, Catch::Contains("sha256"));
  CHECK(version_of(d, "counter") == 1);

  d.install(plugin_path("counter", 2), "counter-2.so");
  const auto accepted = d.ctl({"upgrade", script.string()});
  INFO(accepted.out << accepted.err);
  CHECK(accepted.exit_code == 0);
  CHECK(version_of(d, "counter") == 2);
  CHECK(d.stop() == 0);
}

TEST_CASE("a release whose second step fails leaves every module on its old version with its old state",
          "[releases][atomic]") {
  Daemon d(counter_and_probe(), kLongProbation);
  install_counter_and_probe_v2(d);
  d.start();
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  REQUIRE(d.http_code("POST", "/probe/add?item=kept") == "200");

  for (const char* fail : {"load", "save", "load-crash"}) {
    SECTION(std::string("probe fails to ") + fail) {
      const std::string script = write_script(
          d, "r.toml",
          script_text("r", {upgrade_step("counter", 1, 2),
                            upgrade_step("probe", 1, 2, "extra = { fail = \"" + std::string(fail) + "\" }")}));
      const auto result = d.ctl({"upgrade", script});
      INFO(result.out << result.err);
      CHECK(result.exit_code == 1);
      CHECK_THAT(result.err, Catch::StartsWith("moltctl: release 'r' not installed: probe v"));
      CHECK(std::count(result.err.begin(), result.err.end(), '\n') == 1);
      CHECK(d.get_json("/counter") == Json{{"module", "counter"}, {"version", 1}, {"total", 3}});
      CHECK(d.get_json("/probe") == Json{{"version", 1}, {"items", {"kept"}}});
      const Json record = releases(d);
      CHECK(record["current"]["name"] == "initial");
      CHECK(events(d, "installed").empty());
      // And the modules keep serving.
      CHECK(d.http_code("POST", "/counter/incr") == "200");
      CHECK(d.get_json("/counter")["total"] == 4);
    }
  }
  CHECK(d.stop() == 0);
}

TEST_CASE("a release removes a module (state snapshotted first), --down adds it back with that state",
          "[releases][add-remove]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1},
            {"stash", test_image_path("stash-1.so"), 1, "listen = \"127.0.0.1:0\"\n"}},
           kLongProbation);
  d.start();
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("POST", "/stash/put?k=k" + std::to_string(i) + "&v=x") == "200");
  const std::uint16_t old_port = d.stream_port("stash");

  const std::string script = write_script(d, "drop-stash.toml", script_text("no-stash", {remove_step("stash", 1)}));
  const auto removed = d.ctl({"upgrade", script});
  INFO(removed.out << removed.err);
  REQUIRE(removed.exit_code == 0);
  CHECK(version_of(d, "stash") == 0);
  CHECK(d.http_code("GET", "/stash") == "404");
  CHECK(fs::exists(d.run_dir() / "snapshots" / "stash.molt"));
  CHECK(wait_until([&] {
    try {
      RespClient probe(old_port);  // any TCP client: the listener must be gone
      return false;
    } catch (const std::exception&) {
      return true;
    }
  }));
  CHECK(releases(d)["current"]["modules"].size() == 1);

  const auto added = d.ctl({"upgrade", "--down", script});
  INFO(added.out << added.err);
  REQUIRE(added.exit_code == 0);
  CHECK(version_of(d, "stash") == 1);
  CHECK(d.get_json("/stash")["items"] == 3);
  const Json current = releases(d)["current"];
  CHECK(current["name"] == "initial");
  CHECK(current["modules"].size() == 2);
  CHECK(d.stream_port("stash") > 0);  // listening again, from the settings it had
  CHECK(d.stop() == 0);
}

TEST_CASE("moltctl commit ends probation: the release is permanent and is what a restart boots",
          "[releases][probation]") {
  Daemon d(counter_and_kv(), kLongProbation);
  install_newer(d);
  d.start();
  REQUIRE(d.ctl({"upgrade", shipped_script("counter-2.toml")}).exit_code == 0);
  const auto committed = d.ctl({"commit"});
  INFO(committed.out << committed.err);
  REQUIRE(committed.exit_code == 0);
  CHECK(committed.out == "release counter-2 is permanent\n");
  const Json record = releases(d);
  CHECK(record["current"]["permanent"] == true);
  CHECK(record["permanent"]["name"] == "counter-2");
  CHECK(events(d, "permanent").size() == 1);
  // Nothing left to commit.
  const auto again = d.ctl({"commit"});
  CHECK(again.exit_code == 1);
  CHECK_THAT(again.err, Catch::Contains("already permanent"));

  REQUIRE(d.http_code("POST", "/counter/incr?key=after") == "200");
  CHECK(d.stop() == 0);
  d.start();
  CHECK(version_of(d, "counter") == 2);
  CHECK(d.get_json("/counter?key=after")["count"] == 1);
  CHECK(d.stop() == 0);
}

TEST_CASE("probation passes by itself after probation_seconds", "[releases][probation]") {
  Daemon d(counter_and_kv(), "probation_seconds = 1");
  install_newer(d);
  d.start();
  REQUIRE(d.ctl({"upgrade", shipped_script("counter-2.toml")}).exit_code == 0);
  CHECK(wait_until([&] { return releases(d)["current"]["permanent"] == true; }));
  CHECK(releases(d)["permanent"]["name"] == "counter-2");
  CHECK(version_of(d, "counter") == 2);
  CHECK(d.stop() == 0);
}

TEST_CASE("during probation the host rolls a release back by itself: error rate over the threshold",
          "[releases][probation]") {
  Daemon d(counter_and_probe(), "probation_seconds = 600\nprobation_min_calls = 20\nprobation_max_error_rate = 0.25");
  d.install(probe_path(2), "probe-2.so");
  d.start();
  REQUIRE(d.http_code("POST", "/probe/add?item=a") == "200");
  const std::string script = write_script(d, "probe-2.toml", script_text("probe-2", {upgrade_step("probe", 1, 2)}));
  REQUIRE(d.ctl({"upgrade", script}).exit_code == 0);
  REQUIRE(version_of(d, "probe") == 2);

  // 15 good calls and 4 failures: under min_calls and under the rate, so it stays.
  for (int i = 0; i < 15; ++i) REQUIRE(d.http_code("GET", "/probe") == "200");
  for (int i = 0; i < 4; ++i) REQUIRE(d.http_code("GET", "/probe/throw") == "500");
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("GET", "/probe") == "200");
  // The watcher must have judged these 22 calls before "it stays" means
  // anything. Each of its passes weighs probe's error rate, then asks its
  // health, which probe logs: of two checks logged from now on, the second
  // comes from a pass that began after the last call.
  const auto health_checks = [&] { return occurrences(d.log(), "health check "); };
  const std::size_t checks_before = health_checks();
  REQUIRE(wait_until([&] { return health_checks() >= checks_before + 2; }));
  CHECK(version_of(d, "probe") == 2);  // 4 of 22 is 18 %: under 25 %
  for (int i = 0; i < 4; ++i) REQUIRE(d.http_code("GET", "/probe/throw") == "500");  // 8 of 26: 31 %

  REQUIRE(wait_until([&] { return version_of(d, "probe") == 1; }));
  CHECK(d.get_json("/probe") == Json{{"version", 1}, {"items", {"a"}}});
  // The record is written once the rollback is over, a moment after the swap.
  REQUIRE(wait_until([&] { return !events(d, "rolled back").empty(); }));
  const auto rolled = events(d, "rolled back");
  REQUIRE(rolled.size() == 1);
  CHECK(rolled[0]["release"] == "probe-2");
  CHECK_THAT(rolled[0]["detail"].get<std::string>(), Catch::Contains("probe: 8 of 26 calls failed"));
  CHECK(releases(d)["current"]["name"] == "initial");
  CHECK_THAT(d.log(), Catch::Contains("release 'probe-2' failed probation: ") && Catch::Contains("rolling back to 'initial'"));
  CHECK(d.stop() == 0);
}

TEST_CASE("during probation the host rolls a release back by itself: a failed health check",
          "[releases][probation]") {
  Daemon d(counter_and_probe(), kLongProbation);
  install_counter_and_probe_v2(d);
  d.start();
  for (int i = 0; i < 2; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  const std::string script =
      write_script(d, "both.toml", script_text("both", {upgrade_step("counter", 1, 2), upgrade_step("probe", 1, 2)}));
  REQUIRE(d.ctl({"upgrade", script}).exit_code == 0);
  // The rollback is rehearsed on the install's snapshot, taken in the
  // background: before the sick item (v1 rehearsed on it would be sick too).
  REQUIRE(wait_until([&] { return d.snapshots_written(); }));
  REQUIRE(d.http_code("POST", "/counter/incr") == "200");  // on v2, during probation
  REQUIRE(d.http_code("POST", "/probe/add?item=sick") == "200");

  // The whole release goes back, counter too, with what it counted meanwhile.
  REQUIRE(wait_until([&] { return version_of(d, "probe") == 1 && version_of(d, "counter") == 1; }));
  CHECK(d.get_json("/counter")["total"] == 3);
  // The record is written once the rollback is over, a moment after the swap.
  REQUIRE(wait_until([&] { return !events(d, "rolled back").empty(); }));
  const auto rolled = events(d, "rolled back");
  REQUIRE(rolled.size() == 1);
  CHECK_THAT(rolled[0]["detail"].get<std::string>(), Catch::Contains("sick item"));
  CHECK(d.stop() == 0);
}

TEST_CASE("a restart boots the last permanent release, not one on probation, with the state kept when it was installed",
          "[releases][restart]") {
  Daemon d(counter_and_kv(), kLongProbation);
  install_newer(d);
  d.start();
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  {
    RespClient kv(d.stream_port("kv"));
    REQUIRE(kv.call({"SET", "before", "release"}) == kOk);
  }
  REQUIRE(d.ctl({"upgrade", shipped_script("2026.12.0.toml")}).exit_code == 0);
  REQUIRE(d.http_code("POST", "/counter/incr?key=legacy") == "200");  // on v2: total 4
  {
    RespClient kv(d.stream_port("kv"));
    REQUIRE(kv.call({"SET", "during", "probation"}) == kOk);
  }
  CHECK(d.stop() == 0);

  // Like OTP: a release never made permanent is not booted, nor is its
  // code run to convert its state: v1 starts from the state kept in
  // schema 1 when the release was installed, and the log says what that
  // loses (the writes made on v2).
  d.start();
  CHECK(version_of(d, "counter") == 1);
  CHECK(version_of(d, "kv") == 1);
  CHECK(d.get_json("/counter")["total"] == 3);
  RespClient kv(d.stream_port("kv"));
  CHECK(kv.call({"GET", "before"}) == "$7\r\nrelease\r\n");
  CHECK(kv.call({"GET", "during"}) == "$-1\r\n");
  for (const std::string module : {"counter", "kv"})
    CHECK_THAT(d.log(), Catch::Contains(module + ": booting v1 from the state kept in schema 1 at ") &&
                            Catch::Contains("writes to " + module + " since then are not in it; the newer snapshot (v2, schema 2)"));
  // Restoring the state at boot was not an upgrade: there is no version to roll back to.
  const auto rollback = d.ctl({"rollback", "counter"});
  CHECK(rollback.exit_code == 1);
  CHECK(std::count(rollback.err.begin(), rollback.err.end(), '\n') == 1);
  CHECK(version_of(d, "counter") == 1);
  const Json record = releases(d);
  CHECK(record["current"]["name"] == "initial");
  CHECK_THAT(d.log(), Catch::Contains("release '2026.12.0' was on probation when moltd stopped: booting the last permanent release 'initial'"));
  CHECK(d.stop() == 0);
}

TEST_CASE("a corrupt or truncated snapshot is refused in one line and the module not started, other modules keep theirs",
          "[releases][snapshots]") {
  Daemon d(counter_and_probe(), kLongProbation);
  d.start();
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  REQUIRE(d.http_code("POST", "/probe/add?item=safe") == "200");
  CHECK(d.stop() == 0);

  const fs::path snapshot = d.run_dir() / "snapshots" / "counter.molt";
  REQUIRE(fs::exists(snapshot));
  std::string original = read_text(snapshot);
  SECTION("truncated") { fs::resize_file(snapshot, original.size() - 5); }
  SECTION("a flipped byte") {
    std::string bytes = original;
    bytes[bytes.size() - 3] ^= 0x20;
    std::ofstream(snapshot, std::ios::binary | std::ios::trunc) << bytes;
  }
  const std::string damaged = read_text(snapshot);

  d.start();
  CHECK(version_of(d, "counter") == 0);  // not started empty: not started
  CHECK(d.get_json("/probe") == Json{{"version", 1}, {"items", {"safe"}}});
  CHECK(d.status()["not_started"].size() == 1);
  CHECK(read_text(snapshot) == damaged);  // left in place, byte for byte: the next boot refuses it again
  const std::string log = d.log();
  CHECK(occurrences(log, "counter: not started: no state v1 can read (counter (" + snapshot.string() + "): snapshot: ") == 1);
  CHECK_THAT(log, Catch::Contains("moltctl restore counter FILE"));
  CHECK(d.stop() == 0);

  // Started empty only when asked: the damaged snapshot is then set aside.
  d.start({}, {"--allow-empty", "counter"});
  CHECK(d.get_json("/counter")["total"] == 0);
  std::vector<fs::path> aside;
  for (const auto& entry : fs::directory_iterator(d.run_dir() / "snapshots"))
    if (entry.path().filename().string().starts_with("counter.molt.corrupt-")) aside.push_back(entry.path());
  REQUIRE(aside.size() == 1);
  CHECK(read_text(aside[0]) == damaged);  // moved, byte for byte, never rewritten
  CHECK_THAT(d.log(), Catch::Contains("counter: started with its initial state (--allow-empty counter)") &&
                          Catch::Contains(aside[0].filename().string()));
  CHECK(d.stop() == 0);
}

TEST_CASE("upgrade --pin accepts [[ step ]] headers and refuses scripts it cannot rewrite line by line",
          "[releases][pin]") {
  Daemon d(counter_and_kv(), kLongProbation);
  install_newer(d);
  d.start();
  const std::string spaced = write_script(d, "spaced.toml", R"(release = "both"
[[ step ]]
module = "counter"
from = 1
to = 2
[[ step ]]
module = "kv"
from = 1
to = 2
)");
  const auto pinned = d.ctl({"upgrade", "--pin", spaced});
  INFO(pinned.out << pinned.err);
  REQUIRE(pinned.exit_code == 0);
  const std::string text = read_text(spaced);
  // Each pin under its own step: counter's before the second [[ step ]], kv's after it.
  const auto second_step = text.find("[[ step ]]", text.find("[[ step ]]") + 1);
  REQUIRE(second_step != std::string::npos);
  CHECK_THAT(text.substr(0, second_step), Catch::Contains(sha256_of(d.plugin_dir() / "counter-2.so")));
  CHECK_THAT(text.substr(second_step), Catch::Contains(sha256_of(d.plugin_dir() / "kv-2.so")));
  CHECK(d.ctl({"upgrade", "--check", spaced}).exit_code == 0);

  const std::string inline_steps = write_script(
      d, "inline.toml", "release = \"x\"\nstep = [ { module = \"counter\", from = 1, to = 2 } ]\n");
  const std::string before = read_text(inline_steps);
  const auto refused = d.ctl({"upgrade", "--pin", inline_steps});
  INFO(refused.out << refused.err);
  CHECK(refused.exit_code == 1);
  CHECK_THAT(refused.err, Catch::Contains("cannot place the pins") && Catch::Contains("nothing was changed"));
  CHECK(read_text(inline_steps) == before);
  CHECK(d.stop() == 0);
}

TEST_CASE("a release rolled back during probation to one that was itself on probation: that one is watched again",
          "[releases][probation]") {
  Daemon d(counter_and_probe(), "probation_seconds = 3\nprobation_min_calls = 5\nprobation_max_error_rate = 0.25");
  install_counter_and_probe_v2(d);
  d.start();
  const std::string counter = write_script(d, "b.toml", script_text("b", {upgrade_step("counter", 1, 2)}));
  const std::string probe = write_script(d, "c.toml", script_text("c", {upgrade_step("probe", 1, 2)}));
  REQUIRE(d.ctl({"upgrade", counter}).exit_code == 0);
  REQUIRE(d.ctl({"upgrade", probe}).exit_code == 0);
  for (int i = 0; i < 6; ++i) REQUIRE(d.http_code("GET", "/probe/throw") == "500");
  REQUIRE(wait_until([&] { return releases(d)["current"]["name"] == "b"; }));
  CHECK(version_of(d, "probe") == 1);
  CHECK(version_of(d, "counter") == 2);
  // b's probation starts again, and passes; had it failed, it would go back to "initial", not forward to c.
  CHECK(releases(d)["previous"]["name"] == "initial");
  const bool passed = wait_until([&] { return releases(d)["permanent"]["name"] == "b"; });
  INFO(releases(d).dump(1));
  REQUIRE(passed);
  CHECK(releases(d)["current"]["permanent"] == true);
  CHECK(d.stop() == 0);
}

TEST_CASE("a module added back whose snapshot is corrupt starts empty, the snapshot is moved aside and logged",
          "[releases][add-remove]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}, {"stash", test_image_path("stash-1.so"), 1}}, kLongProbation);
  d.start();
  REQUIRE(d.http_code("POST", "/stash/put?k=a&v=b") == "200");
  const std::string script = write_script(d, "drop.toml", script_text("drop", {remove_step("stash", 1)}));
  REQUIRE(d.ctl({"upgrade", script}).exit_code == 0);
  const fs::path snapshot = d.run_dir() / "snapshots" / "stash.molt";
  fs::resize_file(snapshot, fs::file_size(snapshot) - 1);

  const auto added = d.ctl({"upgrade", "--down", script});
  INFO(added.out << added.err);
  REQUIRE(added.exit_code == 0);
  CHECK(d.get_json("/stash")["items"] == 0);
  bool moved = false;
  for (const auto& entry : fs::directory_iterator(d.run_dir() / "snapshots"))
    moved = moved || entry.path().filename().string().starts_with("stash.molt.corrupt-");
  CHECK(moved);
  CHECK_THAT(d.log(), Catch::Contains("truncated") && Catch::Contains("moltctl restore stash FILE"));
  CHECK(d.stop() == 0);
}

TEST_CASE("an install's snapshot is taken in the background after the installs that follow within "
          "install_snapshot_delay_ms: status says it is pending, one snapshot for an upgrade and its rollback",
          "[releases][snapshot]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}},
           "probation_seconds = 0\nrehearse = \"never\"\ninstall_snapshot_delay_ms = 3000");
  d.install(plugin_path("counter", 2), "counter-2.so");
  d.start();
  REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  const auto asked = std::chrono::steady_clock::now();
  const auto up = d.ctl({"reload", "counter"});
  INFO(up.out << up.err);
  REQUIRE(up.exit_code == 0);
  const auto back = d.ctl({"rollback", "counter"});
  REQUIRE(back.exit_code == 0);
  const auto answered = std::chrono::steady_clock::now() - asked;
  const bool within_delay = answered < 2500ms;  // else the first snapshot may be written before the rollback
  // Pending, as both forms of status say, until the delay after the rollback.
  const Json status = d.status();
  CHECK(status["modules"][0]["snapshot_pending"] == "upgrade");
  const auto text = d.ctl({"status"});
  CHECK_THAT(text.out, Catch::Contains("\nsnapshot pending: counter (upgrade)\n"));
  CHECK_FALSE(fs::exists(d.run_dir() / "snapshots" / "counter.molt"));

  REQUIRE(wait_until([&] { return d.snapshots_written(); }, 20s));
  CHECK(fs::exists(d.run_dir() / "snapshots" / "counter.molt"));
  if (within_delay) CHECK(occurrences(d.log(), "[counter] upgrade snapshot written: ") == 1);
  CHECK_THAT(d.ctl({"status"}).out, !Catch::Contains("snapshot pending"));

  // What it holds is the state after the rollback: v1's, with the count.
  d.kill9();
  d.start();
  CHECK(version_of(d, "counter") == 1);
  CHECK(d.get_json("/counter")["total"] == 1);
  CHECK(d.stop() == 0);
}

TEST_CASE("moltctl save writes a pending install snapshot's state at once, and the pending one is dropped",
          "[releases][snapshot]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}},
           "probation_seconds = 0\nrehearse = \"never\"\ninstall_snapshot_delay_ms = 600000");
  d.install(plugin_path("counter", 2), "counter-2.so");
  d.start();
  REQUIRE(d.ctl({"reload", "counter"}).exit_code == 0);
  CHECK(d.status()["modules"][0]["snapshot_pending"] == "upgrade");
  REQUIRE(d.ctl({"save"}).exit_code == 0);
  CHECK(d.status()["modules"][0]["snapshot_pending"].is_null());
  CHECK_THAT(d.log(), Catch::Contains("[counter] requested snapshot written: "));
  CHECK(d.stop() == 0);
}
