// kv through the real moltd, with real Redis clients: its replies are
// compared byte for byte with a real redis-server's, data loaded with
// redis-cli survives upgrades and downgrades, a connection survives 100,
// and a client's writes during a pre-copied upgrade are all kept.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "resp_client.hpp"

using namespace molt::test;
using Json = nlohmann::json;
namespace fs = std::filesystem;
using Command = std::vector<std::string>;

namespace {

/// A real redis-server on a free port, without persistence.
class RedisServer {
 public:
  RedisServer() : port_(free_port()) {
    process_ = std::make_unique<Process>(
        std::vector<std::string>{"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", dir_.path().string()},
        dir_.path() / "redis.out");
    REQUIRE(wait_until([&] {
      try {
        return RespClient(port_).call({"PING"}) == "+PONG\r\n";
      } catch (const std::exception&) {
        return false;
      }
    }));
  }
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  TempDir dir_;
  std::uint16_t port_;
  std::unique_ptr<Process> process_;
};

/// moltd serving kv version `version` on a free port.
Daemon kv_daemon(unsigned version, const std::string& config = "") {
  return Daemon({{"kv", plugin_path("kv", version), version,
                  "listen = \"127.0.0.1:0\"\n[modules.kv.config]\n" + config}});
}

/// Sends each command to both servers on one connection each, and returns
/// the commands whose replies differ, with both replies.
std::vector<std::string> differences(std::uint16_t redis_port, std::uint16_t kv_port, const std::vector<Command>& script) {
  RespClient redis(redis_port), kv(kv_port);
  std::vector<std::string> found;
  for (const auto& command : script) {
    const std::string expected = redis.call(command);
    const std::string got = kv.call(command);
    if (expected != got) {
      std::string line;
      for (const auto& arg : command) line += arg + ' ';
      found.push_back(line + "=> redis " + Json(expected).dump() + " kv " + Json(got).dump());
    }
  }
  return found;
}

/// The elements of a RESP array of bulk strings, sorted (for replies whose
/// order Redis leaves unspecified).
std::vector<std::string> sorted_elements(const std::string& reply) {
  std::vector<std::string> items;
  std::istringstream in(reply);
  std::string line;
  std::getline(in, line);  // *N
  while (std::getline(in, line)) {
    if (line.starts_with('$')) {
      std::getline(in, line);
      line.pop_back();  // '\r'
      items.push_back(line);
    }
  }
  std::sort(items.begin(), items.end());
  return items;
}

const std::vector<Command> kCoreScript = {
    {"PING"}, {"PING", "hello"}, {"PING", "a", "b"}, {"ECHO", "hi"}, {"ECHO"}, {"ping"},
    {"SET", "k", "v"}, {"GET", "k"}, {"GET", "missing"}, {"SET", "k", "v2", "XX"}, {"SET", "new", "v", "XX"},
    {"SET", "k", "v3", "NX"}, {"SET", "k", "v", "NX", "XX"}, {"SET", "k"}, {"SET", "k", "v", "BOGUS"},
    {"SET", "k", "v4", "GET"}, {"SET", "fresh", "v", "GET"}, {"get", "k"}, {"GET", "k", "extra"},
    {"DEL", "k", "missing", "k"}, {"DEL"}, {"EXISTS", "fresh", "nope", "fresh"},
    {"SET", "n", "10"}, {"INCR", "n"}, {"DECR", "n"}, {"INCRBY", "n", "5"}, {"INCRBY", "n", "-20"},
    {"INCRBY", "n", "x"}, {"INCRBY", "n", "01"}, {"INCRBY", "n", " 1"}, {"INCR", "fresh"}, {"INCR", "counter"},
    {"SET", "big", "9223372036854775807"}, {"INCR", "big"}, {"SET", "small", "-9223372036854775808"},
    {"DECR", "small"}, {"INCRBY", "n", "9223372036854775808"},
    {"MSET", "a", "1", "b", "2"}, {"MGET", "a", "b", "missing"}, {"MSET", "a"}, {"MSET", "a", "1", "b"},
    {"APPEND", "a", "xyz"}, {"APPEND", "newkey", "abc"}, {"STRLEN", "a"}, {"STRLEN", "missing"},
    {"LPUSH", "l", "a", "b"}, {"RPUSH", "l", "c"}, {"LRANGE", "l", "0", "-1"}, {"LRANGE", "l", "1", "1"},
    {"LRANGE", "l", "-100", "100"}, {"LRANGE", "l", "5", "10"}, {"LRANGE", "l", "2", "1"}, {"LRANGE", "l", "x", "1"},
    {"LLEN", "l"}, {"LPOP", "l"}, {"RPOP", "l"}, {"RPUSH", "l", "d", "e", "f"}, {"LPOP", "l", "2"},
    {"RPOP", "l", "0"}, {"LPOP", "l", "-1"}, {"LPOP", "missing"}, {"LPOP", "missing", "2"}, {"LLEN", "missing"},
    {"LPOP", "l", "10"}, {"EXISTS", "l"}, {"LPOP", "l", "1", "2"},
    {"GET", "newkey"}, {"LPUSH", "newkey", "x"}, {"RPUSH", "lst", "x"}, {"GET", "lst"}, {"INCR", "lst"},
    {"APPEND", "lst", "x"}, {"STRLEN", "lst"}, {"SADD", "lst", "x"}, {"HSET", "lst", "f", "v"}, {"SET", "lst", "now a string"},
    {"GET", "lst"},
    {"SADD", "s", "a"}, {"SADD", "s", "a"}, {"SCARD", "s"}, {"SMEMBERS", "s"}, {"SREM", "s", "a", "zz"},
    {"SCARD", "s"}, {"EXISTS", "s"}, {"SMEMBERS", "nope"}, {"SREM", "nope", "a"}, {"SCARD", "nope"},
    {"HSET", "h", "f", "v"}, {"HSET", "h", "f", "w", "g", "x"}, {"HGET", "h", "f"}, {"HGET", "h", "nope"},
    {"HDEL", "h", "g", "nope"}, {"HGETALL", "h"}, {"HSET", "h", "f"}, {"HGETALL", "nope"}, {"HDEL", "h", "f"},
    {"EXISTS", "h"}, {"HGET", "nope", "f"},
    {"DBSIZE"}, {"SELECT", "0"}, {"SELECT", "16"}, {"SELECT", "x"}, {"DBSIZE", "x"},
    {"CLIENT", "SETNAME", "myname"}, {"CLIENT", "GETNAME"}, {"CLIENT", "SETNAME", "bad name"},
    {"CLIENT", "BOGUS"}, {"CLIENT", "SETNAME"},
    {"CONFIG", "GET", "save"}, {"CONFIG", "GET", "appendonly"}, {"CONFIG", "GET", "nonexistent"},
    {"HELLO", "4"}, {"HELLO", "x"},
    {"NOSUCHCOMMAND", "a", "b"}, {"NOSUCHCOMMAND"},
    {"FLUSHDB", "bogus"}, {"FLUSHDB"}, {"DBSIZE"}, {"SET", "x", "1"}, {"FLUSHALL", "ASYNC"}, {"DBSIZE"},
};

const std::vector<Command> kExpiryScript = {
    {"SET", "k", "v", "EX", "100"}, {"TTL", "k"}, {"EXPIRE", "k", "50"}, {"TTL", "k"}, {"PERSIST", "k"},
    {"PERSIST", "k"}, {"TTL", "k"}, {"TTL", "missing"}, {"PTTL", "missing"}, {"PTTL", "k"},
    {"EXPIRE", "missing", "10"}, {"EXPIRE", "k", "x"}, {"SET", "k", "v", "EX", "0"}, {"SET", "k", "v", "EX", "x"},
    {"SET", "k", "v", "PX", "-5"}, {"SET", "k", "v", "EX", "10", "KEEPTTL"}, {"SET", "k", "v", "EX", "10", "PX", "5"},
    {"EXPIRE", "k", "10", "NX"}, {"EXPIRE", "k", "10", "NX"}, {"EXPIRE", "k", "20", "XX"}, {"EXPIRE", "k", "5", "GT"},
    {"EXPIRE", "k", "5", "LT"}, {"TTL", "k"}, {"EXPIRE", "k", "5", "NX", "XX"}, {"EXPIRE", "k", "5", "GT", "LT"},
    {"EXPIRE", "k", "5", "BOGUS"}, {"SET", "k", "v2", "KEEPTTL"}, {"TTL", "k"}, {"SET", "k", "v3"}, {"TTL", "k"},
    {"PEXPIRE", "k", "100000"}, {"TTL", "k"}, {"EXPIREAT", "k", "4102444800"}, {"PEXPIREAT", "k", "4102444800000"},
    {"TTL", "missing"}, {"EXPIRE", "k", "-1"}, {"GET", "k"}, {"EXISTS", "k"},
    {"RPUSH", "l", "a"}, {"EXPIRE", "l", "100"}, {"TTL", "l"}, {"INCR", "c"}, {"EXPIRE", "c", "100"},
    {"INCR", "c"}, {"TTL", "c"}, {"APPEND", "c", "0"}, {"TTL", "c"}, {"DEL", "c"}, {"TTL", "c"},
    {"SET", "gone", "v", "PX", "1"},
};

enum class Then { Quit, Nothing };

/// Everything a server answers to `raw` (then QUIT) on a fresh connection,
/// until it closes: after a protocol error the QUIT is never read.
std::string transcript(std::uint16_t port, const std::string& raw, Then then) {
  RespClient client(port);
  client.send_raw(then == Then::Quit ? raw + RespClient::encode({"QUIT"}) : raw);
  std::string all;
  for (int replies = 0; replies < 1000; ++replies) {
    auto reply = client.read_reply();
    if (!reply) break;
    all += *reply;
  }
  return all;
}

/// Raw input that Redis 7 accepts or refuses in its own ways: multibulk and
/// bulk lengths at their boundaries, header lines of 64 KiB, inline commands
/// as sdssplitargs splits them, and client bytes quoted in error lines.
std::vector<std::string> protocol_cases() {
  const auto command = [](const std::vector<std::string>& args) { return RespClient::encode(args); };
  const std::string ping = command({"PING"});
  return {
      "*9223372036854775808\r\n" + ping, "*9999999999999999999\r\n" + ping, "*-9223372036854775808\r\n" + ping,
      "*2147483648\r\n" + ping, "*01\r\n" + ping, "*+1\r\n" + ping, "*-0\r\n" + ping, "*\r\n" + ping,
      "*1 \r\n" + ping, "*-1\r\n" + ping, "*0\r\n" + ping, "*-9223372036854775809\r\n" + ping,
      "*1\r\n$-1\r\n", "*1\r\n$+4\r\nPING\r\n", "*1\r\n$04\r\nPING\r\n", "*1\r\n$\r\nPING\r\n",
      "*1\r\n$536870913\r\n", "*1\r\n$9223372036854775808\r\n", "*1\r\n:4\r\nPING\r\n", "*1\r\n\r\nxx",
      "*1\r\n\nab\r\n", "*1\rX$4\rXPINGab" + ping, "*1\r\n$0\r\n\r\n",
      std::string(65536, 'a') + "\n", "*" + std::string(65535, '1') + "\r\n",
      "PING \"a\\x41\\n\\r\\t\\b\\a\\\\\\\"z\"\r\n", "ECHO 'a\\'b\\n'\r\n", "ECHO \"\"\r\n", "\"\" a\r\n",
      "ECHO \"a\"b\r\n" + ping, "ECHO 'a'b\r\n", "ECHO \"abc\r\n", "ECHO 'abc\r\n", "ECHO a\"b\"\r\n",
      "ECHO \"a\"\vb\r\n", "ECHO a\vb\r\n", "\v\fECHO a\r\n", "ECHO \"\\xZZ\" \"\\x4\" \"\\q\"\r\n", "ECHO \"a\\\r\n",
      "ECHO a\r\r\n", "ECHO a\rb\r\n", "ECHO \xff\xfe\r\n", "\r\n\nPING\n",
      command({"EXPIRE", "r", "100", "a\r\n+OK"}) + ping, command({"EXPIRE", "r", "100", "a\r\n"}) + ping,
      command({"EXPIRE", "r", "x", "BOGUS"}), command({"PEXPIRE", "r", "100", std::string("a\0b\r\n", 5)}),
      command({"HELLO", "2", "a\r\n+OK"}) + ping, command({"HELLO", "2", std::string("a\0b", 3)}),
      command({"CLIENT", "a\r\n+OK"}) + ping, command({"CLIENT", std::string(200, 'x')}),
      command({"CONFIG", "a\r\n+OK"}) + ping, command({"a\r\n+OK", "b\r\nc"}) + ping,
      command({std::string("a\0b", 3), std::string("c\0d", 3), "e"}), command({"\r\nx"}),
      command({"nocmd", std::string(100, 'a'), std::string(100, 'b'), "c"}), command({"nocmd", "", "", ""}),
      "NOCMD \"a\\r\\n+OK\"\r\n" + ping,
  };
}

/// Lines that do not end within 64 KiB, nor in the bytes after (sent
/// alone: a QUIT after them would end them in the same read, which Redis
/// then accepts; kv refuses them however they are sliced, see docs/kv.md).
std::vector<std::string> overlong_lines() {
  return {std::string(65537, 'a'), "*" + std::string(65536, '1'), "*1\r\n$" + std::string(65536, '1'),
          "*1\r\nX" + std::string(65536, '1'), "PING a" + std::string(1, '\0') + std::string(65536, 'b') + "\r\n"};
}

}  // namespace

TEST_CASE("kv reads raw protocol like redis-server: the same replies, the same closes", "[kv][compat][protocol]") {
  RedisServer redis;
  auto d = kv_daemon(3);
  d.start();
  std::vector<std::string> found;
  const auto compare = [&](const std::string& raw, Then then) {
    const std::string expected = transcript(redis.port(), raw, then);
    const std::string got = transcript(d.stream_port("kv"), raw, then);
    if (expected != got)
      found.push_back(Json(raw.substr(0, 60)).dump() + " => redis " + Json(expected).dump() + " kv " + Json(got).dump());
  };
  for (const auto& raw : protocol_cases()) compare(raw, Then::Quit);
  for (const auto& raw : overlong_lines()) compare(raw, Then::Nothing);
  for (const auto& difference : found) UNSCOPED_INFO(difference);
  CHECK(found.empty());
}

TEST_CASE("CONFIG GET matches patterns like redis-server", "[kv][compat][glob]") {
  // redis-server has some 190 parameters, kv 4: compare which of kv's each
  // pattern names, and under what spelling.
  RedisServer redis;
  auto d = kv_daemon(1);
  d.start();
  RespClient real(redis.port()), kv(d.stream_port("kv"));
  const std::vector<std::string> kv_names{"appendonly", "databases", "maxmemory", "save"};
  const auto names = [&](RespClient& client, const std::vector<std::string>& patterns) {
    std::vector<std::string> command{"CONFIG", "GET"};
    command.insert(command.end(), patterns.begin(), patterns.end());
    const auto elements = sorted_elements(client.call(command));
    std::vector<std::string> kept;
    for (const auto& element : elements)
      if (std::any_of(kv_names.begin(), kv_names.end(), [&](const std::string& name) {
            return element.size() == name.size() &&
                   std::equal(element.begin(), element.end(), name.begin(), [](char a, char b) { return std::tolower(a) == b; });
          }))
        kept.push_back(element);
    return kept;
  };
  const std::vector<std::vector<std::string>> table = {
      {"*"}, {"save"}, {"SAVE"}, {"SaVe", "save"}, {"sav*", "SAVE"}, {"SAVE", "sav*"}, {"s?ve"}, {"s[a-c]ve"},
      {"s[^a]ve"}, {"s[^b]ve"}, {"[a-]ave"}, {"[\\S]ave"}, {"\\Save"}, {"sav\\e"}, {"sav\\e*"}, {"*e*"}, {"*ory"},
      {"[A-Z]*"}, {"?????????"}, {"*a*a*"}, {"max*", "data*"}, {"app*only"}, {"[sm]*"}, {"*[!-/]*"}, {"[z-a]ppendonly"},
      {std::string("save\0x", 6)}, {std::string("sa*\0x", 5)}, {"[save"}, {"save["}, {"*\\"}, {""}, {"nonexistent"},
      {std::string(24, '*') + "\x01"},
  };
  std::vector<std::string> found;
  for (const auto& patterns : table) {
    const auto expected = names(real, patterns);
    const auto got = names(kv, patterns);
    if (expected != got) found.push_back(Json(patterns).dump() + " => redis " + Json(expected).dump() + " kv " + Json(got).dump());
  }
  for (const auto& difference : found) UNSCOPED_INFO(difference);
  CHECK(found.empty());
}

TEST_CASE("a DEL of 1,048,576 keys works, as on redis-server", "[kv][compat]") {
  RedisServer redis;
  auto d = kv_daemon(1);
  d.start();
  std::vector<std::string> command{"DEL"};
  for (int i = 0; i < 1048576; ++i) command.push_back("k" + std::to_string(i % 1000));
  RespClient real(redis.port()), kv(d.stream_port("kv"));
  REQUIRE(kv.call({"SET", "k7", "v"}) == "+OK\r\n");
  REQUIRE(real.call({"SET", "k7", "v"}) == "+OK\r\n");
  CHECK(kv.call(command) == ":1\r\n");
  CHECK(real.call(command) == ":1\r\n");
}

TEST_CASE("kv v1 answers like redis-server, byte for byte", "[kv][compat]") {
  RedisServer redis;
  auto d = kv_daemon(1);
  d.start();
  const auto found = differences(redis.port(), d.stream_port("kv"), kCoreScript);
  for (const auto& difference : found) UNSCOPED_INFO(difference);
  CHECK(found.empty());
  // kv has one database: any other index is out of range, in Redis's words.
  CHECK(RespClient(d.stream_port("kv")).call({"SELECT", "1"}) == "-ERR DB index is out of range\r\n");
}

TEST_CASE("kv v2 answers expiry commands like redis-server, byte for byte", "[kv][compat]") {
  RedisServer redis;
  auto d = kv_daemon(2);
  d.start();
  const auto found = differences(redis.port(), d.stream_port("kv"), kExpiryScript);
  for (const auto& difference : found) UNSCOPED_INFO(difference);
  CHECK(found.empty());
  // The key set with PX 1 expires on both, and is never returned again.
  RespClient kv(d.stream_port("kv")), real(redis.port());
  REQUIRE(wait_until([&] { return real.call({"EXISTS", "gone"}) == ":0\r\n"; }));
  CHECK(kv.call({"GET", "gone"}) == "$-1\r\n");
  CHECK(kv.call({"EXISTS", "gone"}) == ":0\r\n");
}

TEST_CASE("kv returns set members and hash fields like redis-server, in any order", "[kv][compat]") {
  RedisServer redis;
  auto d = kv_daemon(1);
  d.start();
  RespClient real(redis.port()), kv(d.stream_port("kv"));
  for (auto* client : {&real, &kv}) {
    client->call({"SADD", "s", "a", "b", "c", "a"});
    client->call({"HSET", "h", "f1", "v1", "f2", "v2"});
  }
  CHECK(sorted_elements(kv.call({"SMEMBERS", "s"})) == sorted_elements(real.call({"SMEMBERS", "s"})));
  CHECK(sorted_elements(kv.call({"HGETALL", "h"})) == sorted_elements(real.call({"HGETALL", "h"})));
  CHECK(kv.call({"SCARD", "s"}) == ":3\r\n");
}

TEST_CASE("data of every type loaded with redis-cli survives an upgrade and a downgrade", "[kv][redis-cli]") {
  auto d = kv_daemon(1);
  d.install(plugin_path("kv", 2), "kv-2.so");
  d.start();
  const std::string port = std::to_string(d.stream_port("kv"));

  // 10 000 keys: 2 500 of each type, loaded with redis-cli --pipe.
  const fs::path load = d.dir() / "load.txt", check = d.dir() / "check.txt", expected = d.dir() / "expected.txt";
  {
    std::ofstream commands(load, std::ios::binary), reads(check), answers(expected);
    for (int i = 0; i < 2500; ++i) {
      const std::string n = std::to_string(i);
      commands << RespClient::encode({"SET", "str:" + n, "value " + n})
               << RespClient::encode({"RPUSH", "list:" + n, "a" + n, "b" + n, "c" + n})
               << RespClient::encode({"SADD", "set:" + n, "only" + n})
               << RespClient::encode({"HSET", "hash:" + n, "field", "v" + n});
      reads << "GET str:" << n << "\nLRANGE list:" << n << " 0 -1\nSMEMBERS set:" << n << "\nHGET hash:" << n << " field\n";
      answers << "value " << n << "\na" << n << "\nb" << n << "\nc" << n << "\nonly" << n << "\nv" << n << "\n";
    }
  }
  const auto loaded = run_process({"sh", "-c", "redis-cli -p " + port + " --pipe < " + load.string()});
  INFO(loaded.out << loaded.err);
  REQUIRE(loaded.exit_code == 0);
  CHECK_THAT(loaded.out, Catch::Contains("errors: 0, replies: 10000"));
  const auto read_all = [&] {
    return run_process({"sh", "-c", "redis-cli -p " + port + " < " + check.string()}).out;
  };
  std::ifstream in(expected);
  const std::string want{std::istreambuf_iterator<char>(in), {}};
  REQUIRE(read_all() == want);
  CHECK(run_process({"redis-cli", "-p", port, "DBSIZE"}).out == "10000\n");

  REQUIRE(d.ctl({"reload", "kv"}).exit_code == 0);  // 1 -> 2: migrates to schema 2
  CHECK(d.get_json("/kv")["version"] == 2);
  CHECK(read_all() == want);
  REQUIRE(run_process({"redis-cli", "-p", port, "EXPIRE", "str:0", "1000"}).out == "1\n");

  REQUIRE(d.ctl({"rollback", "kv"}).exit_code == 0);  // 2 -> 1: v2 writes schema 1
  CHECK(d.get_json("/kv")["version"] == 1);
  CHECK(read_all() == want);
  CHECK(run_process({"redis-cli", "-p", port, "DBSIZE"}).out == "10000\n");
}

TEST_CASE("one connection held open through 100 upgrades keeps getting correct answers", "[kv][streams]") {
  auto d = kv_daemon(1);
  for (unsigned v : {2u, 3u}) d.install(plugin_path("kv", v), "kv-" + std::to_string(v) + ".so");
  d.start();
  RespClient client(d.stream_port("kv"));
  REQUIRE(client.call({"CLIENT", "SETNAME", "steady"}) == "+OK\r\n");
  // v1 -> v2 -> v3 -> v2 -> v3 ... : one migrating upgrade, then code-only ones both ways.
  const std::vector<std::string> files{"kv-2.so", "kv-3.so"};
  for (int i = 0; i < 100; ++i) {
    const auto reload = d.ctl({"reload", "kv", (d.plugin_dir() / files[static_cast<std::size_t>(i) % 2]).string()});
    INFO("upgrade " << i << ": " << reload.err);
    REQUIRE(reload.exit_code == 0);
    REQUIRE(client.call({"INCR", "upgrades"}) == ":" + std::to_string(i + 1) + "\r\n");
    REQUIRE(client.call({"CLIENT", "GETNAME"}) == "$6\r\nsteady\r\n");
  }
  const auto history = Json::parse(d.ctl({"history", "kv", "--json"}).out)["reports"];
  REQUIRE(history.size() == 100);
  CHECK(history[0]["state_transfer"] == "serialized");
  CHECK(history[1]["state_transfer"] == "memory");
  CHECK(history[99]["state_transfer"] == "memory");
}

TEST_CASE("a command half-sent when kv is upgraded is read again from its start by the new version", "[kv][streams]") {
  // The first half was read by v2, which kept where it stopped; v3 keeps
  // nothing of that (it is not state) and reads the whole command, which
  // the host still holds, once the rest arrives.
  auto d = kv_daemon(2);
  d.install(plugin_path("kv", 3), "kv-3.so");
  d.start();
  RespClient client(d.stream_port("kv"));
  const std::string command = RespClient::encode({"SET", "k", "hello"});
  const auto calls = [&] { return d.status()["modules"][0]["calls"].get<std::uint64_t>(); };
  const std::uint64_t before = calls();
  client.send_raw(command.substr(0, command.size() - 4));
  REQUIRE(wait_until([&] { return calls() > before; }));  // v2's on_data has seen the first part
  REQUIRE(d.ctl({"reload", "kv", (d.plugin_dir() / "kv-3.so").string()}).exit_code == 0);
  CHECK(d.get_json("/kv")["version"] == 3);
  client.send_raw(command.substr(command.size() - 4));
  CHECK(client.read_reply() == "+OK\r\n");
  CHECK(client.call({"GET", "k"}) == "$5\r\nhello\r\n");
}

TEST_CASE("a malformed RESP frame gets an error and closes that connection only", "[kv][streams]") {
  auto d = kv_daemon(1);
  d.start();
  RespClient good(d.stream_port("kv")), bad(d.stream_port("kv"));
  REQUIRE(good.call({"SET", "k", "v"}) == "+OK\r\n");
  bad.send_raw("*2\r\n$3\r\nGET\r\n!oops\r\n");
  CHECK(bad.read_reply() == "-ERR Protocol error: expected '$', got '!'\r\n");
  CHECK(bad.closed_by_peer());
  CHECK(good.call({"GET", "k"}) == "$1\r\nv\r\n");
}

TEST_CASE("an oversized bulk is refused before it arrives, without using the memory", "[kv][streams]") {
  auto d = kv_daemon(1, "max_bulk_bytes = 1048576");
  d.start();
  RespClient client(d.stream_port("kv"));
  // Announces 1 GB; the error comes back before any of it is sent.
  client.send_raw("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000000\r\n");
  CHECK(client.read_reply() == "-ERR Protocol error: invalid bulk length\r\n");
  CHECK(client.closed_by_peer());
  RespClient next(d.stream_port("kv"));
  CHECK(next.call({"SET", "k", std::string(1 << 20, 'x')}) == "+OK\r\n");  // at the limit: fine
  CHECK(next.call({"STRLEN", "k"}) == ":1048576\r\n");
}

TEST_CASE("kv v2 removes expired keys in the background, on a host timer, without being asked", "[kv][expiry]") {
  auto d = kv_daemon(2);
  d.start();
  RespClient client(d.stream_port("kv"));
  // 2 s: long enough for the count below to come first on a loaded machine
  // (at 50 ms the timer could remove some before it, and it failed in CI).
  for (int i = 0; i < 100; ++i) REQUIRE(client.call({"SET", "short:" + std::to_string(i), "x", "PX", "2000"}) == "+OK\r\n");
  REQUIRE(client.call({"SET", "kept", "x"}) == "+OK\r\n");
  // /kv counts the table itself, expired keys included until removed; nothing
  // looks the keys up, so only the timer can remove them.
  CHECK(d.get_json("/kv")["keys"] == 101);
  REQUIRE(wait_until([&] { return d.get_json("/kv")["keys"] == 1; }));
  CHECK(d.get_json("/kv")["expiring"] == 0);
  const auto status = d.status()["modules"][0];
  CHECK(status["timers"] == Json::array({"expire"}));
}

namespace {

/// SETs on a connection of its own until stopped: key w<seq % 2000>, value
/// <seq>. Remembers each key's last acknowledged value, and when each
/// acknowledgement came (to see it write during an upgrade's pre-copy).
class SequenceWriter {
 public:
  using SystemClock = std::chrono::system_clock;

  explicit SequenceWriter(std::uint16_t port) : client_(port) {
    thread_ = std::thread([this] { run(); });
  }
  ~SequenceWriter() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] std::uint64_t acknowledged() const { return acknowledged_; }
  [[nodiscard]] bool failed() const { return failed_; }
  /// After stop(): the first reply that was not +OK, if any.
  [[nodiscard]] const std::string& failure() const { return failure_; }
  [[nodiscard]] const std::map<std::string, std::uint64_t>& last() const { return last_; }
  /// How many acknowledgements came within [from, to].
  [[nodiscard]] std::size_t acknowledged_between(SystemClock::time_point from, SystemClock::time_point to) const {
    std::lock_guard lock(mutex_);
    return static_cast<std::size_t>(std::count_if(times_.begin(), times_.end(),
                                                  [&](auto at) { return at >= from && at <= to; }));
  }

 private:
  void run() {
    // Bounded in count and time whatever happens to the test.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    for (std::uint64_t seq = 0; !stop_ && seq < 20'000'000 && std::chrono::steady_clock::now() < deadline; ++seq) {
      const std::string key = "w" + std::to_string(seq % 2000), value = std::to_string(seq);
      const std::string reply = client_.call({"SET", key, value});
      if (reply != "+OK\r\n") {
        failure_ = "SET " + key + " " + value + " => " + Json(reply).dump();
        failed_ = true;
        return;
      }
      last_[key] = seq;
      {
        std::lock_guard lock(mutex_);
        times_.push_back(SystemClock::now());
      }
      acknowledged_ = seq + 1;
    }
  }

  RespClient client_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> acknowledged_{0};
  std::atomic<bool> failed_{false};
  std::string failure_;  ///< set before failed_
  std::map<std::string, std::uint64_t> last_;  ///< read after stop()
  mutable std::mutex mutex_;
  std::vector<SystemClock::time_point> times_;
};

/// When an upgrade report's pre-copy began and ended (from the time it
/// started and the phases before).
std::pair<SequenceWriter::SystemClock::time_point, SequenceWriter::SystemClock::time_point> precopy_window(
    const Json& report) {
  using std::chrono::microseconds, std::chrono::milliseconds;
  const auto started = SequenceWriter::SystemClock::time_point(milliseconds(report["started_at_ms"].get<std::int64_t>()));
  const auto& phases = report["phases_us"];
  const auto from = started + microseconds(phases["rehearse"].get<std::int64_t>() + phases["prepare"].get<std::int64_t>());
  return {from, from + microseconds(phases["precopy"].get<std::int64_t>()) + milliseconds(1)};  // started_at is in ms
}

/// Checks a report's pre-copy: round 0 moved the whole state (at least
/// `entries`), and a pause took the last changes.
void check_precopied(const Json& report, std::uint64_t entries) {
  INFO(report.dump());
  CHECK(report["outcome"] == "succeeded");
  REQUIRE(report["precopy"].is_object());
  const Json& rounds = report["precopy"]["rounds"];
  REQUIRE(rounds.size() >= 1);
  CHECK(rounds[0]["entries"].get<std::uint64_t>() >= entries);
  CHECK(rounds[0]["parts"].get<std::uint64_t>() > 1);
  CHECK(report["precopy"]["final"]["parts"] == 1);
  CHECK(report["pause_us"].get<std::int64_t>() > 0);
  CHECK(report["pause_us"].get<std::int64_t>() < report["phases_us"]["precopy"].get<std::int64_t>());
}

}  // namespace

namespace {

/// Keys loaded into kv: a file of MGETs that reads them back, and what it prints.
struct LoadedKeys {
  fs::path check;
  std::string want;
};

/// key:0 .. key:N-1 = "value I", loaded with redis-cli --pipe on `port`.
LoadedKeys load_keys(const Daemon& d, const std::string& port, int keys) {
  const fs::path load = d.dir() / "load.txt";
  LoadedKeys loaded_keys{d.dir() / "check.txt", {}};
  {
    std::ofstream commands(load, std::ios::binary), reads(loaded_keys.check);
    for (int i = 0; i < keys; ++i) {
      commands << RespClient::encode({"SET", "key:" + std::to_string(i), "value " + std::to_string(i)});
      reads << (i % 1000 == 0 ? "MGET" : "") << " key:" << i << (i % 1000 == 999 ? "\n" : "");
      loaded_keys.want += "value " + std::to_string(i) + "\n";
    }
  }
  const auto loaded = run_process({"sh", "-c", "redis-cli -p " + port + " --pipe < " + load.string()});
  INFO(loaded.out << loaded.err);
  REQUIRE(loaded.exit_code == 0);
  REQUIRE_THAT(loaded.out, Catch::Contains("errors: 0, replies: " + std::to_string(keys)));
  return loaded_keys;
}

/// Every key `writer` was acknowledged for holds its last value, read back
/// with redis-cli (after writer.stop()).
void check_last_values(const Daemon& d, const std::string& port, const SequenceWriter& writer) {
  const fs::path gets = d.dir() / "gets.txt";
  std::string written;
  {
    std::ofstream out(gets);
    for (const auto& [key, seq] : writer.last()) {
      out << "GET " << key << "\n";
      written += std::to_string(seq) + "\n";
    }
  }
  CHECK(run_process({"sh", "-c", "redis-cli -p " + port + " < " + gets.string()}).out == written);
}

}  // namespace

TEST_CASE("kv with 50 000 keys is pre-copied through moltd while a client writes: every acknowledged SET survives "
          "an upgrade and a downgrade",
          "[kv][precopy]") {
  constexpr int kKeys = 50000;
  auto d = kv_daemon(1);
  d.install(plugin_path("kv", 2), "kv-2.so");
  d.start();
  const std::uint16_t port = d.stream_port("kv");
  const std::string port_text = std::to_string(port);

  const auto [check, want] = load_keys(d, port_text, kKeys);
  const auto read_keys = [&] { return run_process({"sh", "-c", "redis-cli -p " + port_text + " < " + check.string()}).out; };

  SequenceWriter writer(port);
  REQUIRE(wait_until([&] { return writer.acknowledged() > 1000 || writer.failed(); }));

  // 1 -> 2, as an operator would, in text.
  const auto up = d.ctl({"reload", "kv"});
  INFO(up.out << up.err);
  REQUIRE(up.exit_code == 0);
  CHECK_THAT(up.out, Catch::StartsWith("kv v1 -> v2: succeeded\n"));
  CHECK_THAT(up.out, Catch::Contains("\n  precopy ") && Catch::Contains("state moved while v1 serves: "));
  std::smatch round0;
  REQUIRE(std::regex_search(up.out, round0, std::regex("\n    round 0 [^\n]* (\\d+) entries in (\\d+) call\\(s\\), ")));
  CHECK(std::stoull(round0[1]) >= kKeys);
  CHECK(std::stoull(round0[2]) > 1);
  CHECK_THAT(up.out, Catch::Contains("change(s) and per-connection state, "));
  const Json history = Json::parse(d.ctl({"history", "kv", "--json"}).out)["reports"];
  REQUIRE(history.size() == 1);
  check_precopied(history[0], kKeys);
  const auto [up_from, up_to] = precopy_window(history[0]);
  CHECK(writer.acknowledged_between(up_from, up_to) > 0);
  CHECK(d.get_json("/kv")["version"] == 2);

  const std::uint64_t between = writer.acknowledged();
  REQUIRE(wait_until([&] { return writer.acknowledged() > between + 1000 || writer.failed(); }));

  // 2 -> 1: v2 converts each part down to schema 1; as JSON.
  const auto down = d.ctl({"reload", "kv", (d.plugin_dir() / "kv-1.so").string(), "--json"});
  INFO(down.out << down.err);
  REQUIRE(down.exit_code == 0);
  const Json reply = Json::parse(down.out);
  CHECK(reply["ok"] == true);
  const Json& report = reply["report"];
  CHECK(report["direction"] == "down");
  check_precopied(report, kKeys);
  const auto [down_from, down_to] = precopy_window(report);
  CHECK(writer.acknowledged_between(down_from, down_to) > 0);
  CHECK(d.get_json("/kv")["version"] == 1);

  writer.stop();
  CHECK(writer.failure().empty());
  CHECK(writer.acknowledged() > 2000);
  // Every key the writer was acknowledged for holds its last value; the
  // keys loaded before are as they were.
  check_last_values(d, port_text, writer);
  CHECK(read_keys() == want);
  CHECK(run_process({"redis-cli", "-p", port_text, "DBSIZE"}).out ==
        std::to_string(kKeys + writer.last().size()) + "\n");
}

TEST_CASE("kv's snapshot is written as pre-copy parts, a restart boots from it, and rehearsals read parts",
          "[kv][precopy][snapshot]") {
  constexpr int kKeys = 20000;
  auto d = kv_daemon(1);
  d.install(plugin_path("kv", 2), "kv-2.so");
  d.start();
  const std::string port = std::to_string(d.stream_port("kv"));
  const auto [check, want] = load_keys(d, port, kKeys);
  const auto read_keys = [&](const std::string& on) {
    return run_process({"sh", "-c", "redis-cli -p " + on + " < " + check.string()}).out;
  };

  const auto saved = d.ctl({"save"});
  INFO(saved.out << saved.err);
  REQUIRE(saved.exit_code == 0);
  const fs::path snapshot = d.run_dir() / "snapshots" / "kv.molt";
  std::string header;
  std::getline(std::ifstream(snapshot), header);
  CHECK_THAT(header, Catch::Contains(R"("module":"kv","version":1,"schema":1,"encoding":"parts")"));
  CHECK_THAT(d.log(), Catch::Contains("[kv] requested snapshot written: ") && Catch::Contains(" (pre-copy parts) in "));

  // A restart reads the parts back into a fresh v1.
  REQUIRE(d.stop() == 0);
  d.start();
  const std::string port2 = std::to_string(d.stream_port("kv"));
  CHECK(read_keys(port2) == want);

  // Up on the snapshot's parts; down on parts taken for the rehearsal (in
  // schema 1, which v2 writes and v1 reads).
  const auto up = d.ctl({"reload", "kv", "--json"});
  INFO(up.out << up.err);
  REQUIRE(up.exit_code == 0);
  CHECK_THAT(Json::parse(up.out)["report"]["rehearsal"].get<std::string>(), Catch::StartsWith("passed in "));
  const auto down = d.ctl({"reload", "kv", (d.plugin_dir() / "kv-1.so").string(), "--json"});
  INFO(down.out << down.err);
  REQUIRE(down.exit_code == 0);
  CHECK_THAT(Json::parse(down.out)["report"]["rehearsal"].get<std::string>(),
             Catch::Matches("passed in \\d+ ms on a state taken for it \\(\\d+ B of parts, by pre-copy in \\d+ ms\\)"));
  CHECK(read_keys(port2) == want);
}

namespace {

/// The inode of moltd's TCP socket on `port`: the listening one, or with
/// `peer`, the connection to that client port; 0 if none.
unsigned long socket_inode(pid_t pid, std::uint16_t port, std::uint16_t peer = 0) {
  const auto row = tcp_socket(pid, port, peer);
  return row ? row->inode : 0;
}

/// Whether `pid` has the socket `inode` open (/proc/PID/fd).
bool holds_socket(pid_t pid, unsigned long inode) {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec))
    if (fs::read_symlink(entry.path(), ec).string() == "socket:[" + std::to_string(inode) + "]") return true;
  return false;
}

}  // namespace

TEST_CASE("moltd hot-restarts under a writing client: kv's connections, a half-sent command and every acknowledged "
          "SET survive, on the same listening socket",
          "[kv][hot-restart]") {
  constexpr int kKeys = 20000;
  // Its state pre-copied while it serves, or saved whole in the freeze and
  // loaded by the new process as the bytes arrive.
  const bool precopy = GENERATE(true, false);
  INFO((precopy ? "pre-copy" : "stop-and-copy (precopy = \"never\")"));
  Daemon d({{"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}}, precopy ? "" : "precopy = \"never\"");
  d.start();
  const std::uint16_t port = d.stream_port("kv");
  const std::string port_text = std::to_string(port);
  const auto [check, want] = load_keys(d, port_text, kKeys);
  const pid_t first = d.pid();
  const unsigned long listener = socket_inode(first, port);
  REQUIRE(listener != 0);

  RespClient half(port), idle(port);
  half.send_raw("*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$2\r\nv");  // the rest after the hot restart
  CHECK(idle.call({"PING"}) == "+PONG\r\n");
  SequenceWriter writer(port);
  REQUIRE(wait_until([&] { return writer.acknowledged() > 1000 || writer.failed(); }));

  const Json reply = d.hot_restart();
  INFO(reply.dump());
  REQUIRE(reply.value("ok", false));
  const Json& report = reply["report"];
  CHECK(report["old_pid"] == first);
  CHECK(report["new_pid"] != first);
  CHECK(report["generation"] == 2);
  CHECK(report["listeners"] == 1);
  CHECK(report["connections"].get<int>() >= 3);  // half, idle, the writer (load_keys' are gone)
  CHECK(report["state_bytes"].get<std::uint64_t>() > 0);
  if (!precopy) CHECK(report["state_bytes"].get<std::uint64_t>() > kKeys * 10);  // every key, in the freeze
  std::vector<std::string> phases;
  for (const auto& p : report["phases"]) phases.push_back(p["phase"]);
  CHECK(phases == std::vector<std::string>{"hello", "prepare", "copy", "freeze", "transfer", "adopt", "commit", "frozen"});

  const Json host = d.status()["host"];
  CHECK(host["pid"] == d.pid());
  CHECK(host["generation"] == 2);
  CHECK(holds_socket(d.pid(), listener));  // the same kernel socket, in the new process
  CHECK_FALSE(fs::exists(d.run_dir() / "handover"));

  half.send_raw("1\r\n");
  CHECK(half.read_reply() == std::optional<std::string>("+OK\r\n"));
  CHECK(half.call({"GET", "half"}) == "$2\r\nv1\r\n");
  CHECK(idle.call({"PING"}) == "+PONG\r\n");
  const std::uint64_t after = writer.acknowledged();
  REQUIRE(wait_until([&] { return writer.acknowledged() > after + 1000 || writer.failed(); }));

  // And again: generation 3, from the successor.
  const Json again = d.hot_restart();
  INFO(again.dump());
  REQUIRE(again.value("ok", false));
  CHECK(again["report"]["generation"] == 3);
  CHECK(holds_socket(d.pid(), listener));
  const std::uint64_t later = writer.acknowledged();
  REQUIRE(wait_until([&] { return writer.acknowledged() > later + 1000 || writer.failed(); }));

  writer.stop();
  CHECK(writer.failure().empty());
  check_last_values(d, port_text, writer);
  CHECK(run_process({"sh", "-c", "redis-cli -p " + port_text + " < " + check.string()}).out == want);
  CHECK(d.stop() == 0);  // the successor stops as any moltd: snapshot, exit 0
}

TEST_CASE("a large reply read slowly spans a hot restart: the client gets all of it, in order, from the same "
          "kernel socket in the new process",
          "[kv][hot-restart]") {
  auto d = kv_daemon(1);
  d.start();
  const std::uint16_t port = d.stream_port("kv");
  std::string big(4 << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('a' + (i / 997) % 26);
  REQUIRE(RespClient(port).call({"SET", "big", big}) == "+OK\r\n");

  // A client with a small receive buffer that reads 64 KiB of the reply, then waits.
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  const int small = 16384;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  timeval limit{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  sockaddr_in mine{};
  socklen_t length = sizeof mine;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&mine), &length);
  const std::string request = RespClient::encode({"GET", "big"});
  REQUIRE(::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
  std::string got;
  char chunk[16384];
  while (got.size() < 65536) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    REQUIRE(n > 0);
    got.append(chunk, static_cast<std::size_t>(n));
  }
  const unsigned long server_side = socket_inode(d.pid(), port, ntohs(mine.sin_port));
  REQUIRE(server_side != 0);

  const Json reply = d.hot_restart();
  INFO(reply.dump());
  REQUIRE(reply.value("ok", false));
  // What the kernel's send queue could not take was still in moltd's
  // buffers (half a MiB here): it moved with the connection.
  CHECK(reply["report"]["leftover_bytes"].get<std::uint64_t>() > 100000);
  CHECK(holds_socket(d.pid(), server_side));

  const std::string expected = "$" + std::to_string(big.size()) + "\r\n" + big + "\r\n";
  while (got.size() < expected.size()) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) break;
    got.append(chunk, static_cast<std::size_t>(n));
  }
  ::close(fd);
  CHECK(got.size() == expected.size());
  CHECK(got == expected);
}
