// Hostile clients against kv's RESP reading, on a real moltd over loopback:
// a huge command trickled in slices, bad multibulk lengths, replies forged
// through error messages, an exponential glob, unbalanced inline quotes.
// Each checks the exact bytes Redis 7 would answer, whether the connection
// is closed, and that another client is served meanwhile.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "hostile.hpp"

using namespace molt::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

/// moltd serving kv v3 (every command kv has) on a free loopback port.
Daemon kv_daemon() { return Daemon({{"kv", plugin_path("kv", 3), 3, "listen = \"127.0.0.1:0\"\n"}}); }

std::string encode(const std::vector<std::string>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& arg : args) out += "$" + std::to_string(arg.size()) + "\r\n" + arg + "\r\n";
  return out;
}

std::uint16_t local_port(const RawConnection& connection) {
  sockaddr_in address{};
  socklen_t length = sizeof address;
  ::getsockname(connection.fd(), reinterpret_cast<sockaddr*>(&address), &length);
  return ntohs(address.sin_port);
}

/// Bytes that reached moltd's end of the connection from `client_port` to
/// `server_port` and that moltd has not read yet; nothing if it is not listed.
std::optional<std::uint64_t> unread_by_server(pid_t pid, std::uint16_t server_port, std::uint16_t client_port) {
  const auto row = tcp_socket(pid, server_port, client_port);
  if (!row) return std::nullopt;
  return row->rx_queue;
}

/// A PING on `client` answered with PONG within `timeout`; how long it took.
std::optional<Clock::duration> ping(RawConnection& client, std::chrono::milliseconds timeout = 5s) {
  const auto start = Clock::now();
  if (!client.send_all("*1\r\n$4\r\nPING\r\n", timeout)) return std::nullopt;
  if (client.read_exactly(7, timeout) != "+PONG\r\n") return std::nullopt;
  return Clock::now() - start;
}

/// The DEL of a million keys: 1,000,001 arguments, about 7 MB.
std::string million_argument_command() {
  std::string command = "*1000001\r\n$3\r\nDEL\r\n";
  command.reserve(command.size() + 7 * 1000000);
  for (int i = 0; i < 1000000; ++i) command += "$1\r\nk\r\n";
  return command;
}


/// moltd's CPU time for `command` sent on a new connection in `slices`
/// pieces, each sent once moltd has read the one before (so each arrives in
/// a read of its own and kv is called once per piece); checks the reply,
/// and that `other` is served promptly meanwhile.
double moltd_cpu_for(Daemon& d, RawConnection& other, const std::string& command, std::size_t slices,
                     std::string_view reply) {
  const std::uint16_t port = d.stream_port("kv");
  RawConnection client(port);
  const std::uint16_t client_port = local_port(client);
  const std::size_t step = command.size() / slices + 1;
  const auto deadline = Clock::now() + 120s;
  const double before = cpu_seconds(d.pid());
  std::size_t sent = 0, separate_reads = 0;
  for (std::size_t slice = 0; slice < slices && sent < command.size() && Clock::now() < deadline; ++slice) {
    const std::string_view piece = std::string_view(command).substr(sent, step);
    REQUIRE(client.send_all(piece, 10s));
    sent += piece.size();
    if (slices > 1 && wait_until([&] { return unread_by_server(d.pid(), port, client_port) == 0u; }, 10s))
      ++separate_reads;
    if (slice % 100 == 50) {  // another client is served meanwhile, promptly
      const auto answered = ping(other);
      REQUIRE(answered);
      CHECK(*answered < 1s);
    }
  }
  REQUIRE(sent == command.size());
  CHECK(client.read_exactly(reply.size(), 30s) == reply);
  const double spent = cpu_seconds(d.pid()) - before;
  if (slices > 1) CHECK(separate_reads == slices);
  return spent;
}

}  // namespace

TEST_CASE("a 7 MB command trickled in 2000 slices costs kv no more than twice the command sent whole",
          "[hostile][kv][protocol]") {
  auto d = kv_daemon();
  d.start();
  // The snapshot the boot's install takes (a second later, in the
  // background) would count in whichever measure it falls.
  REQUIRE(wait_until([&] { return d.snapshots_written(); }, 30s));
  RawConnection other(d.stream_port("kv"));
  REQUIRE(ping(other));
  // The attack: a million arguments, each read once however it is sliced.
  const std::string del = million_argument_command();
  // The same bytes as one bulk string, which kv reads in O(1) per call
  // whatever the slicing: what 2000 separate reads cost the host and the
  // kernel (wakeups, syscalls), which no module can save.
  const std::string header = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$" + std::to_string(del.size() - 32) + "\r\n";
  const std::string set = header + std::string(del.size() - 32, 'v') + "\r\n";
  REQUIRE(set.size() == del.size());

  const double whole_del = moltd_cpu_for(d, other, del, 1, ":0\r\n");
  const double whole_set = moltd_cpu_for(d, other, set, 1, "+OK\r\n");
  // kv's share of the sliced DEL (less what the same 2000 reads cost the
  // host) is at most twice the whole DEL; re-reading the command from its
  // start on every read cost seconds. What 2000 reads cost the host varies
  // from 0.05 to 0.3 s on this VM from one try to the next (wakeups on two
  // busy cores): the best of three tries, each measuring both. CPU clock
  // ticks are 10 ms: 4 measures, 5 ticks of slack.
  double kv_share = 1e9;
  for (int attempt = 0; attempt < (kSanitized ? 1 : 3) && kv_share > 2 * whole_del + 0.05; ++attempt) {
    // k holds the SET's value: the DEL removes it, the SET puts it back.
    const double sliced_del = moltd_cpu_for(d, other, del, 2000, ":1\r\n");
    const double sliced_set = moltd_cpu_for(d, other, set, 2000, "+OK\r\n");
    kv_share = std::min(kv_share, sliced_del - (sliced_set - whole_set));
    measured("kv: moltd CPU for a 7 MB DEL of 1 M keys sent whole / in 2000 slices",
             std::to_string(whole_del) + " / " + std::to_string(sliced_del) + " s (a 7 MB SET: " +
                 std::to_string(whole_set) + " / " + std::to_string(sliced_set) + " s, the host's cost of 2000 reads)");
  }
  REQUIRE(ping(other));
  if (!kSanitized) CHECK(kv_share <= 2 * whole_del + 0.05);
}

TEST_CASE("a bad multibulk length gets Redis's error and closes that connection only", "[hostile][kv][protocol]") {
  auto d = kv_daemon();
  d.start();
  const std::uint16_t port = d.stream_port("kv");
  RawConnection other(port);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"*9223372036854775808\r\n", "invalid multibulk length"},  // LLONG_MAX + 1: no longer wraps to an empty command
      {"*9999999999999999999\r\n", "invalid multibulk length"},
      {"*99999999999999999999\r\n", "invalid multibulk length"},
      {"*-9223372036854775809\r\n", "invalid multibulk length"},
      {"*2147483648\r\n", "invalid multibulk length"},  // INT_MAX + 1
      {"*01\r\n", "invalid multibulk length"},
      {"*+1\r\n", "invalid multibulk length"},
      {"*-0\r\n", "invalid multibulk length"},
      {"*\r\n", "invalid multibulk length"},
      {"*1x\r\n", "invalid multibulk length"},
      {"*" + std::string(65536, '9'), "too big mbulk count string"},  // 64 KiB + 1 without the line's end
  };
  for (const auto& [header, error] : cases) {
    INFO(header.substr(0, 30));
    RawConnection client(port);
    REQUIRE(client.send_all(header + "*1\r\n$4\r\nPING\r\n"));
    const std::string expected = "-ERR Protocol error: " + error + "\r\n";
    CHECK(client.read_exactly(expected.size()) == expected);
    CHECK(client.wait_closed());
    REQUIRE(ping(other));
  }
}

TEST_CASE("*-9223372036854775808 is an empty command, as in Redis, and the connection goes on", "[hostile][kv][protocol]") {
  auto d = kv_daemon();
  d.start();
  RawConnection client(d.stream_port("kv"));
  REQUIRE(client.send_all("*-9223372036854775808\r\n*-1\r\n*0\r\n*1\r\n$4\r\nPING\r\n"));
  CHECK(client.read_exactly(7) == "+PONG\r\n");
  CHECK_FALSE(client.closed());
}

TEST_CASE("bytes quoted in an error reply cannot forge the next reply", "[hostile][kv][protocol]") {
  auto d = kv_daemon();
  d.start();
  RawConnection client(d.stream_port("kv"));
  REQUIRE(client.send_all(encode({"SET", "r", "real"})));
  REQUIRE(client.read_exactly(5) == "+OK\r\n");
  const std::vector<std::pair<std::string, std::string>> attacks = {
      {encode({"EXPIRE", "r", "100", "a\r\n+OK"}), "-ERR Unsupported option a  +OK\r\n"},
      {encode({"EXPIRE", "r", "100", "a\r\n$4\r\nfake"}), "-ERR Unsupported option a  $4  fake\r\n"},
      {encode({"HELLO", "2", "a\r\n+OK"}), "-ERR Syntax error in HELLO option 'a  +OK'\r\n"},
      {encode({"CLIENT", "a\r\n+OK"}), "-ERR unknown subcommand 'a  +OK'. Try CLIENT HELP.\r\n"},
      {encode({"CONFIG", "a\r\n+OK"}), "-ERR unknown subcommand 'a  +OK'. Try CONFIG HELP.\r\n"},
      {encode({"NOCMD\r\n+OK", "x\r\n:1"}), "-ERR unknown command 'NOCMD  +OK', with args beginning with: 'x  :1' \r\n"},
      {"NOCMD \"a\\r\\n+OK\"\r\n", "-ERR unknown command 'NOCMD', with args beginning with: 'a  +OK' \r\n"},  // inline
  };
  for (const auto& [attack, error] : attacks) {
    INFO(attack);
    // The attack, then a command whose reply must come next, and be its own.
    REQUIRE(client.send_all(attack + encode({"GET", "r"})));
    const std::string expected = error + "$4\r\nreal\r\n";
    CHECK(client.read_exactly(expected.size()) == expected);
  }
  // Nothing more came: a forged reply would be waiting here.
  REQUIRE(client.send_all(encode({"PING"})));
  CHECK(client.read_exactly(7) == "+PONG\r\n");
  CHECK_FALSE(client.closed());
}

TEST_CASE("CONFIG GET with a pattern of 24 stars returns at once, and other clients wait for nothing",
          "[hostile][kv][protocol]") {
  auto d = kv_daemon();
  d.start();
  const std::uint16_t port = d.stream_port("kv");
  const std::string config_get = encode({"CONFIG", "GET", std::string(24, '*') + "\x01"});
  REQUIRE(config_get.size() == 57);  // the 57 bytes that kept every client waiting 2-3 s
  RawConnection attacker(port), other(port);
  REQUIRE(ping(other));
  std::string burst;
  for (int i = 0; i < 100; ++i) burst += config_get;  // 100 of them: minutes of CPU for a backtracking glob
  const auto start = Clock::now();
  REQUIRE(attacker.send_all(burst));
  const auto answered = ping(other);
  REQUIRE(answered);
  CHECK(*answered < 100ms);
  std::string expected;
  for (int i = 0; i < 100; ++i) expected += "*0\r\n";
  CHECK(attacker.read_exactly(expected.size()) == expected);
  CHECK(Clock::now() - start < 2s);
}

TEST_CASE("inline quotes that do not balance get Redis's error and close the connection", "[hostile][kv][protocol]") {
  auto d = kv_daemon();
  d.start();
  const std::uint16_t port = d.stream_port("kv");
  RawConnection other(port);
  for (const std::string line : {"ECHO \"a\"b\r\n", "SET k \"abc\r\n", "SET k 'abc\r\n", "ECHO 'a'b\r\n", "ECHO \"a\\\r\n"}) {
    INFO(line);
    RawConnection client(port);
    REQUIRE(client.send_all("PING\r\n" + line + "PING\r\n"));
    const std::string expected = "+PONG\r\n-ERR Protocol error: unbalanced quotes in request\r\n";
    CHECK(client.read_exactly(expected.size()) == expected);
    CHECK(client.wait_closed());
    REQUIRE(ping(other));
  }
}

TEST_CASE("an inline line without its end past 64 KiB is refused and closed", "[hostile][kv][protocol]") {
  auto d = kv_daemon();
  d.start();
  RawConnection client(d.stream_port("kv"));
  REQUIRE(client.send_all(std::string(65537, 'a')));
  const std::string expected = "-ERR Protocol error: too big inline request\r\n";
  CHECK(client.read_exactly(expected.size()) == expected);
  CHECK(client.wait_closed());
}
