// The control socket and the host's JSON against careless and hostile
// clients, on a real moltd: bytes that are not UTF-8 in a path (which used
// to abort moltd, losing kv's writes since its last snapshot), clients that
// trickle their request to hold every connection, a request past the size
// limit. After each, moltd runs on with the same pid and kv keeps its data.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "hostile.hpp"
#include "molt/host/common/json_text.hpp"
#include "molt/host/control/control_server.hpp"
#include "resp_client.hpp"

using namespace molt::test;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

namespace {

Daemon kv_daemon(const std::string& host_config = "") {
  return Daemon({{"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}}, host_config);
}

std::size_t lines_of(const std::string& text) { return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n')); }

/// A raw client of the control socket, non-blocking: it sends what it likes, when it likes.
class ControlClient {
 public:
  explicit ControlClient(const fs::path& socket) : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
    connected_at_ = Clock::now();
  }
  ~ControlClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  ControlClient(ControlClient&& other) noexcept
      : fd_(std::exchange(other.fd_, -1)), connected_at_(other.connected_at_), closed_at_(other.closed_at_),
        received_(std::move(other.received_)) {}
  ControlClient(const ControlClient&) = delete;

  /// Sends all of `bytes` within `timeout`, unless the server closes first.
  void send(std::string_view bytes, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = Clock::now() + timeout;
    while (!bytes.empty() && Clock::now() < deadline) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n > 0) bytes.remove_prefix(static_cast<std::size_t>(n));
      else if (n < 0 && errno != EAGAIN && errno != EINTR) return;  // closed by the server
      else {
        pollfd p{fd_, POLLOUT, 0};
        ::poll(&p, 1, 100);
      }
    }
  }
  /// Reads what has arrived; notes when the server closed. Whether it has.
  bool poll_closed() {
    if (closed_at_) return true;
    char buffer[4096];
    while (true) {
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0) {
        received_.append(buffer, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EINTR)) closed_at_ = Clock::now();
      return closed_at_.has_value();
    }
  }
  [[nodiscard]] std::chrono::milliseconds open_for() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(closed_at_.value_or(Clock::now()) - connected_at_);
  }
  [[nodiscard]] const std::string& received() const noexcept { return received_; }

 private:
  int fd_;
  Clock::time_point connected_at_;
  std::optional<Clock::time_point> closed_at_;
  std::string received_;
};

}  // namespace

TEST_CASE("a path that is not UTF-8 is refused in one line everywhere, and moltd runs on with kv's data",
          "[hostile][control]") {
  auto d = kv_daemon("log_format = \"json\"");
  d.start();
  const pid_t pid = d.pid();
  RespClient kv(d.stream_port("kv"));
  REQUIRE(kv.call({"SET", "before", "kept"}) == "+OK\r\n");

  // A directory anyone may write into, named with a byte that is not UTF-8: the loader refuses what is in it.
  const fs::path bad_dir = d.dir() / "molt-\xff";
  fs::create_directory(bad_dir);
  REQUIRE(::chmod(bad_dir.c_str(), 0777) == 0);
  const fs::path bad_image = bad_dir / "kv-2.so";
  fs::copy_file(plugin_path("kv", 2), bad_image);
  fs::permissions(bad_image, fs::perms(0644));
  const std::string shown = molt::host::utf8_safe(bad_dir.native());  // ".../molt-\xff", as moltd writes it

  // moltctl reload kv <path>: the path goes as file_hex, moltd refuses in one line.
  const auto reload = d.ctl({"reload", "kv", bad_image.string()});
  INFO("reload: " << reload.out << reload.err);
  CHECK(reload.exit_code == 1);
  CHECK(lines_of(reload.err) == 1);
  CHECK_THAT(reload.err, Catch::StartsWith("moltctl: kv v1 -> ? refused; kv (" + shown + "/kv-2.so): load: "));
  CHECK(reload.out == "kv v1 -> ?: refused (v1 keeps serving)\n");
  CHECK(molt::host::is_valid_utf8(reload.err));
  const auto reload_json = d.ctl({"reload", "kv", bad_image.string(), "--json"});
  CHECK(reload_json.exit_code == 1);
  const Json refused = Json::parse(reload_json.out);
  CHECK(refused["ok"] == false);
  CHECK(refused["report"]["outcome"] == "refused");
  CHECK(refused["report"]["to_file"] == shown + "/kv-2.so");

  // A module name that is not UTF-8 either: moltd's own one-line answer.
  const auto unknown = d.ctl({"rollback", "kv\xfe"});
  CHECK(unknown.exit_code == 1);
  CHECK(lines_of(unknown.err) == 1);
  CHECK_THAT(unknown.err, Catch::Contains("kv\\xfe"));

  // SIGHUP: a symlink in the plugin directory into that directory; the refusal goes into the history.
  fs::create_symlink(bad_image, d.plugin_dir() / "kv-2.so");
  d.process().signal(SIGHUP);
  Json history;
  REQUIRE(wait_until([&] {
    const auto listed = d.ctl({"history", "--json"});
    if (listed.exit_code != 0) return false;
    history = Json::parse(listed.out);
    return history["reports"].size() == 3;  // two reloads, then SIGHUP
  }));
  for (const auto& report : history["reports"]) {
    CHECK(report["outcome"] == "refused");
    CHECK(report["to"] == 0);
    CHECK_THAT(report["error"].get<std::string>(), Catch::Contains(shown));
  }
  CHECK(history["reports"][2]["to_file"] == (d.plugin_dir() / "kv-2.so").string());

  const auto text = d.ctl({"history"});
  INFO("history: " << text.out << text.err);
  CHECK(text.exit_code == 0);
  CHECK(lines_of(text.out) == 3);
  CHECK_THAT(text.out, Catch::Contains("v1 -> ?   refused"));
  CHECK_THAT(text.out, Catch::Contains(shown));
  CHECK(molt::host::is_valid_utf8(text.out));

  const Json status = d.status();
  CHECK(status["modules"][0]["version"] == 1);
  CHECK(status["host"]["pid"] == pid);

  // HTTP: the history, the status, the metrics: 200, and valid UTF-8 throughout.
  const Json http_history = d.get_json("/-/history");
  REQUIRE(http_history["reports"].size() == 3);
  CHECK_THAT(http_history["reports"][0]["error"].get<std::string>(), Catch::Contains(shown));
  CHECK(d.get_json("/-/status")["modules"][0]["name"] == "kv");
  const auto metrics = d.curl({"-w", "\n%{http_code}", "/-/metrics"});
  CHECK(metrics.out.ends_with("\n200"));
  CHECK(molt::host::is_valid_utf8(metrics.out));
  CHECK_THAT(metrics.out, Catch::Contains("molt_upgrades_total{module=\"kv\",outcome=\"refused\"} 3\n"));
  CHECK(d.http_code("GET", "/-/\xff") == "404");  // a path not UTF-8 in the request: a JSON 404, not a 500

  // The JSON log: every line is JSON, and the bad byte is there as \xff.
  const std::string log = d.log();
  std::istringstream lines(log);
  std::string line;
  std::size_t parsed = 0, naming_it = 0;
  while (std::getline(lines, line)) {
    INFO("log line: " << line);
    const Json entry = Json::parse(line);  // throws (fails the test) if not JSON
    ++parsed;
    if (entry["msg"].get<std::string>().find(shown) != std::string::npos) ++naming_it;
  }
  CHECK(parsed > 5);
  CHECK(naming_it >= 3);  // the reloads' refusals and SIGHUP's
  CHECK_THAT(log, Catch::Contains("molt-\\\\xff"));

  // moltd is the same process, and kv kept what it was told.
  CHECK(d.process().running());
  CHECK(d.status()["host"]["pid"] == pid);
  CHECK(kv.call({"GET", "before"}) == "$4\r\nkept\r\n");
  CHECK(RespClient(d.stream_port("kv")).call({"GET", "before"}) == "$4\r\nkept\r\n");
}

TEST_CASE("16 clients trickling a byte a second hold no thread: status is answered at once, each is closed at its "
          "deadline", "[hostile][control]") {
  auto d = kv_daemon();
  d.start();
  const pid_t pid = d.pid();
  constexpr std::size_t kTricklers = 16;  // the most requests moltd runs at once
  std::vector<ControlClient> tricklers;
  for (std::size_t i = 0; i < kTricklers; ++i) tricklers.emplace_back(d.socket());
  const std::string request = R"({"command":"status","padding":"....................."})";

  std::size_t sent = 0;  // bytes each trickler has sent
  const auto started = Clock::now();
  std::vector<double> round_trips_ms, moltctl_ms;
  const bool all_closed = wait_until(
      [&] {
        const auto elapsed = Clock::now() - started;
        if (sent < request.size() && elapsed >= std::chrono::seconds(sent)) {
          for (auto& client : tricklers)
            if (!client.poll_closed()) client.send(request.substr(sent, 1), 1s);
          ++sent;
          // From the third second, while every trickler holds its connection: ask.
          if (sent >= 3 && round_trips_ms.size() < 3) {
            const auto asked = Clock::now();
            const auto reply = molt::host::control_call(d.socket(), {{"command", "status"}}, 5s);
            round_trips_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - asked).count());
            CHECK(reply);
            const auto ctl_asked = Clock::now();
            const auto ctl = d.ctl({"status"});
            moltctl_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - ctl_asked).count());
            CHECK(ctl.exit_code == 0);
          }
        }
        return std::all_of(tricklers.begin(), tricklers.end(), [](ControlClient& c) { return c.poll_closed(); });
      },
      20s);
  REQUIRE(all_closed);
  REQUIRE(round_trips_ms.size() == 3);
  for (std::size_t i = 0; i < 3; ++i) {
    INFO("status round trip " << round_trips_ms[i] << " ms; moltctl status " << moltctl_ms[i] << " ms");
    measured("16 control clients trickling a byte a second: status round trip / moltctl status",
             std::to_string(round_trips_ms[i]) + " / " + std::to_string(moltctl_ms[i]) + " ms (bound 1000 ms)");
    CHECK(round_trips_ms[i] < 1000);
    CHECK(moltctl_ms[i] < 1000);
  }
  // Each one at its deadline, 10 s after its accept, however steadily it sent.
  for (const auto& client : tricklers) {
    INFO("open for " << client.open_for().count() << " ms");
    CHECK(client.open_for() >= 9500ms);
    CHECK(client.open_for() < 12500ms);
    CHECK(client.received() == "{\"error\":\"request not complete within 10000 ms\",\"ok\":false}\n");
  }
  CHECK(sent >= 9);
  CHECK(d.process().running());
  CHECK(d.status()["host"]["pid"] == pid);
  const std::string log = d.log();
  std::size_t closures = 0;
  for (std::size_t at = 0; (at = log.find("but no complete request in 10000 ms", at)) != std::string::npos; ++at)
    ++closures;
  CHECK(closures == kTricklers);  // one line each
}

TEST_CASE("a control request larger than 256 KiB gets the exact error line, and moltd carries on",
          "[hostile][control]") {
  auto d = kv_daemon();
  d.start();
  ControlClient client(d.socket());
  client.send(std::string(256 * 1024 + 1, ' '));
  REQUIRE(wait_until([&] { return client.poll_closed(); }));
  CHECK(client.received() == "{\"error\":\"request larger than 262144 bytes\",\"ok\":false}\n");
  CHECK_THAT(d.log(), Catch::Contains("refused a request larger than 262144 bytes"));
  CHECK(d.ctl({"status"}).exit_code == 0);
}
