// The systemd protocol pieces on their own: the variables systemd sets,
// notifications into a datagram socket the test owns, and when the
// watchdog pings, with probes the test answers (or not).
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <fstream>
#include <future>

#include <catch2/catch.hpp>

#include "molt/host/daemon/systemd.hpp"
#include "test_support.hpp"

using namespace molt::host;
using namespace molt::test;
using namespace std::chrono_literals;

namespace {

/// A datagram socket bound to `address` ("@name": abstract), as systemd's.
class NotifySocket {
 public:
  explicit NotifySocket(const std::string& address) : fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, address.data(), address.size());
    if (address[0] == '@') un.sun_path[0] = '\0';
    const auto length =
        static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.size() + (address[0] == '@' ? 0 : 1));
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&un), length) == 0);
  }
  ~NotifySocket() { ::close(fd_); }
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  /// The next datagram, or "" if none comes within a second.
  std::string next() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 1000) != 1) return {};
    char buffer[4096];
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
  }

 private:
  int fd_;
};

std::future<void> answered() {
  std::promise<void> p;
  p.set_value();
  return p.get_future();
}

}  // namespace

TEST_CASE("notifications reach a socket path and an abstract one, one datagram each", "[systemd]") {
  TempDir dir;
  const std::string path = (dir.path() / "notify").string();
  const std::string abstract = "@molt-test-" + std::to_string(::getpid());
  for (const std::string& address : {path, abstract}) {
    NotifySocket socket(address);
    systemd::Notifier notifier(address, test_logger("systemd"));
    REQUIRE(notifier.enabled());
    notifier.ready("serving 1 module:\ncounter v1");
    CHECK(socket.next() == "READY=1\nSTATUS=serving 1 module: counter v1");  // STATUS stays one line
    const auto before = systemd::monotonic_usec();
    notifier.reloading("reloading counter");
    const auto after = systemd::monotonic_usec();
    const std::string reloading = socket.next();
    REQUIRE(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="));
    const auto stamp = std::stoull(reloading.substr(std::strlen("RELOADING=1\nMONOTONIC_USEC=")));
    CHECK(stamp >= before);
    CHECK(stamp <= after);
    CHECK(reloading.ends_with("\nSTATUS=reloading counter"));
    notifier.stopping("SIGTERM");
    CHECK(socket.next() == "STOPPING=1\nSTATUS=SIGTERM");
    notifier.watchdog();
    CHECK(socket.next() == "WATCHDOG=1");
  }
}

TEST_CASE("a notifier without NOTIFY_SOCKET, or with one it cannot use, sends nothing", "[systemd]") {
  systemd::Notifier none("", test_logger("systemd"));
  CHECK_FALSE(none.enabled());
  CHECK_FALSE(none.send("READY=1"));
  systemd::Notifier relative("run/notify", test_logger("systemd"));
  CHECK_FALSE(relative.enabled());
  TempDir dir;  // a path nobody listens on: the send fails, and says so, without throwing
  systemd::Notifier nobody((dir.path() / "gone").string(), test_logger("systemd"));
  CHECK(nobody.enabled());
  CHECK_FALSE(nobody.send("READY=1"));
}

TEST_CASE("a notification socket nobody reads does not block the notifier: past its queue, sends give up and say so",
          "[systemd]") {
  TempDir dir;
  const std::string path = (dir.path() / "notify").string();
  NotifySocket socket(path);  // never read until the end
  systemd::Notifier notifier(path, test_logger("systemd"));
  const std::size_t queue = [] {  // what the kernel queues per datagram socket (net.unix.max_dgram_qlen)
    std::ifstream in("/proc/sys/net/unix/max_dgram_qlen");
    std::size_t length = 10;
    in >> length;
    return length;
  }();
  std::size_t sent = 0;
  // Run where the test can stop waiting: a send that blocked would hang the test, not fail it.
  auto sending = std::async(std::launch::async, [&] {
    for (std::size_t i = 0; i < queue + 3; ++i)
      if (notifier.send("WATCHDOG=1")) ++sent;
  });
  REQUIRE(sending.wait_for(30s) == std::future_status::ready);
  CHECK(sent >= 1);
  CHECK(sent < queue + 3);  // the ones past the queue were dropped, not waited for without end
  CHECK(socket.next() == "WATCHDOG=1");  // what was queued is there
}

TEST_CASE("WATCHDOG_USEC counts only for the process WATCHDOG_PID names", "[systemd]") {
  CHECK(systemd::parse_watchdog("30000000", nullptr, 42) == std::chrono::microseconds(30'000'000));
  CHECK(systemd::parse_watchdog("30000000", "42", 42) == std::chrono::microseconds(30'000'000));
  CHECK_FALSE(systemd::parse_watchdog("30000000", "41", 42));
  CHECK_FALSE(systemd::parse_watchdog(nullptr, "42", 42));
  CHECK_FALSE(systemd::parse_watchdog("0", nullptr, 42));
  CHECK_FALSE(systemd::parse_watchdog("30s", nullptr, 42));
}

TEST_CASE("LISTEN_FDS are fds 3 on, named by LISTEN_FDNAMES, for the process LISTEN_PID names", "[systemd]") {
  auto named = systemd::parse_listen_fds("42", "3", "kv:http:kv", 42);
  REQUIRE(named);
  REQUIRE(named->size() == 3);
  CHECK((named.value()[0].fd == 3 && named.value()[0].name == "kv"));
  CHECK((named.value()[1].fd == 4 && named.value()[1].name == "http"));
  CHECK((named.value()[2].fd == 5 && named.value()[2].name == "kv"));

  auto unnamed = systemd::parse_listen_fds("42", "1", nullptr, 42);
  REQUIRE(unnamed);
  REQUIRE(unnamed->size() == 1);
  CHECK(unnamed.value()[0].name == "unknown");

  auto other = systemd::parse_listen_fds("41", "1", "kv", 42);  // a parent's, inherited: not ours
  REQUIRE(other);
  CHECK(other->empty());
  auto unset = systemd::parse_listen_fds(nullptr, nullptr, nullptr, 42);
  REQUIRE(unset);
  CHECK(unset->empty());

  auto miscounted = systemd::parse_listen_fds("42", "2", "kv", 42);
  REQUIRE_FALSE(miscounted);
  CHECK(miscounted.error().reason == "socket activation: LISTEN_FDNAMES='kv' names 1 socket(s), LISTEN_FDS says 2");
  CHECK_FALSE(systemd::parse_listen_fds("42", "two", nullptr, 42));
  CHECK_FALSE(systemd::parse_listen_fds("me", "1", nullptr, 42));
}

TEST_CASE("the watchdog pings every half interval, and not while a part leaves its probe unanswered", "[systemd]") {
  int pings = 0;
  int probes = 0;
  std::promise<void> stuck;  // the probe the test answers late
  bool hang = false;
  systemd::Watchdog watchdog(
      std::chrono::microseconds(200'000),
      {{"http",
        [&]() -> std::future<void> {
          ++probes;
          return hang ? stuck.get_future() : answered();
        }}},
      [&] { ++pings; }, test_logger("moltd"));
  const auto t0 = systemd::Watchdog::Clock::now();

  CHECK(watchdog.tick(t0) == t0 + 100ms);  // the first tick pings at once, and probes
  CHECK(pings == 1);
  CHECK(probes == 1);
  CHECK(watchdog.tick(t0 + 50ms) == t0 + 100ms);  // too early: nothing
  CHECK(pings == 1);
  hang = true;
  watchdog.tick(t0 + 100ms);  // answered: ping; the new probe is the one left unanswered
  CHECK(pings == 2);
  CHECK(probes == 2);
  watchdog.tick(t0 + 200ms);
  watchdog.tick(t0 + 300ms);
  CHECK(pings == 2);   // held back while it does not answer...
  CHECK(probes == 2);  // ...and asked nothing new meanwhile
  stuck.set_value();
  hang = false;
  watchdog.tick(t0 + 400ms);
  CHECK(pings == 3);
  CHECK(probes == 3);
}
