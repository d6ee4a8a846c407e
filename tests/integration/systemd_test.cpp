// moltd under systemd, without a running systemd: the test stands in for it.
// It owns the notification socket (NOTIFY_SOCKET) and reads what moltd says
// there across start, upgrades and stop; it hands moltd listening sockets
// through systemd-socket-activate, or itself, and talks to kv through them.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <cstring>
#include <fstream>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "resp_client.hpp"

using namespace molt::test;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Json = nlohmann::json;

namespace {

std::uint64_t monotonic_usec() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000u + static_cast<std::uint64_t>(now.tv_nsec) / 1000u;
}

/// systemd's end of NOTIFY_SOCKET: a datagram socket bound in a directory
/// of the test's, read all the time by a thread of its own, as systemd
/// reads it: a full socket (10 datagrams) would make moltd's sends wait.
class NotifySocket {
 public:
  explicit NotifySocket(const fs::path& path) : path_(path), fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    REQUIRE(path.string().size() < sizeof address.sun_path);
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    reader_ = std::thread([this] { read_all(); });
  }
  ~NotifySocket() {
    stop_ = true;
    reader_.join();
    ::close(fd_);
  }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  [[nodiscard]] std::string env() const { return "NOTIFY_SOCKET=" + path_.string(); }

  /// The next message, waiting up to `timeout` for it; "" if none came.
  std::string next(std::chrono::milliseconds timeout = 10s) {
    std::unique_lock lock(mutex_);
    if (!arrived_.wait_for(lock, timeout, [&] { return !messages_.empty(); })) return {};
    std::string message = std::move(messages_.front());
    messages_.pop_front();
    return message;
  }

 private:
  void read_all() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      char buffer[4096];
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) continue;
      {
        std::lock_guard lock(mutex_);
        messages_.emplace_back(buffer, static_cast<std::size_t>(n));
      }
      arrived_.notify_all();
    }
  }

  fs::path path_;
  int fd_;
  std::mutex mutex_;
  std::condition_variable arrived_;
  std::deque<std::string> messages_;
  std::atomic<bool> stop_{false};
  std::thread reader_;
};

/// A listening TCP socket on 127.0.0.1, as systemd holds one for a .socket unit.
class ListeningSocket {
 public:
  ListeningSocket() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) == 0);
    REQUIRE(::listen(fd_, 64) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
  }
  ~ListeningSocket() { ::close(fd_); }
  ListeningSocket(const ListeningSocket&) = delete;
  ListeningSocket& operator=(const ListeningSocket&) = delete;
  [[nodiscard]] int fd() const { return fd_; }
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  int fd_;
  std::uint16_t port_ = 0;
};

/// The MONOTONIC_USEC= of a RELOADING=1 message; 0 if it has none.
std::uint64_t monotonic_of(const std::string& message) {
  const std::string key = "\nMONOTONIC_USEC=";
  const auto at = message.find(key);
  return at == std::string::npos ? 0 : std::stoull(message.substr(at + key.size()));
}

ProcessResult redis_cli(std::uint16_t port, const std::vector<std::string>& command) {
  std::vector<std::string> argv{"redis-cli", "-p", std::to_string(port)};
  argv.insert(argv.end(), command.begin(), command.end());
  return run_process(argv);
}

}  // namespace

TEST_CASE("moltd tells systemd READY when serving, RELOADING then READY around every upgrade, STOPPING at SIGTERM",
          "[systemd]") {
  Daemon d;  // counter v1
  NotifySocket notify(d.dir() / "notify");
  d.start({notify.env()});

  CHECK(notify.next() == "READY=1\nSTATUS=serving 1 module: counter v1; release initial (permanent)");

  d.install(plugin_path("counter", 2), "counter-2.so");
  const auto before = monotonic_usec();
  const auto reload = d.ctl({"reload", "counter"});
  const auto after = monotonic_usec();
  REQUIRE(reload.exit_code == 0);
  const std::string reloading = notify.next();
  CHECK_THAT(reloading, Catch::StartsWith("RELOADING=1\nMONOTONIC_USEC=") && Catch::EndsWith("\nSTATUS=reloading counter"));
  CHECK(monotonic_of(reloading) >= before);  // read on the same clock as systemd's, while the reload ran
  CHECK(monotonic_of(reloading) <= after);
  CHECK(notify.next() == "READY=1\nSTATUS=serving 1 module: counter v2; release initial+counter-v2 (on probation)");

  // A refused upgrade changes nothing, and is bracketed all the same.
  {
    std::ofstream(d.dir() / "junk.so") << "junk";
  }
  d.install(d.dir() / "junk.so", "counter-3.so");
  REQUIRE(d.ctl({"reload", "counter"}).exit_code == 1);
  CHECK_THAT(notify.next(), Catch::StartsWith("RELOADING=1\nMONOTONIC_USEC=") &&
                               Catch::EndsWith("\nSTATUS=reloading counter"));
  CHECK(notify.next() == "READY=1\nSTATUS=serving 1 module: counter v2; release initial+counter-v2 (on probation)");

  // systemctl reload's way (ExecReload=moltctl reload --changed): answered when done.
  fs::remove(d.plugin_dir() / "counter-3.so");
  const auto changed = d.ctl({"reload", "--changed"});
  INFO(changed.out << changed.err);
  CHECK(changed.exit_code == 0);
  CHECK(changed.out == "no module's file changed: nothing to reload\n");
  CHECK_THAT(notify.next(), Catch::StartsWith("RELOADING=1\nMONOTONIC_USEC=") &&
                               Catch::EndsWith("\nSTATUS=reloading the modules whose file changed"));
  CHECK(notify.next() == "READY=1\nSTATUS=serving 1 module: counter v2; release initial+counter-v2 (on probation)");

  REQUIRE(d.ctl({"commit"}).exit_code == 0);
  CHECK(notify.next() == "STATUS=serving 1 module: counter v2; release initial+counter-v2 (permanent)");

  REQUIRE(d.stop() == 0);
  CHECK(notify.next() ==
        "STOPPING=1\nSTATUS=SIGTERM: stopping; finishing requests in flight, then saving every module's state");
  CHECK(notify.next(0ms).empty());  // moltd has exited: that was the last
}

TEST_CASE("SIGHUP's upgrades, and a rollback the host makes itself during probation, are bracketed too",
          "[systemd]") {
  Daemon d({{"probe", probe_path(1), 1}}, "probation_seconds = 600");
  NotifySocket notify(d.dir() / "notify");
  d.start({notify.env()});
  CHECK(notify.next() == "READY=1\nSTATUS=serving 1 module: probe v1; release initial (permanent)");

  d.install(probe_path(2), "probe-2.so");
  d.process().signal(SIGHUP);
  CHECK_THAT(notify.next(), Catch::StartsWith("RELOADING=1\nMONOTONIC_USEC=") &&
                               Catch::EndsWith("\nSTATUS=reloading the modules whose file changed"));
  CHECK(notify.next() == "READY=1\nSTATUS=serving 1 module: probe v2; release initial+reload (on probation)");

  // The rollback is rehearsed on the install's snapshot (in the background): before the sick item.
  REQUIRE(wait_until([&] { return d.snapshots_written(); }));
  REQUIRE(d.http_code("POST", "/probe/add?item=sick") == "200");  // fails its health check: the host rolls back
  CHECK_THAT(notify.next(), Catch::StartsWith("RELOADING=1\nMONOTONIC_USEC=") &&
                               Catch::EndsWith("\nSTATUS=rolling release initial+reload back to initial (failed probation)"));
  CHECK(notify.next() == "READY=1\nSTATUS=serving 1 module: probe v1; release initial (permanent)");
  CHECK(d.stop() == 0);
}

TEST_CASE("with WatchdogSec, moltd sends WATCHDOG=1 every half interval while its I/O threads answer", "[systemd]") {
  Daemon d;
  NotifySocket notify(d.dir() / "notify");
  // WATCHDOG_PID names moltd itself: the shell sets it to its own pid, then becomes moltd.
  d.spawn({notify.env(), "WATCHDOG_USEC=200000"}, {"sh", "-c", "WATCHDOG_PID=$$ exec \"$0\" \"$@\""});
  d.wait_ready();
  int pings = 0;
  CHECK(wait_until([&] {
    for (std::string message = notify.next(0ms); !message.empty(); message = notify.next(0ms))
      pings += message == "WATCHDOG=1";
    return pings >= 5;
  }));
  CHECK(d.log().find("watchdog: WATCHDOG=1 every 100 ms while the HTTP and stream I/O threads answer") !=
        std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("systemd-socket-activate hands moltd kv's listener, and redis-cli talks to kv through it", "[systemd]") {
  REQUIRE(run_process({"systemd-socket-activate", "--version"}).exit_code == 0);  // scripts/install-deps: systemd
  // kv's own listen address is not the activated port: the socket from systemd replaces it.
  Daemon d({{"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}});
  NotifySocket notify(d.dir() / "notify");
  const std::uint16_t port = free_port();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  d.spawn({}, {"systemd-socket-activate", "--listen=" + address, "--fdname=kv", "--setenv=" + notify.env()});

  // systemd-socket-activate execs moltd at the first connection: this one
  // waits in the backlog while moltd boots, and is answered once it serves.
  std::unique_ptr<RespClient> first;
  REQUIRE(wait_until([&] {
    try {
      first = std::make_unique<RespClient>(port);
      return true;
    } catch (const std::runtime_error&) {  // not listening yet
      return false;
    }
  }));
  first->send({"SET", "a", "1"});
  CHECK(first->read_reply() == "+OK\r\n");
  d.wait_ready();
  CHECK(notify.next() == "READY=1\nSTATUS=serving 1 module: kv v1; release initial (permanent)");

  CHECK(redis_cli(port, {"GET", "a"}).out == "1\n");
  CHECK(redis_cli(port, {"SET", "b", "2"}).out == "OK\n");
  CHECK(redis_cli(port, {"GET", "b"}).out == "2\n");
  const auto status = d.status();
  CHECK(status["modules"][0]["listen"] == nlohmann::json::array({address}));  // 127.0.0.1:0 was not bound
  CHECK(d.log().find("socket activation: fd 3 ('kv', " + address + ") is for module kv") != std::string::npos);
  CHECK(d.stop() == 0);
}

TEST_CASE("sockets from systemd outlive moltd: a connection made while it restarts is answered after", "[systemd]") {
  Daemon d({{"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}});
  // The test holds the sockets, as systemd does for a .socket unit across
  // restarts of its service; "stray" names nothing moltd runs.
  const ListeningSocket kv, http, stray;
  const std::vector<std::string> environment{"LISTEN_FDS=3", "LISTEN_FDNAMES=kv:http:stray"};
  // LISTEN_PID must be moltd's own pid: the shell sets it to its own, then becomes moltd.
  const std::vector<std::string> wrapper{"sh", "-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""};
  const std::vector<int> fds{kv.fd(), http.fd(), stray.fd()};
  d.spawn(environment, wrapper, fds);
  d.wait_ready();

  CHECK(d.http() == "127.0.0.1:" + std::to_string(http.port()));
  CHECK(d.http_code("GET", "/-/status") == "200");
  CHECK(RespClient(kv.port()).call({"SET", "k", "v"}) == "+OK\r\n");
  CHECK(d.log().find("socket activation: closed stray (fd 5, 127.0.0.1:" + std::to_string(stray.port()) +
                     "): no module of that name runs") != std::string::npos);

  REQUIRE(d.stop() == 0);
  RespClient waiting(kv.port());  // moltd is gone, its listening socket is not: the kernel queues this
  waiting.send({"GET", "k"});
  d.spawn(environment, wrapper, fds);
  d.wait_ready();
  CHECK(waiting.read_reply() == "$1\r\nv\r\n");  // answered by the new moltd, from the state saved at shutdown
  CHECK(d.stop() == 0);
}

TEST_CASE("a module removed and added back serves the socket from systemd again, connections wait meanwhile",
          "[systemd]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1}, {"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}});
  const ListeningSocket kv;
  const std::vector<std::string> wrapper{"sh", "-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""};
  d.spawn({"LISTEN_FDS=1", "LISTEN_FDNAMES=kv"}, wrapper, {kv.fd()});
  d.wait_ready();
  CHECK(RespClient(kv.port()).call({"SET", "k", "v"}) == "+OK\r\n");

  const fs::path remove = d.dir() / "remove.toml";
  std::ofstream(remove) << "release = \"no-kv\"\n[[step]]\naction = \"remove\"\nmodule = \"kv\"\nfrom = 1\n";
  const auto removed = d.ctl({"upgrade", remove.string()});
  INFO(removed.out << removed.err);
  REQUIRE(removed.exit_code == 0);
  RespClient waiting(kv.port());  // nobody accepts now: it waits in the backlog
  waiting.send({"GET", "k"});

  const fs::path add = d.dir() / "add.toml";
  std::ofstream(add) << "release = \"kv-back\"\n[[step]]\naction = \"add\"\nmodule = \"kv\"\nto = 1\n";
  const auto added = d.ctl({"upgrade", add.string()});
  INFO(added.out << added.err);
  REQUIRE(added.exit_code == 0);
  CHECK(waiting.read_reply() == "$1\r\nv\r\n");  // the same socket, served again, with kv's state from its removal
  CHECK(d.stream_port("kv") == kv.port());
  CHECK(d.stop() == 0);
}

TEST_CASE("a hot restart under systemd: the old moltd names the new one MAINPID before it exits, the new one says "
          "READY, and the watchdog goes on from the new process",
          "[systemd][hot-restart]") {
  Daemon d;  // counter v1
  NotifySocket notify(d.dir() / "notify");
  d.start({notify.env(), "WATCHDOG_USEC=400000"});
  CHECK(notify.next() == "READY=1\nSTATUS=serving 1 module: counter v1; release initial (permanent)");
  const Json reply = d.hot_restart();
  INFO(reply.dump());
  REQUIRE(reply.value("ok", false));
  const std::string successor = std::to_string(d.pid());
  // The old process's MAINPID=, the new one's own, and its READY=1 may
  // arrive in either order; WATCHDOG=1 comes from both meanwhile.
  std::vector<std::string> said;
  REQUIRE(wait_until([&] {
    if (auto message = notify.next(100ms); !message.empty() && message != "WATCHDOG=1") said.push_back(message);
    return said.size() >= 3;
  }));
  CHECK(std::count(said.begin(), said.end(),
                   "MAINPID=" + successor + "\nSTATUS=handed over to pid " + successor + " (hot restart)") == 1);
  CHECK(std::count(said.begin(), said.end(), "MAINPID=" + successor) == 1);
  CHECK(std::count(said.begin(), said.end(),
                   "READY=1\nSTATUS=serving 1 module: counter v1; release initial (permanent)") == 1);
  // The watchdog: the new process pings every half interval.
  int pings = 0;
  REQUIRE(wait_until([&] {
    if (notify.next(300ms) == "WATCHDOG=1") ++pings;
    return pings >= 3;
  }));
  REQUIRE(d.stop() == 0);
}
