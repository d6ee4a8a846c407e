// ControlServer's limits on a real Unix socket in a temporary directory, with
// short deadlines: a request's deadline is for the whole request, slow
// clients cost no thread, and the socket keeps answering at the descriptor
// limit. The same limits against a real moltd: tests/hostile/control_test.cpp.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "control_host.hpp"
#include "skip.hpp"
#include "molt/host/control/control_server.hpp"

using namespace molt;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

namespace {

/// A control server on a host without modules, with `options` (its socket in the temporary directory).
struct Server : test::ControlHost {
  std::unique_ptr<host::ControlServer> server;

  explicit Server(host::ControlServerOptions options) {
    options.socket_path = socket();
    server = std::make_unique<host::ControlServer>(std::move(options), handler, test::test_logger("control"));
    REQUIRE(server->start());
  }
  [[nodiscard]] std::filesystem::path socket() const { return dir.path() / "control.sock"; }
};

/// A raw client: an AF_UNIX socket, connected when connect() is called.
class Client {
 public:
  Client() : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) { REQUIRE(fd_ >= 0); }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  Client(Client&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Client(const Client&) = delete;

  void connect(const std::filesystem::path& path) const {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  }
  bool send(std::string_view bytes) const {
    return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT) == static_cast<ssize_t>(bytes.size());
  }
  /// Everything until the server closes, or until `timeout`; `closed` says which.
  std::string read_all(std::chrono::milliseconds timeout, bool& closed) const {
    const auto deadline = Clock::now() + timeout;
    std::string out;
    closed = false;
    do {  // at least once: a timeout of 0 looks without waiting
      pollfd p{fd_, POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (::poll(&p, 1, static_cast<int>(std::max<long long>(left, 0))) <= 0) continue;
      char buffer[4096];
      const ssize_t n = ::recv(fd_, buffer, sizeof buffer, MSG_DONTWAIT);
      if (n > 0) out.append(buffer, static_cast<std::size_t>(n));
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        closed = true;
        break;
      }
    } while (Clock::now() < deadline);
    return out;
  }
  /// Whether the server closed the connection, without waiting.
  [[nodiscard]] bool closed_now() const {
    bool closed = false;
    read_all(0ms, closed);
    return closed;
  }

 private:
  int fd_;
};

std::chrono::milliseconds since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
}

double cpu_seconds_of_this_process() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

}  // namespace

TEST_CASE("a request must be complete within its deadline from the accept, however steadily its bytes trickle",
          "[control]") {
  host::ControlServerOptions options;
  options.request_timeout = 800ms;
  Server s(options);
  Client client;
  const auto start = Clock::now();
  client.connect(s.socket());
  // A byte every 100 ms: each read is quick, the request never completes.
  const std::string request = R"({"command":"status"             )";
  std::size_t sent = 0;
  REQUIRE(test::wait_until(
      [&] {
        if (client.closed_now()) return true;
        if (since(start) >= std::chrono::milliseconds(100 * (sent + 1)) && sent < request.size())
          client.send(request.substr(sent++, 1));
        return false;
      },
      5s));
  const auto took = since(start);
  CHECK(took >= 700ms);
  CHECK(took < 2000ms);
  CHECK(sent >= 6);
}

TEST_CASE("the deadline's error line reaches a slow client, and the socket serves others meanwhile", "[control]") {
  host::ControlServerOptions options;
  options.request_timeout = 500ms;
  Server s(options);
  Client slow;
  slow.connect(s.socket());
  REQUIRE(slow.send(R"({"command":)"));
  const auto status = host::control_call(s.socket(), {{"command", "status"}}, 5s);
  REQUIRE(status);
  CHECK(status->body["ok"] == true);
  bool closed = false;
  CHECK(slow.read_all(5s, closed) == "{\"error\":\"request not complete within 500 ms\",\"ok\":false}\n");
  CHECK(closed);
}

TEST_CASE("status is answered at once while max_running clients trickle their requests", "[control]") {
  host::ControlServerOptions options;  // the defaults: 10 s deadline, 16 running, 64 pending
  Server s(options);
  std::vector<Client> trickling(options.max_running);
  for (auto& client : trickling) {
    client.connect(s.socket());
    REQUIRE(client.send("{"));
  }
  const auto start = Clock::now();
  const auto status = host::control_call(s.socket(), {{"command", "status"}}, 5s);
  const auto took = since(start);
  REQUIRE(status);
  CHECK(status->body["ok"] == true);
  CHECK(took < 1000ms);
  for (const auto& client : trickling) CHECK_FALSE(client.closed_now());  // still inside their deadline
}

TEST_CASE("past max_pending connections, one more gets the busy reply at once", "[control]") {
  host::ControlServerOptions options;
  options.max_pending = 4;
  Server s(options);
  std::vector<Client> waiting(4);
  for (auto& client : waiting) client.connect(s.socket());
  Client extra;
  extra.connect(s.socket());
  bool closed = false;
  CHECK(extra.read_all(5s, closed) ==
        "{\"error\":\"busy: 4 control connections still sending their request\",\"ok\":false}\n");
  CHECK(closed);
  waiting.pop_back();  // one goes: room for one more
  REQUIRE(test::wait_until([&] {
    const auto status = host::control_call(s.socket(), {{"command", "status"}}, 5s);
    return status && status->body["ok"] == true;
  }));
}

TEST_CASE("a request larger than the limit gets the exact error line", "[control]") {
  host::ControlServerOptions options;
  options.max_request_bytes = 1024;
  Server s(options);
  Client client;
  client.connect(s.socket());
  REQUIRE(client.send(std::string(1025, ' ')));
  bool closed = false;
  CHECK(client.read_all(5s, closed) == "{\"error\":\"request larger than 1024 bytes\",\"ok\":false}\n");
  CHECK(closed);
  // Exactly the limit, then the '\n': a request.
  const auto status = host::control_call(s.socket(), Json{{"command", "status"}, {"pad", std::string(990, ' ')}}, 5s);
  REQUIRE(status);
  CHECK(status->body["ok"] == true);
}

TEST_CASE("out of descriptors, the spare one serves a control connection, and accept backs off instead of spinning",
          "[control]") {
#ifdef MOLT_SANITIZED
  // UBSan's vptr check opens a pipe whenever its type cache misses: out of
  // descriptors it reports (and halts on) any virtual call, whatever moltd does.
  MOLT_SKIP("under the sanitizers: their runtime needs file descriptors of its own", test::SkipInCi::Allowed);
#endif
  host::ControlServerOptions options;
  options.request_timeout = 1500ms;
  Server s(options);
  Client first, second;  // their sockets exist before the descriptors run out

  rlimit saved{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &saved) == 0);
  rlimit lowered = saved;
  lowered.rlim_cur = std::min<rlim_t>(saved.rlim_cur, 512);
  REQUIRE(::setrlimit(RLIMIT_NOFILE, &lowered) == 0);
  std::vector<int> filler;
  for (int i = 0; i < 1024; ++i) {
    const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0) break;
    filler.push_back(fd);
  }
  const bool exhausted = ::open("/dev/null", O_RDONLY | O_CLOEXEC) < 0 && errno == EMFILE;
  struct Restore {
    std::vector<int>& filler;
    rlimit saved;
    ~Restore() {
      for (const int fd : filler) ::close(fd);
      ::setrlimit(RLIMIT_NOFILE, &saved);
    }
  } restore{filler, saved};
  REQUIRE(exhausted);

  // The first connection gets the spare descriptor; it says nothing for now.
  first.connect(s.socket());
  // The second finds none: the server must wait, not spin on the readable listen socket.
  second.connect(s.socket());
  const double cpu_before = cpu_seconds_of_this_process();
  const auto start = Clock::now();
  bool closed = false;
  // The first one's deadline passes: its error line, and its descriptor is free again.
  CHECK(first.read_all(5s, closed) == "{\"error\":\"request not complete within 1500 ms\",\"ok\":false}\n");
  CHECK(closed);
  const double cpu = cpu_seconds_of_this_process() - cpu_before;
  const auto waited = since(start);
  CAPTURE(waited.count(), cpu);
  CHECK(waited >= 1000ms);
  // Backing off, it uses next to nothing (0.5 ms measured); spinning, most of a core.
  CHECK(cpu < 0.1 * std::chrono::duration<double>(waited).count());

  // The second is accepted now (with the spare, taken back from the first), and served.
  REQUIRE(second.send("{\"command\":\"status\"}\n"));
  const std::string reply = second.read_all(5s, closed);
  CAPTURE(reply);
  REQUIRE(closed);
  CHECK(Json::parse(reply)["ok"] == true);
}
