// A faulty module costs that module, not the host (docs/operations.md, "When
// a module misbehaves"). A real moltd, real clients; the module's faults are
// test modules. Each test asserts what an operator sees: the control plane
// answering within a second throughout, the line that names the fault, and
// how moltd stops.
#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>
#include <fstream>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "resp_client.hpp"

using namespace molt::test;
using Json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

/// moltd's environment in these tests. Sanitized, molt-rehearse (which
/// inherits it) would turn a module's SIGSEGV into AddressSanitizer's report
/// and exit(1), and check for leaks at exit: as in a normal build, the
/// signals and exits must be the module's. (moltd's own crash handler
/// replaces ASan's, so moltd is not concerned.)
/// Set in this process's environment, which moltd inherits (an entry added
/// after it would not win: getenv finds the first).
std::vector<std::string> fault_environment() {
#ifdef MOLT_SANITIZED
  static const bool set = [] {
    const char* given = std::getenv("ASAN_OPTIONS");
    const std::string options = std::string(given != nullptr ? given : "") +
                                ":handle_segv=0:handle_sigbus=0:handle_sigill=0:handle_sigfpe=0:handle_abort=0:detect_leaks=0";
    return ::setenv("ASAN_OPTIONS", options.c_str(), 1) == 0;
  }();
  REQUIRE(set);
#endif
  return {};
}

/// The host configuration of every moltd here: stop-and-copy. faulty has
/// pre-copy (every build), which upgrades and snapshots use by default: an
/// upgrade would then hand the state over through receive_part, not
/// load_state, and a snapshot would start, fill and destroy a second
/// instance, where the faults of start, save_state, stop and the destructor
/// fire too. These tests are of the hooks stop-and-copy calls, in the one
/// instance that serves; pre-copy's faults are unit/precopy_rollback_test's.
const std::string kStopAndCopy = "precopy = \"never\"\n";

/// moltctl <args>, which must answer within a second.
ProcessResult ctl_within_a_second(const Daemon& d, const std::vector<std::string>& args) {
  const auto asked = Clock::now();
  ProcessResult result = d.ctl(args);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - asked);
  INFO("moltctl " << args.front() << " took " << took.count() << " ms: " << result.out << result.err);
  CHECK(took < 1s);
  return result;
}

/// GET <path> over HTTP, which must answer 200 within a second.
void http_within_a_second(const Daemon& d, const std::string& path) {
  const auto asked = Clock::now();
  const std::string code = d.http_code("GET", path);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - asked);
  INFO("GET " << path << " took " << took.count() << " ms");
  CHECK(code == "200");
  CHECK(took < 1s);
}

/// The module's oldest call in progress, as `moltctl status --json` shows it (null when idle).
Json oldest_call(const Daemon& d, const std::string& module) {
  const Json status = d.status();  // kept: a range-for over a temporary's member would dangle
  for (const auto& m : status["modules"])
    if (m["name"] == module) return m["oldest_call"];
  return nullptr;
}

}  // namespace

TEST_CASE("a call that never returns while the release is on probation: the control plane answers, the failed "
          "rollback is said, SIGTERM exits",
          "[faults][hang]") {
  // v2 admits calls concurrently, v1 one at a time: reloading to v1 makes a
  // release on probation whose module can be stuck behind one call.
  Daemon d({{"probe", probe_path(2), 2}},
           "probation_seconds = 600\nhealth_timeout_ms = 300\ncall_warn_ms = 500\nshutdown_grace_ms = 1000");
  d.start(fault_environment());
  d.install(probe_path(1), "probe-1.so");
  REQUIRE(d.ctl({"reload", "probe", (d.plugin_dir() / "probe-1.so").string()}).exit_code == 0);
  REQUIRE(d.curl({"-X", "POST", "/probe/add?item=before"}).exit_code == 0);

  // A client whose request never returns (the module sleeps ten minutes).
  Process stuck({"curl", "-sS", "--max-time", "120", "-X", "POST", "http://" + d.http() + "/probe/sleep?ms=600000"},
                d.dir() / "stuck.out");
  REQUIRE(wait_until([&] { return oldest_call(d, "probe").is_object(); }));
  CHECK(oldest_call(d, "probe")["what"] == "handle");

  // The host logs it once it passes host.call_warn_ms.
  REQUIRE(wait_until([&] { return d.log().find("handle has run for") != std::string::npos; }));
  CHECK_THAT(d.log(), Catch::Contains("(host.call_warn_ms = 500); "));

  // The watcher's health check gets no answer: the release fails probation,
  // and rolling it back cannot quiesce the stuck module. It says so.
  REQUIRE(wait_until([&] { return d.log().find("failed probation: probe: health check: no answer within 300 ms: "
                                               "handle has run for") != std::string::npos; },
                     15s));
  REQUIRE(wait_until([&] { return d.log().find("rolling release") != std::string::npos &&
                                  d.log().find("failed: ") != std::string::npos; },
                     15s));

  // Throughout, the control plane and the status endpoints answer within a second.
  const auto status = ctl_within_a_second(d, {"status"});
  CHECK(status.exit_code == 0);
  CHECK_THAT(status.out, Catch::Contains("handle ") && Catch::Contains("stuck? probe: handle has run for "));
  CHECK(ctl_within_a_second(d, {"releases"}).exit_code == 0);
  CHECK(ctl_within_a_second(d, {"history"}).exit_code == 0);
  CHECK(ctl_within_a_second(d, {"status", "--json"}).exit_code == 0);
  http_within_a_second(d, "/-/status");
  http_within_a_second(d, "/-/metrics");
  const std::string metrics = d.curl({"/-/metrics"}).out;
  CHECK_THAT(metrics, Catch::Contains("molt_module_oldest_call_seconds{module=\"probe\"} "));
  CHECK_THAT(metrics, !Catch::Contains("molt_module_oldest_call_seconds{module=\"probe\"} 0\n"));

  // SIGTERM: after the grace period moltd names the module it could not
  // save in one line, and exits 1 (its last snapshot stands).
  const auto asked = Clock::now();
  CHECK(d.stop() == 1);
  CHECK(Clock::now() - asked < 15s);
  const std::string log = d.log();
  CHECK_THAT(log, Catch::Contains("shutdown: probe: handle, running for ") &&
                      Catch::Contains("did not finish within 2000 ms; its last snapshot stands"));
  CHECK_THAT(log, Catch::Contains("exiting without stopping the modules (1 module(s) not saved); exit status 1"));
}

TEST_CASE("a second SIGTERM exits at once while moltd waits for a stuck call", "[faults][hang]") {
  Daemon d({{"probe", probe_path(1), 1}}, "shutdown_grace_ms = 60000");
  d.start(fault_environment());
  Process stuck({"curl", "-sS", "--max-time", "120", "-X", "POST", "http://" + d.http() + "/probe/sleep?ms=600000"},
                d.dir() / "stuck.out");
  REQUIRE(wait_until([&] { return oldest_call(d, "probe").is_object(); }));
  d.process().signal(SIGTERM);
  REQUIRE(wait_until([&] { return d.log().find("SIGTERM: stopping") != std::string::npos; }));
  const auto asked = Clock::now();
  d.process().signal(SIGTERM);
  const auto code = d.process().wait(5s);
  REQUIRE(code.has_value());
  CHECK(*code == 1);
  CHECK(Clock::now() - asked < 2s);
  CHECK_THAT(d.log(), Catch::Contains("SIGTERM again: exiting now, without waiting for requests or writing snapshots"));
}

namespace {

/// faulty v1 serving one item ("kept"), and `variant` installed as faulty-2.so.
struct FaultyDaemon {
  Daemon d;
  explicit FaultyDaemon(const std::string& variant, const std::string& host_config = "", int probation_seconds = 600)
      : d({{"faulty", test_image_path("faulty-1.so"), 1}},
          kStopAndCopy + "probation_seconds = " + std::to_string(probation_seconds) + "\n" + host_config) {
    d.start(fault_environment());
    REQUIRE(d.http_code("POST", "/faulty/add?item=kept") == "200");
    d.install(test_image_path(variant), "faulty-2.so");
  }
};

/// Whether moltd's memory maps a copy of faulty v2.
bool maps_faulty_v2(pid_t pid) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  const std::string text((std::istreambuf_iterator<char>(maps)), std::istreambuf_iterator<char>());
  return text.find("/faulty-2-") != std::string::npos;
}

/// moltd's stdout and stderr, all its runs: where the crash handler's line goes.
std::string output(const Daemon& d) {
  std::ifstream in(d.dir() / "moltd.out");
  return {std::istreambuf_iterator<char>(in), {}};
}

/// moltd's exit status once it has died of a module's fault (128 + the
/// signal, as systemd sees it).
int exit_status_once_dead(Daemon& d) {
  const auto code = d.process().wait(10s);
  REQUIRE(code.has_value());
  return *code;
}

/// The files `moltctl quarantine --json` lists.
std::vector<std::string> quarantined_files(const Daemon& d) {
  const auto listed = ctl_within_a_second(d, {"quarantine", "--json"});
  REQUIRE(listed.exit_code == 0);
  const Json images = Json::parse(listed.out)["images"];  // kept: a range-for over a temporary's member would dangle
  std::vector<std::string> files;
  for (const auto& image : images) files.push_back(image["file"]);
  return files;
}

const Json kKeptOnV1{{"items", {"kept"}}, {"version", 1}};

}  // namespace

TEST_CASE("new code that fails its rehearsal is refused with one line and never runs in moltd", "[faults][rehearsal]") {
  struct Case {
    const char* variant;
    const char* reason;
  };
  const Case cases[] = {
      {"faulty-2-segv-load_state.so", "rehearsal of faulty v2: SIGSEGV in load_state"},
      {"faulty-2-exit-static_init.so", "rehearsal of faulty v2: exit(1) in static initialisation"},
      {"faulty-2-throw-static_init.so", "rehearsal of faulty v2: SIGABRT in static initialisation"},
      {"faulty-2-segv-static_init.so", "rehearsal of faulty v2: SIGSEGV in static initialisation"},
      {"faulty-2-hang-load_state.so", "rehearsal of faulty v2: did not finish load_state within"},
      {"faulty-2-thread_joinable-start.so", "rehearsal of faulty v2: SIGABRT in destroy"},
      {"faulty-2-thread_detached-start.so", "rehearsal of faulty v2: left 1 thread(s) running after stop"},
      {"faulty-2-bad_alloc-load_state.so", "rehearsal of faulty v2: load_state threw: std::bad_alloc"},
  };
  for (const Case& c : cases) {
    INFO(c.variant);
    FaultyDaemon f(c.variant, "rehearse_timeout_ms = 2000");
    const auto reload = f.d.ctl({"reload", "faulty"});
    CHECK(reload.exit_code == 1);
    CHECK_THAT(reload.err, Catch::Contains(c.reason));
    // The old version serves its state; moltd never mapped the new image.
    CHECK(f.d.get_json("/faulty") == Json{{"items", {"kept"}}, {"version", 1}});
    CHECK_FALSE(maps_faulty_v2(f.d.pid()));
    CHECK(f.d.process().running());
    CHECK(ctl_within_a_second(f.d, {"status"}).exit_code == 0);
    CHECK(f.d.stop() == 0);
  }
}

TEST_CASE("a crash in new code is recorded, named at the next boot, kept in history, and its image quarantined",
          "[faults][crash]") {
  // Without the rehearsal the live process runs the new load_state, and dies.
  FaultyDaemon f("faulty-2-segv-load_state.so", "rehearse = \"never\"");
  Daemon& d = f.d;
  REQUIRE(d.ctl({"save"}).exit_code == 0);
  const auto reload = d.ctl({"reload", "faulty"});
  CHECK(reload.exit_code == 1);
  const auto died = d.process().wait(10s);
  REQUIRE(died.has_value());
  CHECK(*died == 128 + SIGSEGV);  // the exit status systemd sees: Restart=on-failure restarts it
  REQUIRE(std::filesystem::exists(d.run_dir() / "crash.record"));

  d.start(fault_environment());  // as systemd would
  const std::string log = d.log();
  CHECK_THAT(log, Catch::Contains("the previous run crashed in faulty v2 (faulty-2.so, sha256 ") &&
                      Catch::Contains("…) in load_state: SIGSEGV"));
  CHECK_THAT(log, Catch::Contains("crashed moltd in load_state (SIGSEGV) before it was ever permanent; moltd will "
                                  "not run it again until 'moltctl quarantine clear " +
                                  (d.plugin_dir() / "faulty-2.so").string() + "'"));
  CHECK_FALSE(std::filesystem::exists(d.run_dir() / "crash.record"));  // read, and kept in crashes/
  CHECK_FALSE(std::filesystem::is_empty(d.run_dir() / "crashes"));
  // The state from before the crash, on v1.
  CHECK(d.get_json("/faulty") == Json{{"items", {"kept"}}, {"version", 1}});
  // History survives the restart and shows the crash.
  const auto history = d.ctl({"history"});
  // (The upgrade that crashed has no report: the process died inside it.)
  CHECK_THAT(history.out, Catch::Contains("faulty       crashed: the previous run crashed in faulty v2"));
  // The image is quarantined: listed, and refused by the next reload.
  const Json quarantined = Json::parse(d.ctl({"quarantine", "--json"}).out);
  REQUIRE(quarantined["images"].size() == 1);
  CHECK(quarantined["images"][0]["file"] == (d.plugin_dir() / "faulty-2.so").string());
  const auto again = d.ctl({"reload", "faulty"});
  CHECK(again.exit_code == 1);
  CHECK_THAT(again.err, Catch::Contains("quarantined: crashed moltd in load_state (SIGSEGV) before it was ever permanent"));
  CHECK(d.process().running());
  // Cleared by the operator: listed no more.
  const auto cleared = d.ctl({"quarantine", "clear", (d.plugin_dir() / "faulty-2.so").string()});
  CHECK(cleared.exit_code == 0);
  CHECK_THAT(cleared.out, Catch::Contains("moltd may run it again"));
  CHECK(Json::parse(d.ctl({"quarantine", "--json"}).out)["images"].empty());
  CHECK(d.stop() == 0);
}

TEST_CASE("a crash loop in the permanent release: three crashes in the same image quarantine it, and the next boot "
          "falls back to the release before, with the state it can read",
          "[faults][crash]") {
  Daemon d({{"faulty", test_image_path("faulty-1.so"), 1}}, kStopAndCopy + "probation_seconds = 0");
  d.start(fault_environment());
  REQUIRE(d.http_code("POST", "/faulty/add?item=before") == "200");
  d.install(test_image_path("faulty-2-abort-handle.so"), "faulty-2.so");
  REQUIRE(d.ctl({"reload", "faulty"}).exit_code == 0);  // permanent at once: probation_seconds = 0
  REQUIRE(d.http_code("POST", "/faulty/add?item=after") == "200");
  REQUIRE(d.ctl({"save"}).exit_code == 0);

  for (int crash = 1; crash <= 3; ++crash) {
    INFO("crash " << crash);
    (void)d.http_code("POST", "/faulty/trigger");  // abort() in handle
    const auto died = d.process().wait(10s);
    REQUIRE(died.has_value());
    CHECK(*died == 128 + SIGABRT);
    d.start(fault_environment());  // as systemd's Restart=on-failure would
    REQUIRE(wait_until([&] { return occurrences(d.log(), "the previous run crashed in faulty v2") == static_cast<std::size_t>(crash); }));
    if (crash < 3) CHECK(d.get_json("/faulty")["version"] == 2);  // a permanent image: crashes are counted
  }
  const std::string log = d.log();
  CHECK_THAT(log, Catch::Contains("…) in handle: SIGABRT"));
  CHECK_THAT(log, Catch::Contains("is quarantined (") && Catch::Contains("booting v1 of release"));
  // v1 serves the state kept in its schema when v2 was installed: what v2
  // wrote since is lost, and the log says so.
  CHECK(d.get_json("/faulty") == Json{{"items", {"before"}}, {"version", 1}});
  CHECK_THAT(log, Catch::Contains("faulty: booting v1 from the state kept in schema 1"));
  CHECK(Json::parse(d.ctl({"quarantine", "--json"}).out)["images"].size() == 1);
  CHECK(d.stop() == 0);
}

TEST_CASE("a segfault in new code's on_data, live: moltd dies of it, the next boot names it, quarantines the image and "
          "boots the permanent release with the state kept before the upgrade",
          "[faults][crash]") {
  // on_data runs only on a live connection: the rehearsal cannot meet this fault.
  Daemon d({{"faulty", test_image_path("faulty-1.so"), 1, "listen = \"127.0.0.1:0\""}},
           kStopAndCopy + "probation_seconds = 600");
  d.start(fault_environment());
  REQUIRE(d.http_code("POST", "/faulty/add?item=before") == "200");
  d.install(test_image_path("faulty-2-segv-on_data.so"), "faulty-2.so");
  const auto reload = d.ctl({"reload", "faulty"});
  REQUIRE(reload.exit_code == 0);
  CHECK_THAT(reload.out, Catch::Contains("rehearse") && Catch::Contains("in a child process: passed in "));
  {
    RespClient client(d.stream_port("faulty"));
    client.send_raw("TRIGGER\n");
    (void)client.read_reply();  // the connection closes as moltd dies
  }
  const auto died = d.process().wait(10s);
  REQUIRE(died.has_value());
  CHECK(*died == 128 + SIGSEGV);

  d.start(fault_environment());
  const std::string log = d.log();
  CHECK_THAT(log, Catch::Contains("the previous run crashed in faulty v2 (faulty-2.so, sha256 ") &&
                      Catch::Contains("…) in on_data: SIGSEGV"));
  CHECK_THAT(log, Catch::Contains("crashed moltd in on_data (SIGSEGV) before it was ever permanent"));
  CHECK_THAT(log, Catch::Contains("was on probation when moltd stopped"));
  // v1, from the state kept in schema 1 when v2 was installed.
  CHECK(d.get_json("/faulty") == Json{{"items", {"before"}}, {"version", 1}});
  CHECK_FALSE(maps_faulty_v2(d.pid()));
  CHECK(d.stop() == 0);
}

TEST_CASE("a state larger than max_state_bytes is never written as a snapshot: the previous one stands and boots",
          "[faults][snapshot]") {
  Daemon d({{"probe", probe_path(1), 1}}, "max_state_bytes = 1024");
  d.start(fault_environment());
  REQUIRE(d.http_code("POST", "/probe/add?item=small") == "200");
  REQUIRE(d.ctl({"save"}).exit_code == 0);
  REQUIRE(d.http_code("POST", "/probe/fill?n=200") == "200");  // well over 1 KiB of state
  const auto save = d.ctl({"save"});
  CHECK(save.exit_code == 1);
  CHECK_THAT(d.log(), Catch::Contains("is larger than host.max_state_bytes (1024), which a boot could not read back: "
                                      "not written, the previous snapshot stands; raise host.max_state_bytes"));
  // At shutdown too: moltd says which module it could not save, and exits 1.
  CHECK(d.stop() == 1);
  CHECK_THAT(d.log(), Catch::Contains("shutdown: probe: ") && Catch::Contains("its last snapshot stands"));
  d.start(fault_environment());
  CHECK(d.get_json("/probe") == Json{{"version", 1}, {"items", {"small"}}});
  CHECK_THAT(d.log(), !Catch::Contains("corrupt"));
  CHECK(d.stop() == 0);  // the state it booted with fits
}

TEST_CASE("a detached thread a module leaves running keeps its image loaded: moltd says so, and does not crash",
          "[faults][threads]") {
  Daemon d({{"faulty", test_image_path("faulty-1.so"), 1}}, kStopAndCopy + "probation_seconds = 0\nrehearse = \"never\"");
  d.start(fault_environment());
  REQUIRE(d.http_code("POST", "/faulty/add?item=kept") == "200");
  d.install(test_image_path("faulty-2-thread_detached-start.so"), "faulty-2.so");
  REQUIRE(d.ctl({"reload", "faulty"}).exit_code == 0);
  CHECK_THAT(d.log(), Catch::Contains("[faulty] v2: 1 thread(s) its code started are running; moltd cannot wait for "
                                      "them, and will not unload this image while one runs"));

  // Back to v1: v2 stops, is destroyed, and its image would be unloaded,
  // under the feet of the thread, which calls into it every 20 ms.
  const auto back = d.ctl({"reload", "faulty", (d.plugin_dir() / "faulty-1.so").string()});
  REQUIRE(back.exit_code == 0);
  const auto unloaded = Clock::now();
  CHECK_THAT(d.log(), Catch::Contains("[faulty] v2: 1 thread(s) its code started still run after stop() and its "
                                      "destructor; its image stays loaded until moltd exits, so that they never run "
                                      "into unmapped code"));
  CHECK(maps_faulty_v2(d.pid()));
  // Before, moltd died ~200 ms after the unload: it serves on, well past that.
  int served = 0;
  while (Clock::now() - unloaded < 600ms && served < 1000) {
    REQUIRE(d.get_json("/faulty") == Json{{"items", {"kept"}}, {"version", 1}});
    ++served;
  }
  CHECK(d.process().running());
  CHECK(ctl_within_a_second(d, {"status"}).exit_code == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("a joinable thread a module never joins: its destructor aborts moltd, and the record names the image",
          "[faults][threads]") {
  Daemon d({{"faulty", test_image_path("faulty-1.so"), 1}}, kStopAndCopy + "probation_seconds = 600\nrehearse = \"never\"");
  d.start(fault_environment());
  REQUIRE(d.http_code("POST", "/faulty/add?item=kept") == "200");
  d.install(test_image_path("faulty-2-thread_joinable-start.so"), "faulty-2.so");
  REQUIRE(d.ctl({"reload", "faulty"}).exit_code == 0);
  REQUIRE(d.http_code("POST", "/faulty/add?item=on-v2") == "200");
  // Rolling back destroys v2's instance, whose std::thread member was never joined.
  (void)d.ctl({"rollback", "faulty"});
  const auto died = d.process().wait(10s);
  REQUIRE(died.has_value());
  CHECK(*died == 128 + SIGABRT);

  d.start(fault_environment());
  const std::string log = d.log();
  CHECK_THAT(log, Catch::Contains("the previous run crashed in faulty v2 (faulty-2.so, sha256 ") &&
                      Catch::Contains("…) in destructor: SIGABRT"));
  CHECK_THAT(log, Catch::Contains("crashed moltd in destructor (SIGABRT) before it was ever permanent"));
  // The release was on probation: v1 boots from the state kept in schema 1
  // when v2 was installed.
  CHECK(d.get_json("/faulty") == Json{{"items", {"kept"}}, {"version", 1}});
  CHECK(Json::parse(d.ctl({"quarantine", "--json"}).out)["images"].size() == 1);
  CHECK(d.stop() == 0);
}

TEST_CASE("a boot that converts a snapshot into a newer schema rehearses the conversion first: a crash there costs "
          "that module, not the boot",
          "[faults][rehearsal][boot]") {
  Daemon d({{"faulty", test_image_path("faulty-1.so"), 1}}, kStopAndCopy);
  d.start(fault_environment());
  REQUIRE(d.http_code("POST", "/faulty/add?item=kept") == "200");
  REQUIRE(d.stop() == 0);  // its snapshot: schema 1
  const std::string snapshot_before = read_file(d.run_dir() / "snapshots" / "faulty.molt");
  REQUIRE_FALSE(snapshot_before.empty());

  // A first start on v2 (no release record), whose load_state crashes on
  // schema 1: the boot would run it in moltd to convert the snapshot.
  d.install(test_image_path("faulty-2-segv-load_state.so"), "faulty-2.so");
  std::filesystem::remove(d.run_dir() / "releases.json");
  std::string config = read_file(d.config());
  config.replace(config.find("version = 1"), 11, "version = 2");
  write_file(d.config(), config);

  d.start(fault_environment());
  const std::string log = d.log();
  CHECK_THAT(log, Catch::Contains("faulty: not started: no state v2 can read (the snapshot (v1, schema 1) could not be "
                                  "restored: ") &&
                      Catch::Contains("rehearsal of faulty v2: SIGSEGV in load_state"));
  CHECK_FALSE(std::filesystem::exists(d.run_dir() / "crash.record"));
  const Json status = d.status();
  REQUIRE(status["not_started"].size() == 1);
  CHECK(status["not_started"][0]["module"] == "faulty");
  CHECK(read_file(d.run_dir() / "snapshots" / "faulty.molt") == snapshot_before);  // kept for a restore
  CHECK(ctl_within_a_second(d, {"status"}).exit_code == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("new code that crashes moltd live: the crash names the hook, the next boot quarantines the image and boots "
          "v1 with the state kept before the upgrade",
          "[faults][crash]") {
  struct Case {
    const char* variant;
    const char* host_config;
    const char* trigger;  ///< POST that makes v2 crash; nullptr: the reload itself does
    const char* hook;     ///< as the crash record names it (module_hook)
    const char* cause;
    int status;  ///< moltd's exit status
  };
  const Case cases[] = {
      // The rehearsal makes no job step and fires no timer: it passes them.
      {"faulty-2-segv-job_step.so", "", "/faulty/job?name=j", "run_job_step", "SIGSEGV", 128 + SIGSEGV},
      {"faulty-2-segv-timer.so", "", "/faulty/timer?ms=1", "on_timer", "SIGSEGV", 128 + SIGSEGV},
      // Without the rehearsal, the reload runs them in moltd.
      {"faulty-2-exit-static_init.so", "rehearse = \"never\"", nullptr, "static initialisation", "exit(1)", 1},
      {"faulty-2-throw-static_init.so", "rehearse = \"never\"", nullptr, "static initialisation", "SIGABRT",
       128 + SIGABRT},
      {"faulty-2-segv-start.so", "rehearse = \"never\"", nullptr, "start", "SIGSEGV", 128 + SIGSEGV},
  };
  for (const Case& c : cases) {
    INFO(c.variant);
    FaultyDaemon f(c.variant, c.host_config);
    Daemon& d = f.d;
    const std::string image = (d.plugin_dir() / "faulty-2.so").string();
    const auto reload = d.ctl({"reload", "faulty"});
    if (c.trigger != nullptr) {
      REQUIRE(reload.exit_code == 0);
      CHECK_THAT(reload.out, Catch::Contains("faulty v1 -> v2: succeeded") &&
                                 Catch::Contains("rehearse") && Catch::Contains("in a child process: passed in "));
      CHECK(ctl_within_a_second(d, {"status"}).exit_code == 0);
      (void)d.http_code("POST", c.trigger);  // answered (the job or timer runs after), or cut off by the crash
    } else {
      CHECK(reload.exit_code == 1);  // moltd died while it answered
    }
    CHECK(exit_status_once_dead(d) == c.status);
    CHECK_THAT(output(d), Catch::Contains(std::string("moltd: ") + c.cause + " in faulty v2 (faulty-2.so) in " + c.hook +
                                          "; crash record " + (d.run_dir() / "crash.record").string()));

    d.start(fault_environment());  // as systemd's Restart=on-failure would
    const std::string log = d.log();
    INFO(log);
    CHECK_THAT(log, Catch::Contains("the previous run crashed in faulty v2 (faulty-2.so, sha256 ") &&
                        Catch::Contains(std::string("…) in ") + c.hook + ": " + c.cause));
    CHECK_THAT(log, Catch::Contains("quarantined " + image + " (sha256 ") &&
                        Catch::Contains(std::string("crashed moltd in ") + c.hook + " (" + c.cause +
                                        ") before it was ever permanent; moltd will not run it again until 'moltctl "
                                        "quarantine clear " + image + "'"));
    CHECK(quarantined_files(d) == std::vector<std::string>{image});
    // v1, with the state it had before the upgrade (kept in its schema).
    CHECK_THAT(log, Catch::Contains("faulty: booting v1 from the state kept in schema 1 at "));
    CHECK(d.get_json("/faulty") == kKeptOnV1);
    CHECK_FALSE(maps_faulty_v2(d.pid()));
    CHECK(ctl_within_a_second(d, {"status"}).exit_code == 0);
    CHECK(d.stop() == 0);
  }
}

TEST_CASE("a health check that never returns while the release is on probation: the release fails probation, the "
          "rollback says it cannot pause the module, the control plane answers, SIGTERM exits 1, the next boot runs v1",
          "[faults][hang]") {
  FaultyDaemon f("faulty-2-hang-health.so", "rehearse = \"never\"\nhealth_timeout_ms = 300\nquiesce_timeout_ms = 500");
  Daemon& d = f.d;
  REQUIRE(d.ctl({"reload", "faulty"}).exit_code == 0);
  // The watcher's health check (once a second) gets no answer.
  REQUIRE(wait_until([&] {
    return d.log().find("release 'initial+faulty-v2' failed probation: faulty: health check: health() did not return "
                        "within 300 ms; rolling back to 'initial'") != std::string::npos;
  }));
  // health() still holds faulty's turn (a Serial module): the rollback cannot
  // pause it within host.quiesce_timeout_ms, and says so.
  REQUIRE(wait_until([&] {
    return d.log().find("rolling release 'initial+faulty-v2' back to 'initial' failed: ") != std::string::npos;
  }));
  CHECK_THAT(d.log(), Catch::Contains("failed: faulty v2 (" + (d.plugin_dir() / "faulty-2.so").string() +
                                      "): quiesce: 1 call(s) still running after 500 ms; 'initial+faulty-v2' keeps "
                                      "running: fix it and run moltctl upgrade --down"));

  const auto status = ctl_within_a_second(d, {"status", "--json"});
  REQUIRE(status.exit_code == 0);
  CHECK(oldest_call(d, "faulty")["what"] == "health");
  CHECK(ctl_within_a_second(d, {"releases"}).exit_code == 0);
  http_within_a_second(d, "/-/status");

  // SIGTERM: the shutdown snapshot cannot pause faulty either; moltd names it and exits 1.
  const auto asked = Clock::now();
  CHECK(d.stop() == 1);
  CHECK(Clock::now() - asked < 10s);
  const std::string log = d.log();
  CHECK_THAT(log, Catch::Contains("shutdown: faulty: health, running for ") &&
                      Catch::Contains("its last snapshot stands"));
  CHECK_THAT(log, Catch::Contains("exiting without stopping the modules (1 module(s) not saved); exit status 1"));

  // The release on probation is not booted again: v1, from the state kept in schema 1.
  d.start(fault_environment());
  CHECK_THAT(d.log(), Catch::Contains("release 'initial+faulty-v2' was on probation when moltd stopped"));
  CHECK(d.get_json("/faulty") == kKeptOnV1);
  CHECK(quarantined_files(d).empty());  // a hang is not a crash
  CHECK(d.stop() == 0);
}

TEST_CASE("a health check that throws while the release is on probation: the release is rolled back with the "
          "exception's text, and v1 serves its state",
          "[faults][probation]") {
  FaultyDaemon f("faulty-2-throw-health.so", "rehearse = \"never\"");
  Daemon& d = f.d;
  REQUIRE(d.ctl({"reload", "faulty"}).exit_code == 0);
  REQUIRE(d.http_code("POST", "/faulty/add?item=on-v2") == "200");
  REQUIRE(wait_until([&] {
    return d.log().find("release 'initial+faulty-v2' failed probation: faulty: health check: health threw: faulty: "
                        "throw in health, on purpose; rolling back to 'initial'") != std::string::npos;
  }));
  // The release record says so once the rollback is done (v1 serves a moment before).
  REQUIRE(wait_until([&] {
    return ctl_within_a_second(d, {"releases"}).out.find("initial+faulty-v2        rolled back") != std::string::npos;
  }));
  // v2 converts its state down: what it was given and what it added.
  CHECK(d.get_json("/faulty") == Json{{"items", {"kept", "on-v2"}}, {"version", 1}});
  CHECK_THAT(d.log(), !Catch::Contains("rolling release 'initial+faulty-v2' back to 'initial' failed"));
  CHECK(quarantined_files(d).empty());
  CHECK(d.stop() == 0);
}

TEST_CASE("a save_state that never returns: the reload succeeds, its snapshot and moltctl save fail with one line "
          "naming faulty, status shows the stuck call, SIGTERM exits 1, the next boot runs v1 from the kept state",
          "[faults][hang]") {
  FaultyDaemon f("faulty-2-hang-save_state.so",
                 "rehearse = \"never\"\nsave_timeout_ms = 500\nquiesce_timeout_ms = 500\ncall_warn_ms = 500\nhealth_timeout_ms = 300");
  Daemon& d = f.d;
  // Loading v2 is fine; the snapshot after the install is its first save_state.
  auto asked = Clock::now();
  const auto reload = d.ctl({"reload", "faulty"});
  CHECK(Clock::now() - asked < 1500ms);
  CHECK(reload.exit_code == 0);
  CHECK_THAT(reload.out, Catch::Contains("faulty v1 -> v2: succeeded"));
  // The install's snapshot follows in the background, a second later.
  CHECK(wait_until([&] {
    return d.log().find("[faulty] upgrade snapshot not written: faulty v2: snapshot: save_state did not return within "
                        "500 ms; the module stays suspended until it does") != std::string::npos;
  }));

  // Another snapshot waits for that one, up to host.quiesce_timeout_ms.
  asked = Clock::now();
  const auto save = d.ctl({"save"});
  CHECK(Clock::now() - asked < 1500ms);
  CHECK(save.exit_code == 1);
  CHECK(save.out.empty());
  CHECK(save.err == "moltctl: snapshot failed for 1 module(s) (the last snapshot of each stands): faulty: an upgrade "
                    "or another snapshot was still in progress after 500 ms\n");

  const auto status = ctl_within_a_second(d, {"status"});
  CHECK(status.exit_code == 0);
  CHECK(oldest_call(d, "faulty")["what"] == "save_state");
  CHECK_THAT(status.out, Catch::Contains("stuck? faulty: save_state has run for "));

  CHECK(d.stop() == 1);
  const std::string log = d.log();
  CHECK_THAT(log, Catch::Contains("shutdown: faulty: ") && Catch::Contains("its last snapshot stands"));
  CHECK_THAT(log, Catch::Contains("exiting without stopping the modules (1 module(s) not saved); exit status 1"));

  // The release was on probation: v1 boots, from the state kept in schema 1
  // before the upgrade (v2 never wrote a snapshot).
  d.start(fault_environment());
  CHECK_THAT(d.log(), Catch::Contains("release 'initial+faulty-v2' was on probation when moltd stopped"));
  CHECK_THAT(d.log(), Catch::Contains("faulty: booting v1 from the state kept in schema 1 at ") &&
                          Catch::Contains("; no snapshot was written after it"));
  CHECK(d.get_json("/faulty") == kKeptOnV1);
  CHECK(d.stop() == 0);
}

TEST_CASE("a stop() that never returns: the reload away from it succeeds, v1 serves the state, a warning says what "
          "stays loaded, SIGTERM exits",
          "[faults][hang]") {
  FaultyDaemon f("faulty-2-hang-stop.so", "rehearse = \"never\"\nstop_timeout_ms = 500", 0);
  Daemon& d = f.d;
  REQUIRE(d.ctl({"reload", "faulty"}).exit_code == 0);  // v1's stop() returns
  REQUIRE(d.http_code("POST", "/faulty/add?item=on-v2") == "200");
  const auto asked = Clock::now();
  const auto back = d.ctl({"reload", "faulty", (d.plugin_dir() / "faulty-1.so").string()});
  CHECK(back.exit_code == 0);
  CHECK_THAT(back.out, Catch::Contains("faulty v2 -> v1: succeeded"));
  CHECK(Clock::now() - asked < 3s);
  CHECK_THAT(d.log(), Catch::Contains("[faulty] v2: stop() or its destructor did not return within 500 ms; the "
                                      "instance and its image stay loaded"));
  CHECK(d.get_json("/faulty") == Json{{"items", {"kept", "on-v2"}}, {"version", 1}});
  CHECK(maps_faulty_v2(d.pid()));  // kept loaded: a thread is still inside its stop()
  CHECK(ctl_within_a_second(d, {"status"}).exit_code == 0);
  CHECK(d.stop() == 0);
  CHECK_THAT(d.log(), Catch::Contains("stopped"));
}

TEST_CASE("new code that throws while it is loaded (constructor, start, load_state): the reload fails with one line, "
          "v1 serves its state byte for byte, nothing is quarantined",
          "[faults][throw]") {
  struct Case {
    const char* variant;
    const char* outcome;  ///< refused: before anything paused; rolled back: after
    const char* error;    ///< the end of moltctl's line
  };
  const Case cases[] = {
      {"faulty-2-throw-construct.so", "refused", "start: constructor threw: faulty: throw in construct, on purpose"},
      {"faulty-2-throw-start.so", "refused", "start: start threw: faulty: throw in start, on purpose"},
      {"faulty-2-throw-load_state.so", "rolled back",
       "migrate: load_state threw: faulty: throw in load_state, on purpose"},
      {"faulty-2-bad_alloc-load_state.so", "rolled back", "migrate: load_state threw: std::bad_alloc"},
  };
  for (const Case& c : cases) {
    INFO(c.variant);
    FaultyDaemon f(c.variant, "rehearse = \"never\"");
    Daemon& d = f.d;
    const std::string before = d.curl({"/faulty"}).out;
    const auto reload = d.ctl({"reload", "faulty"});
    CHECK(reload.exit_code == 1);
    INFO(reload.out << reload.err);
    CHECK_THAT(reload.out, Catch::StartsWith(std::string("faulty v1 -> v2: ") + c.outcome + " (v1 keeps serving)\n"));
    CHECK(occurrences(reload.err, "\n") == 1);
    CHECK_THAT(reload.err, Catch::StartsWith(std::string("moltctl: faulty v1 -> v2 ") + c.outcome) &&
                               Catch::EndsWith("; faulty v2 (" + (d.plugin_dir() / "faulty-2.so").string() + "): " +
                                               c.error + "\n"));
    CHECK(d.process().running());
    CHECK(d.curl({"/faulty"}).out == before);
    CHECK(d.get_json("/faulty") == kKeptOnV1);
    CHECK(quarantined_files(d).empty());
    CHECK(ctl_within_a_second(d, {"status"}).exit_code == 0);
    CHECK(d.stop() == 0);
  }
}

TEST_CASE("a destructor that aborts, live: the reload away from it kills moltd with SIGABRT in destructor, and each "
          "boot of the permanent release, v2, dies the same way until the third crash quarantines it, then v1 boots",
          "[faults][crash]") {
  FaultyDaemon f("faulty-2-abort-destroy.so", "rehearse = \"never\"", 0);
  Daemon& d = f.d;
  const std::string image = (d.plugin_dir() / "faulty-2.so").string();
  REQUIRE(d.ctl({"reload", "faulty"}).exit_code == 0);  // permanent at once; v1's destructor is fine
  REQUIRE(d.http_code("POST", "/faulty/add?item=on-v2") == "200");
  const auto back = d.ctl({"reload", "faulty", (d.plugin_dir() / "faulty-1.so").string()});
  CHECK(back.exit_code == 1);  // moltd died while it answered: v2's instance is destroyed after the switch to v1
  CHECK(exit_status_once_dead(d) == 128 + SIGABRT);
  CHECK_THAT(output(d), Catch::Contains("moltd: SIGABRT in faulty v2 (faulty-2.so) in destructor; crash record "));

  // The reload back to v1 was never recorded: the permanent release is v2's.
  // A boot starts v2, then restores its snapshot into a new instance and
  // destroys the one it started with: SIGABRT again. A crash of an image of
  // the permanent release counts towards a crash loop, and quarantines
  // nothing before the third.
  for (int crash = 2; crash <= 3; ++crash) {
    INFO("crash " << crash);
    d.spawn(fault_environment(), {}, {}, {});  // as systemd's Restart=on-failure would
    CHECK(exit_status_once_dead(d) == 128 + SIGABRT);
    CHECK(occurrences(d.log(), "…) in destructor: SIGABRT") == crash - 1);
    CHECK_THAT(d.log(), !Catch::Contains("quarantined /"));
  }
  d.start(fault_environment());
  const std::string log = d.log();
  INFO(log);
  CHECK(occurrences(log, "the previous run crashed in faulty v2 (faulty-2.so, sha256 ") == 3);
  CHECK_THAT(log, Catch::Contains("quarantined " + image + " (sha256 ") &&
                      Catch::Contains("crashed moltd 3 times within 10 minutes (the last in destructor, SIGABRT)"));
  CHECK_THAT(log, Catch::Contains("faulty: " + image + " is quarantined (") &&
                      Catch::Contains("booting v1 of release 'initial' instead, with the state it can read"));
  CHECK(quarantined_files(d) == std::vector<std::string>{image});
  // v1 reads only schema 1: the state kept before the upgrade to v2; what v2 added is lost.
  CHECK_THAT(log, Catch::Contains("faulty: booting v1 from the state kept in schema 1 at "));
  CHECK(d.get_json("/faulty") == kKeptOnV1);
  CHECK_FALSE(maps_faulty_v2(d.pid()));
  CHECK(ctl_within_a_second(d, {"status"}).exit_code == 0);
  CHECK(d.stop() == 0);
}

TEST_CASE("a snapshot older than the state kept before the upgrade that crashed: the boot takes the newer one",
          "[faults][crash][boot]") {
  FaultyDaemon f("faulty-2-segv-start.so", "rehearse = \"never\"");
  Daemon& d = f.d;
  REQUIRE(d.ctl({"save"}).exit_code == 0);  // the snapshot: ["kept"]
  REQUIRE(d.http_code("POST", "/faulty/add?item=later") == "200");
  CHECK(d.ctl({"reload", "faulty"}).exit_code == 1);  // kept ["kept","later"] in schema 1, then v2's start crashed
  CHECK(exit_status_once_dead(d) == 128 + SIGSEGV);

  d.start(fault_environment());
  const std::string log = d.log();
  INFO(log);
  CHECK(d.get_json("/faulty") == Json{{"items", {"kept", "later"}}, {"version", 1}});
  CHECK_THAT(log, Catch::Contains("faulty: booting v1 from the state kept in schema 1 at ") &&
                      Catch::Contains("the older snapshot is kept at " + (d.run_dir() / "snapshots").string() +
                                      "/faulty.molt.older-"));
  CHECK(d.stop() == 0);
}
