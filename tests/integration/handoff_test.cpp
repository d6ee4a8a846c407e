// A module moving between two real moltd (docs/handoff.md), each in a network
// namespace the test creates (its clients in a third), or, where namespaces
// cannot be made, on two ports of the loopback: kv's state goes with it, the source's listener sends clients
// on with -MOVED (redis-cli -c follows), a writer loses no acknowledged
// write through a move and back, ownership is recorded on both sides and
// survives restarts, and each failure (wrong secret, missing image, target
// killed during the copy, source killed after the flip) leaves exactly one
// moltd serving the module.
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <thread>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "netns.hpp"
#include "resp_client.hpp"

using namespace molt::test;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

/// A secret file of mode 0600.
fs::path secret_file(const fs::path& path, const std::string& secret) {
  std::ofstream(path) << secret << '\n';
  fs::permissions(path, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
  return path;
}

/// Where the two moltd and their clients are: three namespaces (a, b, and c
/// for the clients), or the loopback.
struct Network {
  std::optional<NetnsTopology> ns;

  explicit Network(bool namespaces) {
    if (!namespaces) return;
    std::string why;
    if (auto made = NetnsTopology::create(why)) ns.emplace(std::move(*made));
    if (!ns) WARN("network namespaces cannot be made here (" << why << "): on the loopback instead");
  }
  [[nodiscard]] std::string ip(char which) const { return ns ? ns->ip(which) : "127.0.0.1"; }
  [[nodiscard]] std::vector<std::string> prefix(char which) const { return ns ? ns->exec(which) : std::vector<std::string>{}; }
  /// A RESP client in the clients' namespace.
  [[nodiscard]] std::unique_ptr<RespClient> connect(const std::string& host, std::uint16_t port) const {
    if (!ns) return std::make_unique<RespClient>(host, port);
    return ns->in('c', [&] { return std::make_unique<RespClient>(host, port); });
  }
  /// A program run among the clients.
  [[nodiscard]] ProcessResult run(const std::vector<std::string>& argv) const {
    auto full = prefix('c');
    full.insert(full.end(), argv.begin(), argv.end());
    return run_process(full);
  }
  void enter_clients() const {
    if (ns) ns->enter('c');
  }
};

/// Two moltd: A runs kv v1 (and may receive it back), B only accepts it.
struct Pair {
  const Network& net;
  std::uint16_t a_peer = free_port(), b_peer = free_port(), a_kv = free_port(), b_kv = free_port();
  TempDir secrets;
  Daemon a, b;

  explicit Pair(const Network& network, const std::string& b_secret = "the same secret for both hosts",
                bool b_has_image = true, const std::string& a_host = "handoff_drain_seconds = 1\n",
                const std::string& b_host = "")
      : net(network),
        a({{"kv", plugin_path("kv", 1), 1,
            "listen = \"" + net.ip('a') + ":" + std::to_string(a_kv) + "\"\naccept_handoff = true\n"}},
          host_lines(net.ip('a'), a_peer, secret_file(secrets.path() / "a.secret", "the same secret for both hosts")) +
              a_host),
        b({{"kv", {}, 0, "listen = \"" + net.ip('b') + ":" + std::to_string(b_kv) + "\"\naccept_handoff = true\n"}},
          host_lines(net.ip('b'), b_peer, secret_file(secrets.path() / "b.secret", b_secret)) +
              "handoff_drain_seconds = 1\n" + b_host) {
    if (b_has_image) b.install(plugin_path("kv", 1), "kv-1.so");
    // HTTP on each host's own address, where the other can forward to it.
    a.run_through(net.prefix('a'), {"--http", net.ip('a') + ":0"});
    b.run_through(net.prefix('b'), {"--http", net.ip('b') + ":0"});
  }

  static std::string host_lines(const std::string& ip, std::uint16_t peer, const fs::path& secret) {
    return "peer = \"" + ip + ":" + std::to_string(peer) + "\"\npeer_secret_file = \"" + secret.string() +
           "\"\nprobation_seconds = 0\n";
  }

  [[nodiscard]] std::string a_address() const { return net.ip('a') + ":" + std::to_string(a_peer); }
  [[nodiscard]] std::string b_address() const { return net.ip('b') + ":" + std::to_string(b_peer); }
  [[nodiscard]] std::string a_kv_address() const { return net.ip('a') + ":" + std::to_string(a_kv); }
  [[nodiscard]] std::string b_kv_address() const { return net.ip('b') + ":" + std::to_string(b_kv); }
  [[nodiscard]] std::unique_ptr<RespClient> on_a() const { return net.connect(net.ip('a'), a_kv); }
  [[nodiscard]] std::unique_ptr<RespClient> on_b() const { return net.connect(net.ip('b'), b_kv); }
  /// Whether a new connection to A's (or B's) kv listener is refused: nobody listens.
  [[nodiscard]] bool refused(char which) const {
    try {
      (void)net.connect(net.ip(which), which == 'a' ? a_kv : b_kv);
      return false;
    } catch (const std::exception&) {
      return true;
    }
  }
};

void load_keys(RespClient& client, int n) {
  for (int i = 0; i < n; ++i) client.send({"SET", "k" + std::to_string(i), "v" + std::to_string(i)});
  for (int i = 0; i < n; ++i) REQUIRE(client.read_reply() == std::optional<std::string>("+OK\r\n"));
}

std::string bulk(const std::string& value) { return "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n"; }

Json handoff(const Daemon& from, const std::vector<std::string>& where) {
  std::vector<std::string> args{"handoff", "kv"};
  args.insert(args.end(), where.begin(), where.end());
  args.push_back("--json");
  const auto run = from.ctl(args);
  INFO(run.out << run.err);
  return Json::parse(run.out);
}

}  // namespace

TEST_CASE("kv moves to another moltd with its state, the source sends its clients there with -MOVED, and it moves back",
          "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net);
  p.a.start();
  p.b.start();
  CHECK(p.b.status()["not_started"][0]["reason"] == "awaits a handoff (accept_handoff = true, no version here)");
  load_keys(*p.on_a(), 2000);
  auto before_connection = p.on_a();
  RespClient& before = *before_connection;
  REQUIRE(before.call({"GET", "k7"}) == bulk("v7"));
  REQUIRE(before.call({"HSET", "h", "f", "1", "g", "2"}) == ":2\r\n");  // more than strings
  REQUIRE(before.call({"SADD", "s", "x", "y"}) == ":2\r\n");
  const std::string digest = before.call({"DEBUG", "DIGEST"});
  REQUIRE(digest.size() == 43);

  const Json moved = handoff(p.a, {"--to", p.b_address()});
  REQUIRE(moved["ok"] == true);
  CHECK(moved["handoff"]["epoch"] == 1);
  CHECK(moved["handoff"]["precopy"] == true);
  CHECK(moved["handoff"]["redirect"] == Json::array({p.b_kv_address()}));

  // B serves every key; A's listener answers a new client -MOVED and closes.
  auto on_b_connection = p.on_b();
  RespClient& on_b = *on_b_connection;
  CHECK(on_b.call({"DBSIZE"}) == ":2002\r\n");
  CHECK(on_b.call({"DEBUG", "DIGEST"}) == digest);  // the whole state, as the source had it at the flip
  CHECK(on_b.call({"GET", "k1999"}) == bulk("v1999"));
  {
    auto to_a = p.on_a();
    CHECK(to_a->read_reply() == "-MOVED 0 " + p.b_kv_address() + "\r\n");
    CHECK(to_a->closed_by_peer());
  }
  // The connection A had goes on, forwarded to B, for the drain (1 s here); then it closes while idle.
  CHECK(before.call({"GET", "k7"}) == bulk("v7"));
  CHECK(before.call({"SET", "through-a", "1"}) == "+OK\r\n");
  CHECK(on_b.call({"GET", "through-a"}) == bulk("1"));
  CHECK(wait_until([&] { return before.closed_by_peer(); }));
  // HTTP requests for it are forwarded to B.
  CHECK(Json::parse(p.a.curl({"/kv"}).out)["keys"] == 2003);
  // redis-cli -c follows -MOVED.
  const auto followed = net.run({"redis-cli", "-c", "-h", net.ip('a'), "-p", std::to_string(p.a_kv), "GET", "k42"});
  CHECK(followed.out == "v42\n");

  // Each side says where it is, and A no longer counts it among its modules.
  const Json a_status = p.a.status();
  CHECK(a_status["modules"].empty());
  CHECK(a_status["handoff"]["modules"]["kv"]["ownership"] == "moved");
  CHECK(a_status["handoff"]["modules"]["kv"]["text"] == "moved to " + p.b_address() + " at epoch 1");
  CHECK(a_status["not_started"][0]["reason"] == "moved to " + p.b_address() + " at epoch 1");
  const Json b_status = p.b.status();
  REQUIRE(b_status["modules"].size() == 1);
  CHECK(b_status["modules"][0]["name"] == "kv");
  CHECK(b_status["handoff"]["modules"]["kv"]["text"] == "received from " + p.a_address() + " at epoch 1");
  CHECK(p.b.ctl({"status"}).out.find("handoff: kv: received from " + p.a_address() + " at epoch 1") != std::string::npos);
  // A second handoff from A is refused with where it is.
  const auto again = p.a.ctl({"handoff", "kv", "--to", p.b_address()});
  CHECK(again.exit_code == 1);
  CHECK(again.err == "moltctl: kv: handoff: does not run here: moved to " + p.b_address() + " at epoch 1\n");

  // A write on B, then back home: A's listener serves kv again, with it.
  CHECK(on_b.call({"SET", "written-on", "b"}) == "+OK\r\n");
  const Json back = handoff(p.b, {"--back"});
  REQUIRE(back["ok"] == true);
  CHECK(back["handoff"]["epoch"] == 2);
  auto home = p.on_a();
  CHECK(home->call({"GET", "written-on"}) == bulk("b"));
  CHECK(home->call({"DBSIZE"}) == ":2004\r\n");
  CHECK(p.a.status()["handoff"]["modules"]["kv"]["text"] == "received from " + p.b_address() + " at epoch 2");

  // After restarts, each serves what its record says: A kv from its snapshot, B nothing.
  REQUIRE(wait_until([&] { return p.a.snapshots_written(); }));
  CHECK(p.a.stop() == 0);
  CHECK(p.b.stop() == 0);
  p.a.start();
  p.b.start();
  CHECK(p.on_a()->call({"GET", "written-on"}) == bulk("b"));
  {
    auto to_b = p.on_b();  // B's listener sends clients home to A
    CHECK(to_b->read_reply() == "-MOVED 0 " + p.a_kv_address() + "\r\n");
  }
  CHECK(p.b.status()["not_started"][0]["reason"] == "moved to " + p.a_address() + " at epoch 2");
}

TEST_CASE("a writer loses no acknowledged write and sees none reordered through a handoff and back", "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net);
  p.a.start();
  p.b.start();
  // One writer, sequence-tagged: SET n:<i> <i> and SET last <i>, each acknowledged before the next.
  // A closed connection, or -MOVED, sends it to the address it is given (as a cluster client does).
  std::atomic<bool> stop{false};
  std::atomic<int> acknowledged{0};
  std::atomic<int> redirects{0};
  std::string problem;
  std::thread writer([&] {
    net.enter_clients();
    std::string host = net.ip('a');
    std::uint16_t port = p.a_kv;
    std::unique_ptr<RespClient> client;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (int i = 1; !stop && std::chrono::steady_clock::now() < deadline && i <= 200000;) {
      try {
        if (!client) client = std::make_unique<RespClient>(host, port);
        const std::string n = std::to_string(i);
        const std::string reply = client->call({"MSET", "n:" + n, n, "last", n});
        if (reply == "+OK\r\n") {
          acknowledged = i++;
          continue;
        }
        client.reset();
        if (reply.starts_with("-MOVED ")) {
          ++redirects;
          const std::string where = reply.substr(9, reply.size() - 11);  // "-MOVED 0 HOST:PORT\r\n"
          host = where.substr(0, where.rfind(':'));
          port = static_cast<std::uint16_t>(std::stoi(where.substr(where.rfind(':') + 1)));
        } else if (!reply.empty()) {
          problem = "unexpected reply " + reply;
          return;
        }
      } catch (const std::exception&) {
        client.reset();  // refused while the listener moves: try again
      }
    }
  });
  REQUIRE(wait_until([&] { return acknowledged > 200; }));
  const Json there = handoff(p.a, {"--to", p.b_address()});
  REQUIRE(there["ok"] == true);
  const int at_flip = acknowledged;
  // Forwarded by A for the drain, then closed when idle: -MOVED sends it to B.
  REQUIRE(wait_until([&] { return acknowledged > at_flip + 200 && redirects >= 1; }));
  const Json back = handoff(p.b, {"--back"});
  REQUIRE(back["ok"] == true);
  const int at_return = acknowledged;
  // B forwards it to A for the drain, then closes it between two requests: -MOVED sends it home.
  REQUIRE(wait_until([&] { return acknowledged > at_return + 200 && redirects >= 2; }));
  stop = true;
  writer.join();
  REQUIRE(problem.empty());
  CHECK(redirects >= 2);  // to B, then back to A

  // Every acknowledged write is on A, and the last one is the last written.
  auto check_connection = p.on_a();
  RespClient& check = *check_connection;
  const int last = acknowledged;
  const std::string stored = check.call({"GET", "last"});
  CHECK(stored == bulk(std::to_string(last)));
  int missing = 0;
  for (int first = 1; first <= last; first += 1000) {  // pipelined, 1000 at a time
    const int end = std::min(last, first + 999);
    for (int i = first; i <= end; ++i) check.send({"GET", "n:" + std::to_string(i)});
    for (int i = first; i <= end; ++i)
      if (check.read_reply() != bulk(std::to_string(i))) ++missing;
  }
  CHECK(missing == 0);
}

TEST_CASE("a client's per-connection state goes with it: the target adopts its forwarded connection under its id",
          "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net, "the same secret for both hosts", true, "handoff_drain_seconds = 30\n");
  p.a.start();
  p.b.start();
  auto named = p.on_a();
  REQUIRE(named->call({"CLIENT", "SETNAME", "writer"}) == "+OK\r\n");
  const std::string id = named->call({"CLIENT", "ID"});
  auto other = p.on_a();
  REQUIRE(other->call({"SET", "k", "v"}) == "+OK\r\n");
  CHECK(Json::parse(p.a.curl({"/kv"}).out)["clients"] == 2);

  const Json moved = handoff(p.a, {"--to", p.b_address()});
  REQUIRE(moved["ok"] == true);
  CHECK(moved["handoff"]["clients"] == 2);
  // The same connection, forwarded by A: B knows it by the same id and name.
  CHECK(named->call({"CLIENT", "GETNAME"}) == bulk("writer"));
  CHECK(named->call({"CLIENT", "ID"}) == id);
  CHECK(other->call({"CLIENT", "GETNAME"}) == "$-1\r\n");
  // A client of B's own has an id and a state of its own.
  auto fresh = p.on_b();
  CHECK(fresh->call({"CLIENT", "GETNAME"}) == "$-1\r\n");
  CHECK(fresh->call({"CLIENT", "ID"}) != id);
  CHECK(Json::parse(p.b.curl({"/kv"}).out)["clients"] == 3);  // the two from A, adopted, and its own
  CHECK(p.b.log().find("not adopted") == std::string::npos);
  CHECK(p.a.log().find("not adopted") == std::string::npos);

  // And home again: B forwards the clients it has, A adopts them, names and all.
  REQUIRE(handoff(p.b, {"--back"})["ok"] == true);
  CHECK(named->call({"CLIENT", "GETNAME"}) == bulk("writer"));
  CHECK(named->call({"CLIENT", "ID"}) == id);
  REQUIRE(fresh->call({"CLIENT", "SETNAME", "from-b"}) == "+OK\r\n");
  CHECK(fresh->call({"CLIENT", "GETNAME"}) == bulk("from-b"));
  CHECK(Json::parse(p.a.curl({"/kv"}).out)["clients"] == 3);
  CHECK(p.a.log().find("not adopted") == std::string::npos);
}

TEST_CASE("with handoff_new_connections = forward, a new client of the source is served through it during the drain",
          "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net, "the same secret for both hosts", true, "handoff_new_connections = \"forward\"\nhandoff_drain_seconds = 30\n");
  p.a.start();
  p.b.start();
  load_keys(*p.on_a(), 100);
  REQUIRE(handoff(p.a, {"--to", p.b_address()})["ok"] == true);
  auto late = p.on_a();  // a new connection to A, after the move
  CHECK(late->call({"GET", "k99"}) == bulk("v99"));
  CHECK(late->call({"SET", "late", "yes"}) == "+OK\r\n");
  CHECK(p.on_b()->call({"GET", "late"}) == bulk("yes"));
  const auto plain = net.run({"redis-cli", "-h", net.ip('a'), "-p", std::to_string(p.a_kv), "GET", "late"});  // not a cluster client
  CHECK(plain.out == "yes\n");
}

TEST_CASE("with handoff_http = redirect, the source answers a moved module's HTTP requests with 307 to the target",
          "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net, "the same secret for both hosts", true, "handoff_http = \"redirect\"\nhandoff_drain_seconds = 1\n");
  p.a.start();
  p.b.start();
  load_keys(*p.on_a(), 10);
  const auto before = net.run({"curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "http://" + p.a.http() + "/kv"});
  CHECK(before.out == "200");  // served here: no redirect before the move
  REQUIRE(handoff(p.a, {"--to", p.b_address()})["ok"] == true);
  // The path and the query go along; the body says why.
  const auto moved = net.run({"curl", "-sS", "-w", "\n%{http_code} %{redirect_url}", "http://" + p.a.http() + "/kv?x=1"});
  INFO(moved.out << moved.err);
  CHECK(moved.out == "{\"error\":\"module 'kv' moved to " + p.b.http() + "\"}\n\n307 http://" + p.b.http() + "/kv?x=1");
  // curl -L follows it to B, with the method and body (307 keeps both).
  const auto followed = net.run({"curl", "-sS", "-L", "-X", "POST", "-d", "body", "http://" + p.a.http() + "/kv"});
  INFO(followed.out << followed.err);
  CHECK(Json::parse(followed.out)["keys"] == 10);
  // The host's own resources are not redirected.
  CHECK(p.a.http_code("GET", "/-/status") == "200");
}

TEST_CASE("moltctl drain hands every module to the peer, and /-/ready turns false with why", "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net);
  p.a.start();
  p.b.start();
  load_keys(*p.on_a(), 100);
  CHECK(p.a.http_code("GET", "/-/ready") == "200");
  const auto drained = p.a.ctl({"drain", "--to", p.b_address()});
  INFO(drained.out << drained.err);
  CHECK(drained.exit_code == 0);
  CHECK(drained.out == "kv moved to " + p.b_address() + " at epoch 1\n");
  CHECK(p.a.http_code("GET", "/-/ready") == "503");
  CHECK(Json::parse(p.a.curl({"/-/ready"}).out)["error"] == "drained: its modules were handed to " + p.b_address());
  CHECK(p.b.http_code("GET", "/-/ready") == "200");
  CHECK(p.on_b()->call({"DBSIZE"}) == ":100\r\n");
  // Nothing left: a second drain has nothing to do, and says so.
  const auto again = p.a.ctl({"drain", "--to", p.b_address()});
  CHECK(again.exit_code == 0);
  CHECK(again.out == "no module runs here: nothing to drain\n");
}

TEST_CASE("a peer that does not know the secret is refused both ways, and the module serves on", "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net, "another secret, not the same one");
  p.a.start();
  p.b.start();
  load_keys(*p.on_a(), 10);
  const auto run = p.a.ctl({"handoff", "kv", "--to", p.b_address()});
  CHECK(run.exit_code == 1);
  CHECK(run.err == "moltctl: kv: handoff: connect: the peer does not know the secret (host.peer_secret_file differs) (" +
                       p.b_address() + ")\n");
  CHECK(p.on_a()->call({"GET", "k3"}) == bulk("v3"));
  CHECK(p.a.status()["handoff"]["modules"].empty());
  CHECK(p.refused('b'));
  // The target hears why from the source, and logs it.
  REQUIRE(wait_until([&] {
    return p.b.log().find(": proof: refused: your proof is wrong: the secrets differ (host.peer_secret_file)") !=
           std::string::npos;
  }));

  // A secret file others may read is refused at start, with its mode.
  const fs::path loose = p.a.dir() / "loose.secret";
  std::ofstream(loose) << "a secret of enough bytes\n";
  fs::permissions(loose, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read, fs::perm_options::replace);
  {
    std::ofstream config(p.a.dir() / "loose.toml");
    config << "[host]\nrun_dir = \"" << (p.a.dir() / "run2").string() << "\"\npeer_secret_file = \"" << loose.string()
           << "\"\n[modules.kv]\naccept_handoff = true\n";
  }
  const auto started = run_process({program("moltd").string(), "--config", (p.a.dir() / "loose.toml").string()});
  CHECK(started.exit_code == 2);
  CHECK(started.err.find("host.peer_secret_file: " + loose.string() +
                         ": mode 0640: group or others may read or write it; chmod 600 it") != std::string::npos);
}

TEST_CASE("a target without the module's image refuses the handoff, naming the sha256 and what it has", "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net, "the same secret for both hosts", false);
  p.b.install(plugin_path("kv", 2), "kv-2.so");
  p.a.start();
  p.b.start();
  load_keys(*p.on_a(), 10);
  const auto run = p.a.ctl({"handoff", "kv", "--to", p.b_address()});
  CHECK(run.exit_code == 1);
  CHECK(run.err.find("moltctl: kv: handoff: offer: refused: kv: no image with sha256 ") == 0);
  CHECK(run.err.find("(it has kv-2.so ") != std::string::npos);
  CHECK(run.err.find(": copy the source's image there first (" + p.b_address() + ")") != std::string::npos);
  CHECK(p.on_a()->call({"GET", "k3"}) == bulk("v3"));
  CHECK(p.a.status()["modules"].size() == 1);
}

TEST_CASE("the target killed during the pre-copy leaves the source owning and serving the module", "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net);
  p.a.start();
  p.b.start({"MOLT_FAULT=handoff.target.part:1"});
  load_keys(*p.on_a(), 2000);
  auto client_connection = p.on_a();
  RespClient& client = *client_connection;
  const auto run = p.a.ctl({"handoff", "kv", "--to", p.b_address()});
  CHECK(run.exit_code == 1);
  CHECK(run.err.find("moltctl: kv: handoff: ") == 0);
  CHECK(run.err.find("(" + p.b_address() + ")") != std::string::npos);
  REQUIRE(p.b.process().wait(std::chrono::seconds(10)));
  // The same connection goes on; the Moving of its freeze, if it got there, is undone.
  CHECK(client.call({"GET", "k1999"}) == bulk("v1999"));
  CHECK(client.call({"DBSIZE"}) == ":2000\r\n");
  CHECK(p.a.status()["handoff"]["modules"].empty());
  // B, restarted, owns nothing; a second handoff then works.
  p.b.start();
  CHECK(handoff(p.a, {"--to", p.b_address()})["ok"] == true);
  CHECK(p.on_b()->call({"DBSIZE"}) == ":2000\r\n");
}

TEST_CASE("the source killed after the flip: the target owns and serves, and the restarted source does not", "[handoff]") {
  const Network net(GENERATE(false, true));
  Pair p(net, "the same secret for both hosts", true, "handoff_drain_seconds = 1\n", "handoff_timeout_ms = 2000\n");
  p.a.start({"MOLT_FAULT=handoff.source.flip"});
  p.b.start();
  load_keys(*p.on_a(), 2000);
  auto named = p.on_a();  // a client whose state moves, and whom A will never forward
  REQUIRE(named->call({"CLIENT", "SETNAME", "orphan"}) == "+OK\r\n");
  (void)p.a.ctl({"handoff", "kv", "--to", p.b_address()});  // moltd dies under it
  REQUIRE(p.a.process().wait(std::chrono::seconds(10)));
  // A recorded Moving before its freeze; B recorded Owned before it said so.
  CHECK(p.b.status()["handoff"]["modules"]["kv"]["text"] == "received from " + p.a_address() + " at epoch 1");
  CHECK(p.on_b()->call({"DBSIZE"}) == ":2000\r\n");
  // B expected that client for A's drain (1 s) and its own step deadline (2 s): then its state goes.
  CHECK(wait_until([&] { return Json::parse(p.b.curl({"/kv"}).out)["clients"] == 0; }, std::chrono::seconds(15)));
  CHECK(p.b.log().find("1 client(s) its source had were not forwarded here by the end of the drain") != std::string::npos);
  // A restarts, asks B who owns kv, learns it moved, and does not serve it.
  p.a.start();
  CHECK(p.a.status()["not_started"][0]["reason"] == "moved to " + p.b_address() + " at epoch 1");
  CHECK(p.a.status()["handoff"]["modules"]["kv"]["ownership"] == "moved");
  // Its listener sends new clients to B (it learned where from B).
  {
    auto to_a = p.on_a();
    CHECK(to_a->read_reply() == "-MOVED 0 " + p.b_kv_address() + "\r\n");
  }
  CHECK(net.run({"redis-cli", "-c", "-h", net.ip('a'), "-p", std::to_string(p.a_kv), "GET", "k5"}).out == "v5\n");
  CHECK(p.on_b()->call({"GET", "k5"}) == bulk("v5"));
}
