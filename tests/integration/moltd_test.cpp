// moltd and moltctl as an operator uses them: a real daemon, real sockets,
// real curl, real signals.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "molt/host/state/state_blob.hpp"
#include "skip.hpp"

using namespace molt::test;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::size_t lines(const std::string& text) {
  std::size_t n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

/// Sends raw bytes to a Unix socket and returns what comes back before it closes.
std::string raw_exchange(const fs::path& socket_path, const std::string& bytes) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof address.sun_path - 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the daemon may close early on an oversized request
    sent += static_cast<std::size_t>(n);
  }
  ::shutdown(fd, SHUT_WR);  // done sending: a half request is now a client that left
  std::string reply;
  char buffer[4096];
  ssize_t n;
  while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) reply.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  return reply;
}

}  // namespace

TEST_CASE("reload upgrades the counter keeping its total, rollback returns to v1", "[moltd]") {
  Daemon d;
  d.start();
  for (int i = 0; i < 3; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  CHECK(d.get_json("/counter") == Json{{"module", "counter"}, {"version", 1}, {"total", 3}});

  d.install(plugin_path("counter", 2), "counter-2.so");
  const auto reload = d.ctl({"reload", "counter"});
  INFO(reload.out << reload.err);
  REQUIRE(reload.exit_code == 0);
  CHECK_THAT(reload.out, Catch::StartsWith("counter v1 -> v2: succeeded\n"));
  for (const char* phase : {"prepare", "quiesce", "save", "migrate", "resume", "pause", "cleanup"})
    CHECK_THAT(reload.out, Catch::Contains(std::string("  ") + phase));
  const Json up = d.get_json("/counter");
  CHECK(up["version"] == 2);
  CHECK(up["total"] == 3);
  CHECK(d.status()["modules"][0]["version"] == 2);

  const auto rollback = d.ctl({"rollback", "counter"});
  INFO(rollback.out << rollback.err);
  REQUIRE(rollback.exit_code == 0);
  CHECK_THAT(rollback.out, Catch::StartsWith("counter v2 -> v1: succeeded\n"));
  CHECK(d.get_json("/counter") == Json{{"module", "counter"}, {"version", 1}, {"total", 3}});

  const auto history = d.ctl({"history", "counter", "--json"});
  REQUIRE(history.exit_code == 0);
  const Json reports = Json::parse(history.out)["reports"];
  REQUIRE(reports.size() == 2);
  CHECK(reports[0]["direction"] == "up");
  CHECK(reports[1]["direction"] == "down");
  CHECK(d.stop() == 0);
}

TEST_CASE("4 concurrent clients POST while 50 reloads and rollbacks alternate: nothing fails or is lost",
          "[moltd][stress]") {
  Daemon d;
  d.start();
  d.install(plugin_path("counter", 2), "counter-2.so");
  std::atomic<bool> done{false};
  std::atomic<int> ok{0};
  std::vector<std::future<std::vector<std::string>>> clients;
  for (int c = 0; c < 4; ++c)
    clients.push_back(std::async(std::launch::async, [&] {
      std::vector<std::string> bad;  // anything but 200
      while (!done) {
        const std::string code = d.http_code("POST", "/counter/incr");
        if (code == "200") ++ok; else bad.push_back(code);
      }
      return bad;
    }));

  REQUIRE(wait_until([&] { return ok > 0; }));  // clients are running before the first reload
  const int before = ok;
  std::vector<std::string> failures;
  for (int i = 0; i < 25; ++i) {
    for (const char* command : {"reload", "rollback"}) {
      const auto result = d.ctl({command, "counter"});
      if (result.exit_code != 0) failures.push_back(std::string(command) + ": " + result.err);
    }
  }
  const int during = ok - before;
  done = true;
  std::vector<std::string> bad;
  for (auto& client : clients)
    for (auto& code : client.get()) bad.push_back(code);

  CHECK(failures.empty());
  CHECK(bad.empty());
  CHECK(during > 0);  // the POSTs did overlap the reloads
  const Json shown = d.get_json("/counter");
  CHECK(shown["version"] == 1);
  CHECK(shown["total"] == ok.load());
  CHECK(Json::parse(d.ctl({"history", "--json"}).out)["reports"].size() == 50);
}

TEST_CASE("a bad .so is refused with one line, and the old version keeps serving its state", "[moltd][refusal]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}, {"probe", probe_path(1), 1}});
  d.start();
  REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  REQUIRE(d.http_code("POST", "/probe/add?item=kept") == "200");

  SECTION("not an ELF file") {
    std::ofstream(d.plugin_dir() / "counter-3.so") << "this is not a shared library\n";
    const auto result = d.ctl({"reload", "counter"});
    CHECK(result.exit_code == 1);
    CHECK(lines(result.err) == 1);
    CHECK_THAT(result.err, Catch::Contains("counter-3.so") && Catch::Contains("not a shared library"));
  }
  SECTION("another plugin ABI") {
    d.install(test_image_path("bad-abi.so"), "probe-9.so");
    const auto result = d.ctl({"reload", "probe"});
    CHECK(result.exit_code == 1);
    CHECK(lines(result.err) == 1);
    CHECK_THAT(result.err, Catch::Contains("probe-9.so") && Catch::Contains("built for plugin ABI 999"));
  }
  SECTION("a migration that throws") {
    d.install(probe_path(2), "probe-2.so");
    const auto result = d.ctl({"reload", "probe", "--extra", "fail=load"});
    CHECK(result.exit_code == 1);
    CHECK(lines(result.err) == 1);
    // Found by the rehearsal (a child runs v2's load_state first): refused before moltd loads v2.
    CHECK_THAT(result.err, Catch::Contains("probe v2") &&
                               Catch::Contains("prepare: rehearsal of probe v2: refused: probe refuses to load on purpose"));
    CHECK_THAT(result.out, Catch::StartsWith("probe v1 -> v2: refused (v1 keeps serving)"));
  }
  CHECK(d.get_json("/counter") == Json{{"module", "counter"}, {"version", 1}, {"total", 1}});
  CHECK(d.get_json("/probe") == Json{{"version", 1}, {"items", {"kept"}}});
  CHECK(d.stop() == 0);
}

TEST_CASE("the control socket refuses oversized and malformed requests, and carries on", "[moltd][control]") {
  Daemon d;
  d.start();
  SECTION("a malformed request") {
    const Json reply = Json::parse(raw_exchange(d.socket(), "this is not json\n"));
    CHECK(reply["ok"] == false);
    CHECK_THAT(reply["error"].get<std::string>(), Catch::Contains("malformed request"));
  }
  SECTION("an unknown command") {
    const Json reply = Json::parse(raw_exchange(d.socket(), R"({"command":"format-disk"})" "\n"));
    CHECK_THAT(reply["error"].get<std::string>(), Catch::Contains("unknown command 'format-disk'"));
  }
  SECTION("an oversized request") {
    const std::string reply = raw_exchange(d.socket(), std::string(300 * 1024, 'x') + '\n');
    CHECK_THAT(reply, Catch::Contains("request larger than 262144 bytes"));
    CHECK_THAT(d.log(), Catch::Contains("refused a request larger than 262144 bytes"));
  }
  SECTION("a client that sends half a request and leaves") {
    CHECK(raw_exchange(d.socket(), R"({"command":"sta)").empty());
  }
  CHECK(d.ctl({"status"}).exit_code == 0);
  CHECK(d.http_code("POST", "/counter/incr") == "200");
}

TEST_CASE("the control socket refuses other users, and carries on", "[moltd][control]") {
  if (::geteuid() != 0) MOLT_SKIP("needs root to run moltctl as nobody", SkipInCi::Fails);
  Daemon d;
  d.start();
  // A copy of moltctl that nobody may run, outside any private directory.
  fs::create_directories(d.dir() / "bin");
  fs::copy_file(program("moltctl"), d.dir() / "bin" / "moltctl");
  fs::permissions(d.dir(), fs::perms(0711));
  fs::permissions(d.dir() / "bin", fs::perms(0755));
  const std::vector<std::string> as_nobody{"runuser", "-u", "nobody", "--", (d.dir() / "bin" / "moltctl").string(),
                                           "--socket", d.socket().string(), "status"};
  // The private run directory keeps nobody from even reaching the socket...
  auto result = run_process(as_nobody);
  CHECK(result.exit_code == 1);
  CHECK_THAT(result.err, Catch::Contains("Permission denied"));
  // ...and with the directory and socket opened up by mistake, moltd itself
  // refuses the peer by its credentials.
  fs::permissions(d.run_dir(), fs::perms(0711));
  fs::permissions(d.socket(), fs::perms(0666));
  result = run_process(as_nobody);
  CHECK(result.exit_code == 1);
  CHECK_THAT(result.err, Catch::Contains("permission denied: uid 65534 may not control this moltd"));
  CHECK_THAT(d.log(), Catch::Contains("refused a connection from uid 65534"));
  CHECK(d.ctl({"status"}).exit_code == 0);
  CHECK(d.http_code("POST", "/counter/incr") == "200");
}

TEST_CASE("SIGHUP upgrades a module whose newest file changed, and only that", "[moltd][signals]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}, {"probe", probe_path(1), 1}});
  d.start();
  REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  d.install(plugin_path("counter", 2), "counter-2.so");
  d.process().signal(SIGHUP);
  REQUIRE(wait_until([&] { return d.status()["modules"][0]["version"] == 2; }));
  CHECK(d.get_json("/counter")["total"] == 1);
  CHECK(d.status()["modules"][1]["version"] == 1);
  CHECK_THAT(d.log(), Catch::Contains("[counter] upgrade counter v1 -> v2 succeeded: pause"));
  REQUIRE(wait_until([&] { return d.log().find("SIGHUP: 1 module(s) reloaded") != std::string::npos; }));

  d.process().signal(SIGHUP);  // nothing changed: nothing happens
  REQUIRE(wait_until([&] { return d.log().find("SIGHUP: 0 module(s) reloaded") != std::string::npos; }));
  CHECK(Json::parse(d.ctl({"history", "--json"}).out)["reports"].size() == 1);
}

TEST_CASE("SIGTERM finishes the requests in flight and exits 0", "[moltd][signals]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}, {"probe", probe_path(1), 1}});
  d.start();
  auto slow = std::async(std::launch::async, [&] { return d.curl({"-X", "POST", "-w", "\n%{http_code}", "/probe/sleep?ms=1000"}); });
  REQUIRE(wait_until([&] { return d.status()["modules"][1]["in_flight"] == 1; }));
  d.process().signal(SIGTERM);
  const auto answered = slow.get();
  INFO(answered.out << answered.err);
  CHECK(answered.exit_code == 0);
  CHECK_THAT(answered.out, Catch::EndsWith("\n200"));
  const auto code = d.process().wait(std::chrono::seconds(20));
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK_THAT(d.log(), Catch::Contains("SIGTERM: stopping") && Catch::Contains("[moltd] stopped"));
  CHECK_FALSE(fs::exists(d.socket()));
}

TEST_CASE("HTTP: unknown module 404, oversized request 413, a module that throws 500, and the host carries on",
          "[moltd][http]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}, {"probe", probe_path(1), 1}});
  d.start();
  CHECK(d.http_code("GET", "/nope") == "404");
  CHECK(d.http_code("GET", "/-/nope") == "404");
  const std::string big = (d.dir() / "big").string();
  std::ofstream(big) << std::string(2 << 20, 'x');
  CHECK(d.curl({"-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "@" + big, "/counter/incr"}).out == "413");
  CHECK(d.http_code("GET", "/probe/throw") == "500");
  CHECK_THAT(d.log(), Catch::Contains("[probe] probe v1: call: GET /probe/throw: handler threw: boom"));
  const Json status = d.get_json("/-/status");
  CHECK(status["modules"][1]["failed_calls"] == 1);
  CHECK(d.http_code("POST", "/counter/incr") == "200");
  CHECK(d.get_json("/counter")["total"] == 1);
}

TEST_CASE("snapshot writes the running state archive that a fixture can be made of", "[moltd]") {
  Daemon d;
  d.start();
  for (int i = 0; i < 4; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  const fs::path out = d.dir() / "counter.molt";
  const auto result = d.ctl({"snapshot", "counter", "-o", out.string()});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  CHECK_THAT(result.out, Catch::StartsWith("wrote counter v1 state (53 B, schema 1)"));
  auto blob = molt::host::read_state_file(out, 1 << 20);
  REQUIRE(blob.ok());
  CHECK(blob->module == "counter");
  CHECK(blob->version.value == 1);
  CHECK(d.status()["modules"][0]["state_bytes"] == 53);
}

TEST_CASE("moltd refuses a wrong configuration with one line naming the key", "[moltd][config]") {
  TempDir dir;
  const auto config = dir.path() / "bad.toml";
  SECTION("a bad value") {
    std::ofstream(config) << "[host]\nhttp = \"localhost\"\n[modules.counter]\nversion = 1\n";
    const auto result = run_process({program("moltd"), "--config", config.string()});
    CHECK(result.exit_code == 2);
    CHECK(result.err == "moltd: " + config.string() + ": config: host.http: must look like 127.0.0.1:8080, got 'localhost'\n");
  }
  SECTION("an unknown key") {
    std::ofstream(config) << "[host]\nhttp_treads = 4\n[modules.counter]\nversion = 1\n";
    const auto result = run_process({program("moltd"), "--config", config.string()});
    CHECK(result.exit_code == 2);
    CHECK_THAT(result.err, Catch::Contains("config: host.http_treads: unknown key"));
  }
  SECTION("no modules") {
    std::ofstream(config) << "[host]\n";
    const auto result = run_process({program("moltd"), "--config", config.string()});
    CHECK(result.exit_code == 2);
    CHECK_THAT(result.err, Catch::Contains("nothing to serve"));
  }
  SECTION("TOML that does not parse") {
    std::ofstream(config) << "[host\n";
    const auto result = run_process({program("moltd"), "--config", config.string()});
    CHECK(result.exit_code == 2);
    CHECK_THAT(result.err, Catch::Contains("config: line 1"));
  }
}

TEST_CASE("a second moltd on the same run directory is refused", "[moltd]") {
  Daemon d;
  d.start();
  const auto second = run_process({program("moltd"), "--config", d.config().string()});
  CHECK(second.exit_code == 1);
  CHECK_THAT(second.err, Catch::Contains("run directory: in use by another moltd (pid " + std::to_string(d.pid()) + ")"));
  CHECK(d.ctl({"status"}).exit_code == 0);
}

TEST_CASE("moltctl: usage errors exit 2, an unreachable daemon exits 1, --help describes every command", "[moltctl]") {
  CHECK(run_process({program("moltctl"), "frobnicate"}).exit_code == 2);
  CHECK(run_process({program("moltctl"), "reload"}).exit_code == 2);
  const auto unreachable = run_process({program("moltctl"), "--socket", "/nonexistent/control.sock", "status"});
  CHECK(unreachable.exit_code == 1);
  CHECK_THAT(unreachable.err, Catch::Contains("is moltd running?"));
  const auto help = run_process({program("moltctl"), "--help"});
  CHECK(help.exit_code == 0);
  for (const char* command : {"status", "reload", "rollback", "history", "snapshot", "--json", "--socket"})
    CHECK_THAT(help.out, Catch::Contains(command));
  CHECK_THAT(run_process({program("moltd"), "--help"}).out, Catch::Contains("--config") && Catch::Contains("SIGHUP"));
}

namespace {

/// A blocking TCP client for line protocols.
class TcpClient {
 public:
  explicit TcpClient(std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(port);
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~TcpClient() { ::close(fd_); }
  void send(std::string_view bytes) { REQUIRE(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size())); }
  /// Reads until `lines` newlines have arrived (or the peer closes).
  std::string read_lines(int lines) {
    std::string got;
    char c;
    while (lines > 0 && ::recv(fd_, &c, 1, 0) == 1) {
      got += c;
      lines -= c == '\n';
    }
    return got;
  }
  bool closed_by_peer() {
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }

 private:
  int fd_;
};

}  // namespace

TEST_CASE("a host-owned connection stays open across upgrades, bytes split across one reach the new version in order",
          "[moltd][streams]") {
  Daemon d({{"stash", test_image_path("stash-1.so"), 1, "listen = \"127.0.0.1:0\""}});
  d.install(test_image_path("stash-2.so"), "stash-2.so");
  d.install(test_image_path("stash-3.so"), "stash-3.so");
  d.start();
  TcpClient client(d.stream_port("stash"));
  client.send("SET a 1\nNAME carol\nGE");
  CHECK(client.read_lines(2) == "OK\nOK\n");
  CHECK(d.status()["modules"][0]["connections"] == 1);

  auto reload = d.ctl({"reload", "stash", (d.plugin_dir() / "stash-2.so").string()});  // code-only: in memory
  REQUIRE(reload.exit_code == 0);
  CHECK_THAT(reload.out, Catch::Contains("handed over in memory"));
  client.send("T a\nWHO\n");
  CHECK(client.read_lines(2) == "1 v2\ncarol\n");

  reload = d.ctl({"reload", "stash"});  // newest: stash-3, another layout: serialized
  REQUIRE(reload.exit_code == 0);
  CHECK_THAT(reload.out, Catch::Contains("in schema 1"));
  client.send("GET a\nWHO\nQUIT\n");
  CHECK(client.read_lines(3) == "1 v3\ncarol\nBYE\n");
  CHECK(client.closed_by_peer());
  REQUIRE(wait_until([&] { return d.status()["modules"][0]["connections"] == 0; }));
  CHECK(d.stop() == 0);
}

TEST_CASE("a module built for the previous plugin ABI serves, reloads to a current build and rolls back, "
          "keeping its state and its connection",
          "[moltd][abi]") {
  // oldabi-1.so is built against the frozen ABI-5 headers (tests/plugins/abi5), oldabi-2.so against today's.
  Daemon d({{"oldabi", test_image_path("oldabi-1.so"), 1, "listen = \"127.0.0.1:0\""}});
  d.install(test_image_path("oldabi-2.so"), "oldabi-2.so");
  d.start();
  CHECK(d.status()["modules"][0]["abi"] == 5);
  REQUIRE(d.http_code("POST", "/oldabi/add?item=alpha") == "200");
  TcpClient client(d.stream_port("oldabi"));
  client.send("ADD beta\nADD gam");
  CHECK(client.read_lines(1) == "OK 2\n");

  const auto reload = d.ctl({"reload", "oldabi"});
  INFO(reload.out << reload.err);
  REQUIRE(reload.exit_code == 0);
  CHECK_THAT(reload.out, Catch::StartsWith("oldabi v1 -> v2: succeeded\n"));
  CHECK(d.status()["modules"][0]["abi"] == molt::api::kAbiVersion);
  client.send("ma\nLIST\n");
  CHECK(client.read_lines(2) == "OK 3\nv2 abi" + std::to_string(molt::api::kAbiVersion) + " alpha,beta,gamma\n");

  const auto rollback = d.ctl({"rollback", "oldabi"});
  INFO(rollback.out << rollback.err);
  REQUIRE(rollback.exit_code == 0);
  CHECK(d.status()["modules"][0]["abi"] == 5);
  client.send("LIST\nQUIT\n");
  CHECK(client.read_lines(2) == "v1 abi5 alpha,beta,gamma\nBYE\n");
  CHECK(client.closed_by_peer());
  CHECK(d.get_json("/oldabi")["items"] == Json{"alpha", "beta", "gamma"});
  CHECK(d.stop() == 0);
}

TEST_CASE("log_format = json: every line of the log is one JSON object with module, and version and phase when known",
          "[moltd][logs]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}}, "log_format = \"json\"\nlog_level = \"debug\"");
  d.install(plugin_path("counter", 2), "counter-2.so");
  d.start();
  REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  REQUIRE(d.ctl({"reload", "counter"}).exit_code == 0);
  REQUIRE(d.stop() == 0);

  std::istringstream log(d.log());
  std::string line;
  std::size_t lines = 0;
  std::set<std::string> counter_phases;
  bool started_v1 = false;
  while (std::getline(log, line)) {
    ++lines;
    INFO(line);
    const Json entry = Json::parse(line);  // throws, failing the test, on anything else
    REQUIRE(entry.contains("time"));
    CHECK(entry["time"].get<std::string>().ends_with("Z"));
    CHECK(entry.contains("level"));
    CHECK(entry.contains("msg"));
    REQUIRE(entry.contains("module"));
    if (entry["module"] == "counter" && entry.contains("phase")) counter_phases.insert(entry["phase"].get<std::string>());
    if (entry["module"] == "counter" && entry["msg"].get<std::string>().starts_with("v1 started")) started_v1 = true;
  }
  CHECK(lines > 5);
  CHECK(started_v1);
  for (const char* phase : {"prepare", "quiesce", "migrate"}) CHECK(counter_phases.contains(phase));
}

TEST_CASE("moltctl reload on a terminal shows the phases and the share of state saved, piped or --json, none of it",
          "[moltctl][progress]") {
  Daemon d({{"probe", probe_path(1), 1}}, "max_state_bytes = 1073741824");
  d.install(probe_path(2), "probe-2.so");
  d.start();
  REQUIRE(d.http_code("POST", "/probe/fill?n=400000") == "200");  // a few MiB: several chunks
  REQUIRE(d.ctl({"save"}).exit_code == 0);                       // so the size to expect is known
  // script(1) gives moltctl a pseudo-terminal, as an operator's shell would.
  const auto on_tty = [&](const std::string& args) {
    return run_process({"script", "-qec", program("moltctl").string() + " --socket " + d.socket().string() + " " + args,
                        "/dev/null"});
  };
  const auto shown = on_tty("reload probe");
  INFO(shown.out << shown.err);
  REQUIRE(shown.exit_code == 0);
  for (const char* phase : {"probe: prepare", "probe: quiesce", "probe: migrate", "probe: resume", "probe: cleanup"})
    CHECK_THAT(shown.out, Catch::Contains(std::string("\r\033[K") + phase));
  CHECK_THAT(shown.out, Catch::Contains("% (") && Catch::Contains("of about"));
  CHECK_THAT(shown.out, Catch::Contains("\r\033[Kprobe v1 -> v2: succeeded"));  // the report replaces the line

  const auto piped = d.ctl({"rollback", "probe"});
  REQUIRE(piped.exit_code == 0);
  CHECK_THAT(piped.out, Catch::StartsWith("probe v2 -> v1: succeeded"));
  CHECK(piped.out.find('\r') == std::string::npos);
  const auto as_json = on_tty("--json reload probe");
  REQUIRE(as_json.exit_code == 0);
  CHECK(as_json.out.find("\033[K") == std::string::npos);
  CHECK(Json::parse(as_json.out)["ok"] == true);
}
