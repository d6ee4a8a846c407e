// Hostile and careless clients against the host's connection limits
// (docs/operations.md, "Limits"): clients that never read, that send
// frames without end, that come in thousands, that sit idle, and a host out
// of file descriptors. Each test asserts the bound from /proc/PID, that an
// ordinary client is still served meanwhile, and the exact error the client
// or the operator gets.
//
// kv is the module under attack. The host's side of backpressure and of
// maxclients needs a module that asks StreamOutput::has_room() and has a
// refusal reply; the test module `flood` (tests/plugins/flood.cpp) has both
// and runs the same attacks, so that a regression shows whose it is.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "hostile.hpp"
#include "resp_client.hpp"
#include "skip.hpp"

using namespace molt;
using namespace molt::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

ModuleSpec kv(const std::string& extra = "") {
  return {"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n" + extra};
}

/// The test module that honours has_room() (unless `config` says
/// ignore_has_room = true): GET <any> answers 1 MB.
ModuleSpec flood(const std::string& extra = "", const std::string& config = "") {
  return {"flood", test_image_path("flood-1.so"), 1,
          "listen = \"127.0.0.1:0\"\n" + extra + "[modules.flood.config]\nreply_bytes = 1048576\n" + config};
}

std::uint16_t http_port(const Daemon& d) {
  return static_cast<std::uint16_t>(std::stoi(d.http().substr(d.http().rfind(':') + 1)));
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

/// One PING round trip (inline, which kv and flood both take); its time in
/// ms, or a huge number if it was not answered.
double ping_ms(RawConnection& client) {
  const auto start = Clock::now();
  if (!client.send_all("PING\r\n", 5s)) return 1e9;
  if (client.read_exactly(7, 5s) != "+PONG\r\n") return 1e9;
  return ms_since(start);
}

/// The longest of `n` round trips.
double longest_ping_ms(RawConnection& client, int n = 20) {
  double longest = 0;
  for (int i = 0; i < n; ++i) longest = std::max(longest, ping_ms(client));
  return longest;
}

/// Waits (up to `timeout`) until `pid`'s RSS has moved less than 4 MiB for
/// 500 ms: the host has done what the clients made it do.
void wait_rss_settled(pid_t pid, std::chrono::milliseconds timeout = 30s) {
  std::uint64_t last = rss_bytes(pid);
  auto since = Clock::now();
  wait_until(
      [&] {
        const std::uint64_t now = rss_bytes(pid);
        if ((now > last ? now - last : last - now) > 4 * kMiB) {
          last = now;
          since = Clock::now();
          return false;
        }
        return Clock::now() - since >= 500ms;
      },
      timeout);
}

/// Whether the peer has closed `c`, without waiting.
bool closed_now(RawConnection& c) {
  c.read_some(0ms);
  return c.closed();
}

/// The soft RLIMIT_NOFILE of `pid`, from /proc/PID/limits.
std::uint64_t soft_fd_limit(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/limits");
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with("Max open files")) return std::stoull(line.substr(26));
  FAIL("no Max open files in /proc/" << pid << "/limits");
  return 0;
}

/// The lowest descriptor number `pid` does not use: the next one it opens.
int lowest_free_fd(pid_t pid) {
  std::set<int> used;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd"))
    used.insert(std::stoi(entry.path().filename().string()));
  int fd = 0;
  while (used.contains(fd)) ++fd;
  return fd;
}

// --- (a) clients that pipeline large replies and never read -----------------

void pipelined_gets_without_reading(const ModuleSpec& module) {
  REQUIRE(raise_fd_limit(4096) >= 2100);
  Daemon d({module});
  d.start();
  const auto port = d.stream_port(module.name);
  const pid_t pid = d.pid();
  if (module.name == "kv") {
    RawConnection setter(port);
    REQUIRE(setter.send_all(RespClient::encode({"SET", "k", std::string(kMiB, 'v')})));
    REQUIRE(setter.read_exactly(5) == "+OK\r\n");
  }
  const std::uint64_t before = rss_bytes(pid);

  // 1000 clients each ask for 100 replies of 1 MB (100 GB in all) and read none.
  std::string pipeline;
  for (int i = 0; i < 100; ++i) pipeline += "GET k\r\n";
  std::vector<RawConnection> clients;
  clients.reserve(1000);
  for (int i = 0; i < 1000; ++i) {
    clients.emplace_back(port);
    REQUIRE(clients.back().send_all(pipeline, 5s));
  }
  wait_rss_settled(pid);
  const std::uint64_t soft_limit = kMiB;  // client_output_buffer_soft_limit's default
  const std::uint64_t growth = peak_rss_bytes(pid) - before;
  INFO("RSS grew by " << growth / kMiB << " MiB at most (before: " << before / kMiB << " MiB)");
  measured(module.name + ": 1000 clients pipelining 100 GETs of 1 MB, never reading: peak RSS growth",
           std::to_string(growth / kMiB) + " MiB (bound " + std::to_string((1000 * soft_limit + 100 * kMiB) / kMiB) +
               " MiB)");
  if (!kSanitized) CHECK(growth <= 1000 * soft_limit + 100 * kMiB);

  // Meanwhile an ordinary client is answered at once.
  RawConnection ordinary(port);
  const double longest = longest_ping_ms(ordinary, 20);
  INFO("longest of 20 PING round trips: " << longest << " ms");
  measured(module.name + ": meanwhile, the longest of 20 PINGs on another connection", std::to_string(longest) + " ms");
  // The bound says "not held up by the flood": a connection stuck behind
  // 1000 blocked ones would wait seconds. It is not a latency figure (that is
  // what `measured` prints, 0.2 ms on an idle machine): a loaded 2-core
  // machine delays a thread by 15 ms now and then, as a CI run with a
  // compiler beside it showed.
  CHECK(longest < (kSanitized ? 1000 : 100));
  CHECK(std::none_of(clients.begin(), clients.end(), [](RawConnection& c) { return closed_now(c); }));

  // Gone, they leave nothing behind but what the allocator keeps (their
  // 16 kB buffers come from the heap; the large ones were mapped and are gone).
  clients.clear();
  const bool freed = wait_until([&] { return rss_bytes(pid) < before + 100 * kMiB; }, 20s);
  INFO("RSS after the clients left: " << rss_bytes(pid) / kMiB << " MiB (before: " << before / kMiB << " MiB)");
  if (!kSanitized) CHECK(freed);
  CHECK(ping_ms(ordinary) < 1000);
}

// --- (c) maxclients ----------------------------------------------------------

void maxclients_refuses(const ModuleSpec& module) {
  Daemon d({module}, "maxclients = 20\n");  // the HTTP listener's; the module's own is 50
  d.start();
  const auto port = d.stream_port(module.name);
  std::vector<RawConnection> clients;
  for (int i = 0; i < 50; ++i) {
    clients.emplace_back(port);
    REQUIRE(ping_ms(clients.back()) < 5000);
  }
  RawConnection extra(port);
  CHECK(extra.read_exactly(37, 5s) == "-ERR max number of clients reached\r\n");
  CHECK(extra.wait_closed(5s));
  CHECK(ping_ms(clients.front()) < 1000);  // the ones inside are served
  const std::string refused = "[" + module.name + "] maxclients (50) reached on 127.0.0.1:" + std::to_string(port) +
                              ": refusing new connections (1 since this was last logged";
  CHECK(wait_until([&] { return d.log().find(refused) != std::string::npos; }, 5s));
  // Operators see it: in the status and in the metrics.
  const Json status = d.status();
  for (const auto& m : status["modules"])
    if (m["name"] == module.name) {
      CHECK(m["maxclients"] == 50);
      CHECK(m["refused_connections"] == 1);
    }
  CHECK_THAT(d.curl({"/-/metrics"}).out,
             Catch::Contains("molt_listener_refused_connections_total{module=\"" + module.name +
                             "\",listener=\"127.0.0.1:" + std::to_string(port) + "\"} 1\n") &&
                 Catch::Contains("molt_listener_maxclients{module=\"" + module.name + "\",listener=\"127.0.0.1:" +
                                 std::to_string(port) + "\"} 50\n"));
  // A place freed is a place taken.
  clients.pop_back();
  CHECK(wait_until(
      [&] {
        RawConnection next(port);
        return ping_ms(next) < 5000;
      },
      5s));

  // HTTP: past its maxclients, 503 with a JSON error, and the connection closes.
  // Each of the 20 sessions is known to be one (it is answered 200 and kept
  // open): a connection of an earlier curl that moltd has not yet seen
  // closed still counts, so a session opened at that moment may be refused.
  std::vector<RawConnection> sessions;
  while (sessions.size() < 20) {
    REQUIRE(wait_until(
        [&] {
          RawConnection session(http_port(d));
          if (!session.send_all("GET /-/status HTTP/1.1\r\nHost: molt\r\n\r\n") ||
              !session.read_exactly(12, 5s).starts_with("HTTP/1.1 200"))
            return false;
          sessions.push_back(std::move(session));
          return true;
        },
        5s));
  }
  const auto answer = d.curl({"-i", "/-/status"});
  INFO(answer.out << answer.err);
  CHECK(answer.out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
  CHECK_THAT(answer.out, Catch::Contains("Connection: close\r\n") &&
                             Catch::EndsWith("\r\n\r\n{\"error\":\"max number of clients reached\"}\n"));
  CHECK(wait_until([&] { return d.log().find("http: maxclients (20) reached on " + d.http()) != std::string::npos; },
                   5s));
  sessions.pop_back();
  CHECK(wait_until([&] { return d.http_code("GET", "/-/status") == "200"; }, 5s));
  const std::string metrics = d.curl({"/-/metrics"}).out;
  const std::string counter = "molt_http_refused_connections_total{listener=\"" + d.http() + "\"} ";
  const auto at = metrics.find(counter);
  REQUIRE(at != std::string::npos);
  CHECK(std::stoull(metrics.substr(at + counter.size())) >= 1);  // the curl above, and any refused while waiting
}

}  // namespace

TEST_CASE("connections: 1000 kv clients pipelining GETs of 1 MB without reading hold at most the output soft limit "
          "each, and an ordinary client is answered at once",
          "[hostile][connections]") {
  pipelined_gets_without_reading(kv());
}

TEST_CASE("connections: the host's backpressure alone, with a module that asks has_room(): 1000 clients that never "
          "read hold at most the output soft limit each",
          "[hostile][connections]") {
  pipelined_gets_without_reading(flood());
}

TEST_CASE("connections: a client past the output hard limit is closed, with one log line naming it", "[hostile][connections]") {
  // A module that ignores has_room(): only the hard limit bounds its output.
  Daemon d({flood("", "ignore_has_room = true\n")}, "client_output_buffer_hard_limit = \"8mb\"\n");
  d.start();
  const auto port = d.stream_port("flood");
  const pid_t pid = d.pid();
  const std::uint64_t before = rss_bytes(pid);
  RawConnection greedy(port);
  std::string pipeline;
  for (int i = 0; i < 100; ++i) pipeline += "GET k\r\n";
  REQUIRE(greedy.send_all(pipeline));
  CHECK(greedy.wait_closed(10s));
  CHECK(wait_until([&] { return d.log().find("bytes of output unsent, past client_output_buffer_hard_limit (8388608 "
                                              "bytes); closing it") != std::string::npos; }, 5s));
  CHECK(occurrences(d.log(), "past client_output_buffer_hard_limit") == 1);
  if (!kSanitized) CHECK(peak_rss_bytes(pid) - before <= 8 * kMiB + 32 * kMiB);
  RawConnection ordinary(port);
  CHECK(ping_ms(ordinary) < 1000);
}

TEST_CASE("connections: 200 unfinished 200 MB bulks stay within max_connection_memory, the largest closed first",
          "[hostile][connections]") {
  REQUIRE(raise_fd_limit(1024) >= 400);
  Daemon d({kv()}, "max_connection_memory = \"256mb\"\n");
  d.start();
  const auto port = d.stream_port("kv");
  const pid_t pid = d.pid();
  const std::uint64_t before = rss_bytes(pid);
  const std::string header = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$209715200\r\n";
  const std::string chunk(64 * 1024, 'x');

  // 199 clients send a quarter of a MB of their 200 MB each...
  std::vector<RawConnection> small;
  for (int i = 0; i < 199; ++i) {
    small.emplace_back(port);
    REQUIRE(small.back().send_all(header + std::string(256 * 1024, 'x'), 10s));
  }
  // ...and one sends 100 MB of its own: the host holds all of it, within the budget.
  RawConnection large(port);
  REQUIRE(large.send_all(header, 10s));
  for (int i = 0; i < 1600; ++i) REQUIRE(large.send_all(chunk, 10s));
  CHECK(wait_until([&] { return rss_bytes(pid) >= before + 140 * kMiB; }, 20s));
  CHECK_FALSE(closed_now(large));

  // The small ones go on; when the budget runs out, the largest goes first.
  const auto evicted = [&] { return occurrences(d.log(), "closing it to keep all connections' buffers within "
                                                   "max_connection_memory (268435456 bytes)"); };
  const auto start = Clock::now();
  std::uint64_t sent = 0;
  while (Clock::now() - start < 20s && sent < 600 * kMiB) {  // more than twice the budget
    std::size_t round = 0;
    for (auto& client : small)
      if (!client.closed()) round += client.send_some(chunk);
    sent += round;
    if (round == 0 && std::all_of(small.begin(), small.end(), [](RawConnection& c) { return closed_now(c); })) break;
    if (round == 0) small.front().read_some(1ms);  // every socket full: let the host catch up
  }
  INFO("sent " << sent / kMiB << " MiB more; log:\n" << d.log());
  CHECK(large.wait_closed(5s));
  const std::string log = d.log();
  const auto first = log.find("closing it to keep all connections' buffers within max_connection_memory");
  REQUIRE(first != std::string::npos);
  // The first one closed is the large one, with the bytes it held (128 MiB of buffer).
  const auto line_start = log.rfind('\n', first) + 1;
  CHECK_THAT(log.substr(line_start, first - line_start),
             Catch::Contains("[kv] connection ") && Catch::Contains(": 134217728 bytes in its buffers, the most of any "
                                                                    "connection; "));
  // And the small ones, once they have grown, as the budget requires (their
  // bytes may still be in the sockets: the host reads them as it can).
  CHECK(wait_until([&] { return evicted() >= 2; }, 20s));

  // Never more buffered than the budget, whatever the clients did.
  const std::uint64_t growth = peak_rss_bytes(pid) - before;
  INFO("RSS grew by " << growth / kMiB << " MiB at most");
  measured("kv: 200 unfinished 200 MB bulks with max_connection_memory 256 MiB: peak RSS growth",
           std::to_string(growth / kMiB) + " MiB (bound 320 MiB), " + std::to_string(evicted()) + " connections closed");
  if (!kSanitized) CHECK(growth <= 256 * kMiB + 64 * kMiB);

  // A newcomer does not queue behind the connections growing (that cost
  // seconds). The best of three newcomers: under CI's two parallel tests one
  // round trip was seen at 116 ms, the machine busy, not the host queuing.
  double fastest = 1e9;
  for (int i = 0; i < 3 && fastest >= 100; ++i) {
    RawConnection ordinary(port);
    fastest = std::min(fastest, ping_ms(ordinary));
  }
  CHECK(fastest < 100);
  RespClient other(port);
  CHECK(other.call({"SET", "x", "1"}) == "+OK\r\n");
}

TEST_CASE("connections: past maxclients a kv client reads Redis's error and is closed, HTTP answers 503",
          "[hostile][connections]") {
  maxclients_refuses(kv("maxclients = 50\n"));
}

TEST_CASE("connections: past maxclients the host sends the module's refusal reply (test module)",
          "[hostile][connections]") {
  maxclients_refuses(flood("maxclients = 50\n"));
}

TEST_CASE("connections: an idle kv client is closed after timeout, a busy one is not", "[hostile][connections]") {
  Daemon d({kv("timeout = 1\n")});
  d.start();
  const auto port = d.stream_port("kv");
  RawConnection idle(port);
  RawConnection busy(port);
  REQUIRE(ping_ms(idle) < 1000);
  const auto start = Clock::now();
  // The busy one asks something every few ms; the idle one says nothing.
  CHECK(wait_until([&] { return ping_ms(busy) < 1000 && closed_now(idle); }, 10s));
  const double idle_for = ms_since(start);
  CHECK(idle_for >= 900);   // not before the timeout (1 s)...
  CHECK(idle_for <= 3000);  // ...and soon after it
  CHECK(wait_until([&] { return ping_ms(busy) > 1000 || ms_since(start) >= 3000; }, 10s));
  CHECK_FALSE(closed_now(busy));
  CHECK(ping_ms(busy) < 1000);
  const Json status = d.status();
  CHECK(status["modules"][0]["closed_by_limit"]["timeout"] == 1);
}

TEST_CASE("connections: out of file descriptors, the accept loops back off instead of spinning, and recover",
          "[hostile][connections]") {
  // UBSan's vptr check opens a pipe to probe memory whenever its type cache
  // misses; out of descriptors that fails and it reports (and, with
  // -fno-sanitize-recover, kills) any virtual call. So a sanitized moltd
  // cannot run out of descriptors, whatever moltd does.
  if (kSanitized) MOLT_SKIP("under the sanitizers: their runtime needs file descriptors of its own", SkipInCi::Allowed);
  Daemon d({kv()});
  d.start();
  // The boot's snapshot, taken a second later in the background, would
  // open a file (and spend CPU) while descriptors run out.
  REQUIRE(wait_until([&] { return d.snapshots_written(); }, 30s));
  const auto port = d.stream_port("kv");
  const auto web = http_port(d);
  const pid_t pid = d.pid();
  const std::uint64_t limit = soft_fd_limit(pid);
  // Every descriptor moltd opens next is past this limit: accept fails with EMFILE.
  const int lowest = lowest_free_fd(pid);
  const auto lowered = run_process({"prlimit", "--pid", std::to_string(pid), "--nofile=" + std::to_string(lowest) + ":"});
  INFO(lowered.out << lowered.err);
  REQUIRE(lowered.exit_code == 0);

  // Clients keep coming (they wait in the backlog) for 2 s.
  const double cpu_before = cpu_seconds(pid);
  const auto start = Clock::now();
  std::vector<RawConnection> waiting;
  wait_until(
      [&] {
        if (waiting.size() < 200) {
          waiting.emplace_back(port);
          waiting.emplace_back(web);
        }
        return Clock::now() - start >= 2s;
      },
      5s);
  const double cpu = (cpu_seconds(pid) - cpu_before) / (ms_since(start) / 1000);
  INFO("moltd used " << cpu * 100 << " % of a core meanwhile");
  measured("kv and HTTP held at EMFILE for 2 s: moltd's CPU", std::to_string(cpu * 100) + " % of a core (bound 5 %)");
  if (!kSanitized) CHECK(cpu < 0.05);
  const std::string log = d.log();
  INFO(log);
  CHECK(occurrences(log, "[kv] accept on 127.0.0.1:" + std::to_string(port) +
                       ": Too many open files: out of file descriptors (RLIMIT_NOFILE, or fs.file-max); backing off "
                       "50 ms, up to 500 ms (1 failure(s) since this was last logged; logged at most every 10 s)") == 1);
  CHECK(occurrences(log, "[moltd] http: accept on " + d.http() + ": Too many open files: out of file descriptors") == 1);
  CHECK(occurrences(log, "out of file descriptors") == 2);

  // Descriptors back: every listener accepts again within 1 s.
  const auto raised = run_process({"prlimit", "--pid", std::to_string(pid), "--nofile=" + std::to_string(limit) + ":"});
  REQUIRE(raised.exit_code == 0);
  const auto back = Clock::now();
  RawConnection fresh(port);
  CHECK(ping_ms(fresh) < 1000);
  CHECK(d.http_code("GET", "/-/status") == "200");
  measured("descriptors back after EMFILE: kv and HTTP answer again after", std::to_string(ms_since(back)) + " ms (bound 1000 ms)");
  CHECK(ms_since(back) < 1000);
  CHECK(wait_until([&] { return d.log().find("[kv] accept on 127.0.0.1:" + std::to_string(port) + " works again") !=
                                std::string::npos; }, 5s));
  waiting.clear();
  CHECK(ping_ms(fresh) < 1000);
}

TEST_CASE("connections: after a 200 MB SET and DEL the connection's memory comes back while it stays open",
          "[hostile][connections]") {
  Daemon d({kv()});
  d.start();
  const auto port = d.stream_port("kv");
  const pid_t pid = d.pid();
  const std::uint64_t before = rss_bytes(pid);
  RawConnection client(port);
  REQUIRE(client.send_all(RespClient::encode({"SET", "k", std::string(200 * kMiB, 'v')}), 60s));
  REQUIRE(client.read_exactly(5, 30s) == "+OK\r\n");
  const std::uint64_t holding = rss_bytes(pid);
  INFO("RSS: " << before / kMiB << " MiB before, " << holding / kMiB << " MiB with the value");
  if (!kSanitized) CHECK(holding >= before + 200 * kMiB);
  REQUIRE(client.send_all(RespClient::encode({"DEL", "k"})));
  REQUIRE(client.read_exactly(4) == ":1\r\n");
  const bool back = wait_until([&] { return rss_bytes(pid) < before + 20 * kMiB; }, 10s);
  INFO("RSS after DEL: " << rss_bytes(pid) / kMiB << " MiB");
  measured("kv: 200 MB SET then DEL on one open connection: RSS before / holding / after",
           std::to_string(before / kMiB) + " / " + std::to_string(holding / kMiB) + " / " +
               std::to_string(rss_bytes(pid) / kMiB) + " MiB");
  if (!kSanitized) CHECK(back);
  CHECK(ping_ms(client) < 1000);  // the same connection, still open
}

TEST_CASE("connections: unconsumed input reaching client_query_buffer_limit closes the connection, with one log line",
          "[hostile][connections]") {
  Daemon d({kv()}, "client_query_buffer_limit = \"64mb\"\n");
  d.start();
  const auto port = d.stream_port("kv");
  const pid_t pid = d.pid();
  const std::uint64_t before = rss_bytes(pid);
  // MSET of 200 pairs of 1 MB each, of which 100 are sent: no single bulk is
  // too large for kv, the command is (and never ends).
  RawConnection greedy(port);
  REQUIRE(greedy.send_all("*401\r\n$4\r\nMSET\r\n"));
  const std::string pair = "$1\r\nk\r\n$1048576\r\n" + std::string(kMiB, 'v') + "\r\n";
  const auto start = Clock::now();
  for (int i = 0; i < 100 && !greedy.closed() && Clock::now() - start < 20s; ++i) {
    if (!greedy.send_all(pair, 5s)) greedy.read_some(100ms);
  }
  CHECK(greedy.wait_closed(10s));
  const std::string line = "bytes received and not consumed, the limit (client_query_buffer_limit); closing it";
  CHECK(wait_until([&] { return occurrences(d.log(), line) == 1; }, 5s));
  CHECK_THAT(d.log(), Catch::Contains(": 67108864 " + line));
  if (!kSanitized) CHECK(peak_rss_bytes(pid) - before <= 64 * kMiB + 32 * kMiB);
  RawConnection ordinary(port);
  CHECK(ping_ms(ordinary) < 1000);
}

TEST_CASE("connections: with the default limits a 300 MiB SET succeeds (the input limit and kv's max_bulk_bytes agree)",
          "[hostile][connections]") {
  Daemon d({kv()});
  d.start();
  const auto port = d.stream_port("kv");
  RawConnection client(port);
  REQUIRE(client.send_all(RespClient::encode({"SET", "k", std::string(300 * kMiB, 'v')}), 60s));
  CHECK(client.read_exactly(5, 30s) == "+OK\r\n");
  REQUIRE(client.send_all(RespClient::encode({"STRLEN", "k"})));
  CHECK(client.read_exactly(12) == ":314572800\r\n");
}
