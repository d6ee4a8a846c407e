// moltd handing itself over to a new process (docs/hot-restart.md), through
// the real daemon: an idle HTTP keep-alive connection and the module states carry
// over; a successor that is not a moltd, speaks another protocol, or dies at
// any step of the protocol is refused or killed, and the old moltd serves on
// with its connections and state. kv's writer test is in kv_test.cpp, the
// job's in job_test.cpp.
#include <fstream>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "http_client.hpp"
#include "resp_client.hpp"

using namespace molt::test;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

/// The value of one sample of /-/metrics, e.g. molt_module_calls_total{module="counter"}; -1 if absent.
double metric(const Daemon& d, const std::string& sample) {
  const std::string text = d.curl({"/-/metrics"}).out;
  const auto at = text.find("\n" + sample + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + sample.size() + 2));
}

Daemon counter_and_kv() {
  return Daemon({{"counter", plugin_path("counter", 1), 1},
                 {"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}});
}

}  // namespace

TEST_CASE("a hot restart keeps an HTTP keep-alive connection and the counter's state, and status shows the new pid and "
          "generation",
          "[hot-restart]") {
  auto d = counter_and_kv();
  d.start();
  HttpClient http(d.http());
  for (int i = 0; i < 3; ++i) CHECK_THAT(http.post("/counter/incr"), Catch::StartsWith("HTTP/1.1 200"));

  const double calls_before = metric(d, "molt_module_calls_total{module=\"counter\"}");
  CHECK(calls_before >= 3);
  const pid_t first = d.pid();
  const auto text = d.ctl({"hot-restart"});
  INFO(text.out << text.err);
  REQUIRE(text.exit_code == 0);
  CHECK_THAT(text.out, Catch::StartsWith("moltd pid " + std::to_string(first) + " handed over to pid "));
  CHECK_THAT(text.out, Catch::Contains("(generation 2)") && Catch::Contains("  freeze ") && Catch::Contains("  frozen "));
  REQUIRE(d.process().wait(std::chrono::seconds(20)) == std::optional<int>(0));
  const Json host_after = [&] {
    Json status;
    REQUIRE(wait_until([&] {
      status = Json::parse(d.ctl({"status", "--json"}).out, nullptr, false);
      return status.is_object() && status["host"]["pid"] != first;
    }));
    return status["host"];
  }();
  d.follow(host_after["pid"].get<pid_t>());
  CHECK(host_after["generation"] == 2);
  CHECK(host_after["binary"] == program("moltd").string());
  CHECK(host_after["binary_sha256"].get<std::string>().size() == 64);
  CHECK_THAT(d.ctl({"status"}).out, Catch::Contains("generation 2"));

  const std::string counted = http.get("/counter");  // on the same connection, served by the new process
  CHECK_THAT(counted, Catch::StartsWith("HTTP/1.1 200"));
  CHECK_THAT(counted, Catch::Contains("\"total\":3"));
  CHECK_THAT(http.post("/counter/incr"), Catch::StartsWith("HTTP/1.1 200"));
  // Prometheus sees no reset: the counters go on from the old process's.
  CHECK(metric(d, "molt_module_calls_total{module=\"counter\"}") >= calls_before + 2);
  CHECK_THAT(d.log(), Catch::Contains("hot restart: serving ") && Catch::Contains("[kv] taken over: v1 with its state"));
  CHECK(d.stop() == 0);
}

TEST_CASE("a successor that is not a moltd, speaks another protocol, or may be changed by others is refused, and the "
          "old moltd serves on",
          "[hot-restart]") {
  auto d = counter_and_kv();
  d.start();
  const std::uint16_t port = d.stream_port("kv");
  RespClient client(port);
  REQUIRE(client.call({"SET", "k", "v"}) == "+OK\r\n");
  const pid_t first = d.pid();

  const auto refused = [&](const std::string& binary) {
    const auto result = d.ctl({"hot-restart", "--binary", binary});
    INFO(result.out << result.err);
    CHECK(result.exit_code == 1);
    CHECK(d.process().running());
    CHECK(d.status()["host"]["pid"] == first);
    CHECK(client.call({"GET", "k"}) == "$1\r\nv\r\n");  // the same connection, the same state
    CHECK_FALSE(fs::exists(d.run_dir() / "handover"));
    return result.err;
  };
  CHECK_THAT(refused("/bin/true"),
             Catch::StartsWith("moltctl: (host) (/bin/true): hot-restart: hello: pid ") &&
                 Catch::Contains("said no hello of hot restart protocol 1 (the other process has gone): is /bin/true a moltd?"));

  // A successor of protocol 2: its hello, by hand (CBOR of {"step":"hello","protocol":2,"abi":7}).
  const fs::path other = d.dir() / "moltd-protocol-2";
  {
    std::ofstream script(other);
    script << "#!/bin/sh\nprintf '\\033\\000\\000\\000\\243\\144step\\145hello\\150protocol\\002\\143abi\\007' >&3\n"
              "exec cat <&3 >/dev/null\n";
  }
  fs::permissions(other, fs::perms::owner_all);
  CHECK_THAT(refused(other.string()),
             Catch::Contains("hello: refused " + other.string() + ": ? speaks hot restart protocol 2 and plugin ABI 7; "
                             "this moltd "));

  // A successor announcing a 4 GiB message: refused on its length, nothing read into memory.
  const fs::path huge = d.dir() / "moltd-huge";
  {
    std::ofstream script(huge);
    script << "#!/bin/sh\nprintf '\\377\\377\\377\\377' >&3\nexec cat <&3 >/dev/null\n";
  }
  fs::permissions(huge, fs::perms::owner_all);
  CHECK_THAT(refused(huge.string()),
             Catch::Contains("said no hello of hot restart protocol 1 (a message of 4294967295 bytes announced, over "
                             "the bound of 1073741824: not a moltd speaking this protocol)"));

  fs::permissions(other, fs::perms::owner_all | fs::perms::group_write);
  CHECK_THAT(refused(other.string()), Catch::Contains("start: " + other.string() +
                                                      ": writable by group or others; refusing to run it"));
  CHECK(d.stop() == 0);
}

TEST_CASE("a successor killed at any step of the hot restart leaves the old moltd serving its connections and state",
          "[hot-restart][fault]") {
  for (const std::string step : {"hello", "prepare", "transfer", "adopt", "commit"}) {
    DYNAMIC_SECTION("successor." << step) {
      auto d = counter_and_kv();
      d.start({"MOLT_FAULT=successor." + step});  // inherited by the successor, which dies there
      const std::uint16_t port = d.stream_port("kv");
      RespClient client(port);
      REQUIRE(client.call({"SET", "k", "v"}) == "+OK\r\n");
      client.send_raw("*2\r\n$3\r\nGET\r\n$1\r\n");  // half a command, frozen with the connection
      HttpClient http(d.http());
      CHECK_THAT(http.post("/counter/incr"), Catch::StartsWith("HTTP/1.1 200"));
      const pid_t first = d.pid();

      const auto result = d.ctl({"hot-restart"});
      INFO(result.out << result.err);
      CHECK(result.exit_code == 1);
      CHECK_THAT(result.err, Catch::StartsWith("moltctl: (host) ") && Catch::Contains(" hot-restart: "));
      CHECK(d.process().running());
      CHECK(d.status()["host"]["pid"] == first);
      CHECK(d.status()["host"]["generation"] == 1);
      client.send_raw("k\r\n");
      CHECK(client.read_reply() == std::optional<std::string>("$1\r\nv\r\n"));
      CHECK(client.call({"SET", "k", "w"}) == "+OK\r\n");
      CHECK_THAT(http.get("/counter"), Catch::Contains("\"total\":1"));
      CHECK_THAT(d.log(), Catch::Contains("hot restart failed, this moltd (pid " + std::to_string(first) +
                                          ") serves on as before: "));
      CHECK_FALSE(fs::exists(d.run_dir() / "handover"));
      CHECK(d.stop() == 0);
    }
  }
}
