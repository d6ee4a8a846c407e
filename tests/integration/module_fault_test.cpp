// A faulty module costs that module, not the host (docs/operations.md, "When
// a module misbehaves"). A real moltd, real clients; the module's faults are
// test modules. Each test asserts what an operator sees: the control plane
// answering within a second throughout, the line that names the fault, and
// how moltd stops.
#include <csignal>

#include <catch2/catch.hpp>

#include "daemon.hpp"

using namespace molt::test;
using Json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

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
  d.start();
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
  d.start();
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
