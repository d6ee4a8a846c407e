// kv's connection handling (kv::Server) with a fake StreamOutput: commands
// that arrive in pieces, replies written straight to the output and stopped
// by backpressure, error lines no client bytes can break; and the real kv
// image in a ModuleSlot for what the host asks it (limits, refusal reply).
#include <time.h>

#include <sstream>

#include <catch2/catch.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "../../plugins/kv/common/server.hpp"
#include "../../plugins/kv/v2/expiry.hpp"
#include "molt/host/slot/module_slot.hpp"
#include "test_support.hpp"

using namespace molt;

namespace {

/// The connection's output as kv sees it; has_room() says yes `room` times.
struct FakeOutput final : api::StreamOutput {
  std::string bytes;
  bool closing = false;
  std::size_t room = SIZE_MAX;
  mutable std::size_t asked = 0;
  void write(std::string_view data) override { bytes.append(data); }
  void close_after_write() override { closing = true; }
  bool has_room() const override { return asked++ < room; }
};

/// A kv v2 server (every command kv has but v3's two) over its own state.
struct Kv {
  kv::StateV2 state;
  kv::Server server{kv::ParseLimits{}, kv::ServerInfo{2, 0}};
  Kv() {
    kv::add_core_commands(server.table());
    kv::add_expiry_commands(server.table());
  }
  std::size_t process(std::string_view input, FakeOutput& out, api::ConnectionId connection = 1) {
    return server.process(connection, input, out, kv::ExpiryTraits::db(state, nullptr), state.clients);
  }
  /// Sends `input` whole; returns what came back.
  std::string send(std::string_view input, api::ConnectionId connection = 1) {
    FakeOutput out;
    CHECK(process(input, out, connection) == input.size());
    return out.bytes;
  }
};

std::string encode(const std::vector<std::string>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (const auto& arg : args) out += "$" + std::to_string(arg.size()) + "\r\n" + arg + "\r\n";
  return out;
}

double thread_cpu_seconds() {
  timespec now{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) * 1e-9;
}

}  // namespace

TEST_CASE("an error line turns CR and LF into spaces, trims them at the ends, and ends at a NUL", "[kv][reply]") {
  FakeOutput out;
  kv::Reply reply(out);
  reply.error({"ERR Unsupported option ", "a\r\n+OK"});
  reply.error({"ERR Unsupported option ", "a\r\n"});  // trailing CR/LF trimmed, as addReplyErrorFormat does
  reply.error({"ERR Unsupported option ", "\r\na"});
  reply.error({"ERR x '", std::string_view("a\0b", 3), "' tail"});  // the line ends at the NUL
  reply.error({"ERR ", kv::c_string(std::string_view("a\0b", 3)), "'"});  // c_string ends only the argument
  CHECK(out.bytes ==
        "-ERR Unsupported option a  +OK\r\n"
        "-ERR Unsupported option a\r\n"
        "-ERR Unsupported option   a\r\n"
        "-ERR x 'a\r\n"
        "-ERR a'\r\n");
  out.bytes.clear();
  const std::string long_option(1000, '\n');  // longer than the writer's chunk
  reply.error({"ERR Unsupported option ", "x", long_option, "y"});
  CHECK(out.bytes == "-ERR Unsupported option x" + std::string(1000, ' ') + "y\r\n");
}

TEST_CASE("replies are written straight to the output, small ones in one write", "[kv][reply]") {
  struct CountingOutput final : api::StreamOutput {
    std::vector<std::string> writes;
    void write(std::string_view data) override { writes.emplace_back(data); }
    void close_after_write() override {}
    bool has_room() const override { return true; }
  } out;
  kv::Reply reply(out);
  reply.bulk("value");
  reply.simple("PONG");
  reply.integer(-42);
  reply.bulk(std::string(1000, 'x'));
  CHECK(out.writes.size() == 6);
  CHECK(out.writes[0] == "$5\r\nvalue\r\n");
  CHECK(out.writes[1] == "+PONG\r\n");
  CHECK(out.writes[2] == ":-42\r\n");
  CHECK(out.writes[3] == "$1000\r\n");
  CHECK(out.writes[5] == "\r\n");
}

TEST_CASE("a client's bytes in an error cannot forge the next reply", "[kv][reply]") {
  // Each expectation is redis-server 7.0.15's reply to the same command.
  Kv kv;
  REQUIRE(kv.send(encode({"SET", "r", "1"})) == "+OK\r\n");
  const auto [command, expected] = GENERATE(table<std::vector<std::string>, std::string>({
      {{"EXPIRE", "r", "100", "a\r\n+OK"}, "-ERR Unsupported option a  +OK\r\n"},
      {{"EXPIRE", "r", "100", "a\r\n"}, "-ERR Unsupported option a\r\n"},
      {{"EXPIRE", "r", "100", std::string("a\0b\r\n", 5)}, "-ERR Unsupported option a\r\n"},
      {{"EXPIRE", "r", "x", "BOGUS"}, "-ERR Unsupported option BOGUS\r\n"},  // options before the time
      {{"PEXPIREAT", "nokey", "100", "a\r\n+OK"}, "-ERR Unsupported option a  +OK\r\n"},
      {{"HELLO", "2", "a\r\n+OK"}, "-ERR Syntax error in HELLO option 'a  +OK'\r\n"},
      {{"HELLO", "2", std::string("a\0b", 3)}, "-ERR Syntax error in HELLO option 'a'\r\n"},
      {{"HELLO", "2", "\r\n"}, "-ERR Syntax error in HELLO option '  '\r\n"},
      {{"CLIENT", "a\r\n+OK"}, "-ERR unknown subcommand 'a  +OK'. Try CLIENT HELP.\r\n"},
      {{"CLIENT", std::string("a\0b", 3)}, "-ERR unknown subcommand 'a'. Try CLIENT HELP.\r\n"},
      {{"CLIENT", std::string(200, 'x')}, "-ERR unknown subcommand '" + std::string(128, 'x') + "'. Try CLIENT HELP.\r\n"},
      {{"CONFIG", "a\r\n+OK"}, "-ERR unknown subcommand 'a  +OK'. Try CONFIG HELP.\r\n"},
      {{"CONFIG", "\r\n"}, "-ERR unknown subcommand '  '. Try CONFIG HELP.\r\n"},
      {{"a\r\n+OK", "b\r\nc"}, "-ERR unknown command 'a  +OK', with args beginning with: 'b  c' \r\n"},
      {{std::string("a\0b", 3), std::string("c\0d", 3), "e"}, "-ERR unknown command 'a', with args beginning with: 'c' 'e' \r\n"},
      {{"\r\nx"}, "-ERR unknown command '  x', with args beginning with: \r\n"},
      {{std::string(200, 'x'), std::string(200, 'y')},
       "-ERR unknown command '" + std::string(128, 'x') + "', with args beginning with: '" + std::string(128, 'y') + "' \r\n"},
      {{"nocmd", std::string(100, 'a'), std::string(100, 'b'), "c"},
       "-ERR unknown command 'nocmd', with args beginning with: '" + std::string(100, 'a') + "' '" + std::string(25, 'b') + "' \r\n"},
      {{"nocmd", std::string(120, 'a'), "b", "c"},
       "-ERR unknown command 'nocmd', with args beginning with: '" + std::string(120, 'a') + "' 'b' 'c' \r\n"},
      {{"nocmd", std::string(123, 'a'), "b", "c"},
       "-ERR unknown command 'nocmd', with args beginning with: '" + std::string(123, 'a') + "' 'b' \r\n"},
      {{"nocmd", std::string(125, 'a'), "b", "c"},
       "-ERR unknown command 'nocmd', with args beginning with: '" + std::string(125, 'a') + "' \r\n"},
      {{"nocmd", "", "", ""}, "-ERR unknown command 'nocmd', with args beginning with: '' '' '' \r\n"},
  }));
  std::string what;
  for (const auto& arg : command) what += arg + ' ';
  INFO(what);
  CHECK(kv.send(encode(command) + encode({"PING"})) == expected + "+PONG\r\n");
}

TEST_CASE("unknown commands list their arguments while fewer than 128 bytes are listed", "[kv][reply]") {
  Kv kv;
  std::vector<std::string> command{"nocmd"};
  for (int i = 0; i < 60; ++i) command.emplace_back("ab");
  std::string listed;
  for (int i = 0; i < 26; ++i) listed += "'ab' ";  // 26 x 5 = 130 bytes: the 26th crosses 128
  CHECK(kv.send(encode(command)) == "-ERR unknown command 'nocmd', with args beginning with: " + listed + "\r\n");
}

TEST_CASE("a protocol error answers in Redis's words and closes, the commands before it ran", "[kv][resp]") {
  const auto [input, reply] = GENERATE(table<std::string, std::string>({
      {"*9223372036854775808\r\nPING\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
      {"*1\r\n$-1\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
      {"*1\r\n:4\r\nPING\r\n", "-ERR Protocol error: expected '$', got ':'\r\n"},
      {"*1\r\n\r\nxx", "-ERR Protocol error: expected '$', got ' '\r\n"},  // the '\r' shown as a space
      {"ECHO \"a\"b\r\nPING\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
      {std::string(65537, 'a'), "-ERR Protocol error: too big inline request\r\n"},
      {"*" + std::string(65536, '1'), "-ERR Protocol error: too big mbulk count string\r\n"},
      {"*1\r\n$" + std::string(65536, '1'), "-ERR Protocol error: too big bulk count string\r\n"},
  }));
  Kv kv;
  FakeOutput out;
  const std::string sent = encode({"PING"}) + input;
  CHECK(kv.process(sent, out) == sent.size());
  CHECK(out.bytes == "+PONG\r\n" + reply);
  CHECK(out.closing);
}

TEST_CASE("empty commands are skipped, as Redis does, even *-9223372036854775808", "[kv][resp]") {
  Kv kv;
  CHECK(kv.send("*0\r\n*-1\r\n*-9223372036854775808\r\n\r\n  \n" + encode({"PING"}) + "PING\r\n") == "+PONG\r\n+PONG\r\n");
}

TEST_CASE("inline commands run with their escapes decoded", "[kv][inline]") {
  Kv kv;
  CHECK(kv.send("SET \"k\\x00\" 'it\\'s'\r\nGET \"k\\x00\"\r\nECHO \"\"\r\n") == "+OK\r\n$4\r\nit's\r\n$0\r\n\r\n");
  CHECK(kv.send("\"\" a\r\n") == "-ERR unknown command '', with args beginning with: 'a' \r\n");
}

TEST_CASE("backpressure: once has_room() says no, the next command waits, and then runs exactly once", "[kv][backpressure]") {
  Kv kv;
  std::string input;
  std::vector<std::size_t> starts;
  for (int i = 0; i < 10; ++i) {
    starts.push_back(input.size());
    input += encode({"INCR", "n"});
  }
  FakeOutput out;
  out.room = 3;
  const std::size_t consumed = kv.process(input, out);
  CHECK(out.bytes == ":1\r\n:2\r\n:3\r\n");
  CHECK(consumed == starts[3]);  // the 4th command's first byte: it did not run
  CHECK_FALSE(out.closing);
  CHECK(kv.state.keys.at("n").str == "3");

  out.room = SIZE_MAX;
  out.asked = 0;
  out.bytes.clear();
  CHECK(kv.process(std::string_view(input).substr(consumed), out) == input.size() - consumed);
  CHECK(out.bytes == ":4\r\n:5\r\n:6\r\n:7\r\n:8\r\n:9\r\n:10\r\n");
  CHECK(out.asked == 7);  // asked before each command
}

TEST_CASE("backpressure: a command read over many calls still waits for room before it runs", "[kv][backpressure]") {
  Kv kv;
  const std::string first = encode({"INCR", "n"});
  const std::string second = encode({"INCR", "n"});
  const std::string input = first + second;
  FakeOutput out;
  out.room = 1;
  CHECK(kv.process(std::string_view(input).substr(0, first.size() + 5), out) == first.size());
  CHECK(out.bytes == ":1\r\n");
  CHECK(kv.process(std::string_view(input).substr(first.size()), out) == 0);  // no room: not even read
  out.room = SIZE_MAX;
  CHECK(kv.process(std::string_view(input).substr(first.size(), 5), out) == 0);  // read on, incomplete
  CHECK(kv.process(std::string_view(input).substr(first.size()), out) == second.size());
  CHECK(out.bytes == ":1\r\n:2\r\n");
}

TEST_CASE("each connection keeps its own half-read command, forget() drops it", "[kv][resp]") {
  Kv kv;
  const std::string a = encode({"ECHO", "from a"}), b = encode({"ECHO", "from b"});
  FakeOutput out_a, out_b;
  CHECK(kv.process(std::string_view(a).substr(0, 12), out_a, 1) == 0);
  CHECK(kv.process(std::string_view(b).substr(0, 20), out_b, 2) == 0);
  CHECK(kv.process(a, out_a, 1) == a.size());
  CHECK(kv.process(b, out_b, 2) == b.size());
  CHECK(out_a.bytes == "$6\r\nfrom a\r\n");
  CHECK(out_b.bytes == "$6\r\nfrom b\r\n");

  // A connection forgotten mid-command starts over: its next input is read from the start.
  CHECK(kv.process(std::string_view(a).substr(0, 12), out_a, 3) == 0);
  kv.server.forget(3);
  out_a.bytes.clear();
  CHECK(kv.process(b, out_a, 3) == b.size());
  CHECK(out_a.bytes == "$6\r\nfrom b\r\n");
}

TEST_CASE("a million-argument command sliced into 2000 reads costs at most twice as much as sent whole", "[kv][resp]") {
  std::string command = "*1000001\r\n$3\r\nDEL\r\n";
  for (int i = 0; i < 1000000; ++i) command += "$1\r\nk\r\n";
  Kv kv;
  const auto run = [&](std::size_t slices) {
    FakeOutput out;
    const std::size_t step = command.size() / slices + 1;
    const double start = thread_cpu_seconds();
    std::size_t consumed = 0;
    for (std::size_t end = step; consumed < command.size(); end += step)
      consumed += kv.process(std::string_view(command).substr(0, std::min(end, command.size())), out);
    const double spent = thread_cpu_seconds() - start;
    CHECK(out.bytes == ":0\r\n");
    return spent;
  };
  run(1);  // warm up
  const double whole = run(1);
  const double sliced = run(2000);
  INFO("whole " << whole << " s, sliced " << sliced << " s");
  CHECK(sliced <= 2 * whole + 0.02);
}

TEST_CASE("kv's bulk limit is lowered to what the host can buffer, with one warning at start", "[kv][limits]") {
  test::Harness h;
  auto image = h.loader.load(test::plugin_path("kv", 1), "kv");
  REQUIRE(image);
  std::ostringstream log_text;
  auto logger = std::make_shared<spdlog::logger>("kv", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text));
  host::SlotOptions options{logger, {{"max_bulk_bytes", "536870912"}}, nullptr, nullptr};
  options.stream_limits = api::StreamLimits{1u << 20, 1u << 20};  // the host holds 1 MiB per connection
  auto slot = host::ModuleSlot::start(std::move(image.value()), options);
  REQUIRE(slot);
  const std::string logged = log_text.str();
  CHECK_THAT(logged, Catch::Contains("max_bulk_bytes 536870912 is more than one command can hold") &&
                         Catch::Contains("bulk strings over 983040 bytes are refused"));
  const std::string_view warning = "is more than one command can hold";
  CHECK(logged.find(warning) == logged.rfind(warning));  // once

  FakeOutput out;
  const std::string fits = "*2\r\n$4\r\nECHO\r\n$983040\r\n";
  CHECK(slot.value()->stream_data(1, fits, out).value() == 0);  // waits for the data
  CHECK(out.bytes.empty());
  const std::string too_big = "*2\r\n$4\r\nECHO\r\n$983041\r\n";
  CHECK(slot.value()->stream_data(2, too_big, out).value() == too_big.size());
  CHECK(out.bytes == "-ERR Protocol error: invalid bulk length\r\n");
  CHECK(out.closing);
}

TEST_CASE("the limits: configured max_bulk_bytes, lowered only when the host is smaller", "[kv][limits]") {
  const auto effective = [](std::string bulk, std::uint64_t host) {
    api::Values config;
    if (!bulk.empty()) config["max_bulk_bytes"] = bulk;
    return kv::limits_from(config, api::StreamLimits{host, 1u << 20});
  };
  CHECK(effective("", 0).limits.max_bulk_bytes == 512u << 20);  // no host limit: proto-max-bulk-len's default
  CHECK_FALSE(effective("", 0).reduced_from);
  CHECK(effective("", 1ull << 30).limits.max_bulk_bytes == 512u << 20);
  CHECK(effective("", 256u << 20).limits.max_bulk_bytes == (256u << 20) - (64u << 10));  // moltd's default
  CHECK(effective("", 256u << 20).reduced_from == 512u << 20);
  CHECK(effective("1000", 256u << 20).limits.max_bulk_bytes == 1000);
  CHECK(effective("x", 0).limits.max_bulk_bytes == 512u << 20);
  CHECK(effective("", 4096).limits.max_bulk_bytes == 2048);  // a tiny host buffer keeps half for framing
}

TEST_CASE("kv turns a client away with Redis's words", "[kv]") {
  test::Harness h;
  auto slot = h.start(test::plugin_path("kv", 1), "kv");
  CHECK(slot->refusal_reply(api::Refusal::TooManyClients) == "-ERR max number of clients reached\r\n");
}

// Not run by default: `molt_unit_tests "[.bench]"` prints the hot path's cost.
TEST_CASE("DEBUG DIGEST depends on every key's type, value and deadline, not on the order they were written", "[kv]") {
  const auto digest = [](Kv& kv) {
    const std::string reply = kv.send(encode({"DEBUG", "DIGEST"}));
    REQUIRE(reply.size() == 43);  // +<40 hex digits>\r\n
    return reply.substr(1, 40);
  };
  Kv a, b;
  CHECK(digest(a) == std::string(40, '0'));  // empty, as Redis says it
  const std::vector<std::vector<std::string>> writes = {
      {"SET", "s", "v"}, {"RPUSH", "l", "1", "2", "3"}, {"SADD", "set", "x", "y", "z"},
      {"HSET", "h", "f1", "a", "f2", "b"}, {"SET", "t", "1", "PXAT", "99999999999999"}};
  for (const auto& w : writes) REQUIRE(a.send(encode(w))[0] != '-');
  for (auto w = writes.rbegin(); w != writes.rend(); ++w) REQUIRE(b.send(encode(*w))[0] != '-');
  CHECK(b.send(encode({"SADD", "set", "z"})) == ":0\r\n");
  const std::string same = digest(a);
  CHECK(digest(b) == same);
  CHECK(same != std::string(40, '0'));
  // Each change shows, and undoing it brings the digest back.
  const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> changes = {
      {{"SET", "s", "w"}, {"SET", "s", "v"}},
      {{"PEXPIREAT", "t", "99999999999998"}, {"PEXPIREAT", "t", "99999999999999"}},
      {{"SREM", "set", "y"}, {"SADD", "set", "y"}},
      {{"HSET", "h", "f1", "b"}, {"HSET", "h", "f1", "a"}},
      {{"DEL", "l"}, {"RPUSH", "l", "1", "2", "3"}},
  };
  for (const auto& [change, undo] : changes) {
    INFO(change[0] << " " << change[1]);
    REQUIRE(b.send(encode(change))[0] != '-');
    CHECK(digest(b) != same);
    REQUIRE(b.send(encode(undo))[0] != '-');
    CHECK(digest(b) == same);
  }
  // A list's order counts; a key's name counts.
  REQUIRE(b.send(encode({"DEL", "l"})) == ":1\r\n");
  REQUIRE(b.send(encode({"RPUSH", "l", "1", "3", "2"})) == ":3\r\n");
  CHECK(digest(b) != same);
  CHECK(a.send(encode({"DEBUG", "SLEEP", "1"})) == "-ERR unknown subcommand 'SLEEP'. Try DEBUG HELP.\r\n");
  CHECK(a.send(encode({"DEBUG", "DIGEST", "x"})) == "-ERR wrong number of arguments for 'debug|digest' command\r\n");
}

TEST_CASE("microbenchmark: a million pipelined GETs and SETs through kv::Server", "[.bench]") {
  Kv kv;
  const std::string value(16, 'v');
  for (const std::string what : {"GET", "SET"}) {
    const std::string one = what == "GET" ? encode({"GET", "key:000001"}) : encode({"SET", "key:000001", value});
    std::string input;
    for (int i = 0; i < 1000000; ++i) input += one;
    kv.send(encode({"SET", "key:000001", value}));
    FakeOutput out;
    out.bytes.reserve(64u << 20);
    double best = 1e9;
    for (int round = 0; round < 5; ++round) {
      const double start = thread_cpu_seconds();
      for (std::size_t begin = 0, end = 0; begin < input.size();) {  // 16 KiB reads, as the host's
        end = std::min(input.size(), end + 16384);
        begin += kv.process(std::string_view(input).substr(begin, end - begin), out);
        if (out.bytes.size() > (32u << 20)) out.bytes.clear();
      }
      best = std::min(best, thread_cpu_seconds() - start);
    }
    WARN(what << ": " << best * 1e3 << " ns per command (best of 5 x 1M)");
  }
}
