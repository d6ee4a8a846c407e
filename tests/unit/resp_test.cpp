// kv's RESP framing, on its own: every way a frame can be whole, partial or
// malformed. (Replies are compared with redis-server in the integration tests.)
#include <catch2/catch.hpp>

#include "../../plugins/kv/common/resp.hpp"

using kv::Parse;

namespace {
kv::ParseResult parse(std::string_view input, std::vector<std::string_view>& args, kv::ParseLimits limits = {}) {
  return kv::parse_command(input, args, limits);
}
}  // namespace

TEST_CASE("a multibulk command is read whole, its arguments viewing the input", "[resp]") {
  std::vector<std::string_view> args;
  const std::string frame = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n";
  const auto r = parse(frame, args);
  REQUIRE(r.status == Parse::Complete);
  CHECK(r.consumed == frame.find("*1"));
  CHECK(args == std::vector<std::string_view>{"SET", "k", ""});
  CHECK(args[0].data() == frame.data() + 8);  // a view, not a copy
}

TEST_CASE("a frame cut anywhere is incomplete, never an error", "[resp]") {
  const std::string frame = "*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
  std::vector<std::string_view> args;
  for (std::size_t cut = 0; cut < frame.size(); ++cut) {
    INFO("cut at " << cut);
    CHECK(parse(std::string_view(frame).substr(0, cut), args).status == Parse::Incomplete);
  }
  CHECK(parse(frame, args).status == Parse::Complete);
}

TEST_CASE("malformed lengths are protocol errors in Redis's words", "[resp]") {
  std::vector<std::string_view> args;
  const auto [input, message] = GENERATE(table<std::string, std::string>({
      {"*x\r\n", "Protocol error: invalid multibulk length"},
      {"*01\r\n", "Protocol error: invalid multibulk length"},
      {"*99999999999999999999\r\n", "Protocol error: invalid multibulk length"},
      {"*2000000\r\n", "Protocol error: invalid multibulk length"},
      {"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"},
      {"*1\r\n$03\r\nabc\r\n", "Protocol error: invalid bulk length"},
      {"*1\r\n$3x\r\nabc\r\n", "Protocol error: invalid bulk length"},
      {"*1\r\n$1000\r\n", "Protocol error: invalid bulk length"},  // over the limit below, before the data
      {"*1\r\n+OK\r\n", "Protocol error: expected '$', got "},
  }));
  kv::ParseLimits limits;
  limits.max_bulk_bytes = 100;
  const auto r = parse(input, args, limits);
  INFO(input);
  CHECK(r.status == Parse::Error);
  CHECK(r.error == message);
}

TEST_CASE("inline commands split on spaces, and empty commands are skipped", "[resp]") {
  std::vector<std::string_view> args;
  auto r = parse("  SET  key value\r\nPING\n", args);
  REQUIRE(r.status == Parse::Complete);
  CHECK(args == std::vector<std::string_view>{"SET", "key", "value"});
  CHECK(r.consumed == std::string_view("  SET  key value\r\n").size());
  r = parse("\r\n", args);
  CHECK(r.status == Parse::Complete);
  CHECK(args.empty());
  r = parse("*0\r\n", args);
  CHECK(r.status == Parse::Complete);
  CHECK(args.empty());
  CHECK(parse(std::string(70000, 'a'), args).status == Parse::Error);  // an endless inline line
}

TEST_CASE("parse_int follows Redis's string2ll", "[resp]") {
  CHECK(kv::parse_int("0") == 0);
  CHECK(kv::parse_int("-42") == -42);
  CHECK(kv::parse_int("9223372036854775807") == INT64_MAX);
  CHECK(kv::parse_int("-9223372036854775808") == INT64_MIN);
  for (const char* bad : {"", "01", "-0", "+1", " 1", "1 ", "9223372036854775808", "1e3", "-"})
    CHECK_FALSE(kv::parse_int(bad).has_value());
}
