// kv's RESP framing, on its own: every way a frame can be whole, partial or
// malformed, at every boundary Redis 7 draws (each expectation here was
// checked against redis-server 7.0.15: what it answers, whether it closes).
// Replies through the real server are compared in tests/integration/kv_test.cpp.
#include <climits>

#include <catch2/catch.hpp>

#include "../../plugins/kv/common/resp.hpp"

using kv::Parse;
using kv::ProtocolError;

namespace {

std::vector<std::string> strings(kv::ArgList args) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < args.size(); ++i) out.emplace_back(args[i]);
  return out;
}

/// One command parsed from the front of an input, as a test sees it.
struct Parsed {
  Parse status = Parse::Incomplete;
  std::size_t size = 0;  ///< bytes it took (Complete)
  std::vector<std::string> args;
  ProtocolError error = ProtocolError::None;
  char error_byte = 0;
};

/// Parses `input` whole, with a fresh parser.
Parsed parse(std::string_view input, kv::ParseLimits limits = {}) {
  kv::CommandParser parser;
  std::string arena;
  Parsed out;
  out.status = parser.parse(input, limits, arena);
  out.error = parser.error();
  out.error_byte = parser.error_byte();
  if (out.status == Parse::Complete) {
    out.size = parser.size();
    out.args = strings(parser.args(input, arena));
  }
  return out;
}

/// Parses `input` the way it arrives over `cuts` reads: the parser is called
/// with each longer prefix, as the host does, and must resume.
Parsed parse_sliced(std::string_view input, const std::vector<std::size_t>& cuts, kv::ParseLimits limits = {}) {
  kv::CommandParser parser;
  std::string arena;
  Parsed out;
  for (const std::size_t cut : cuts) {
    out.status = parser.parse(input.substr(0, cut), limits, arena);
    if (out.status != Parse::Incomplete) break;
  }
  if (out.status == Parse::Incomplete) out.status = parser.parse(input, limits, arena);
  out.error = parser.error();
  out.error_byte = parser.error_byte();
  if (out.status == Parse::Complete) {
    out.size = parser.size();
    out.args = strings(parser.args(input, arena));
  }
  return out;
}

std::string bulk(std::string_view data) { return "$" + std::to_string(data.size()) + "\r\n" + std::string(data) + "\r\n"; }

using Args = std::vector<std::string>;

}  // namespace

TEST_CASE("a multibulk command is read whole, its arguments found by offset in the input", "[resp]") {
  const std::string frame = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n*1\r\n$4\r\nPING\r\n";
  kv::CommandParser parser;
  std::string arena;
  REQUIRE(parser.parse(frame, {}, arena) == Parse::Complete);
  CHECK(parser.size() == frame.find("*1"));
  CHECK_FALSE(parser.in_arena());
  const kv::ArgList args = parser.args(frame, arena);
  CHECK(strings(args) == Args{"SET", "k", ""});
  CHECK(args[0].data() == frame.data() + 8);  // a view of the input, not a copy
  CHECK(arena.empty());
}

TEST_CASE("a frame cut anywhere is incomplete, never an error, and reads on to the same command", "[resp]") {
  const std::string frame = "*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
  for (std::size_t cut = 0; cut < frame.size(); ++cut) {
    INFO("cut at " << cut);
    CHECK(parse(std::string_view(frame).substr(0, cut)).status == Parse::Incomplete);
  }
  std::vector<std::size_t> every_byte;
  for (std::size_t cut = 0; cut < frame.size(); ++cut) every_byte.push_back(cut);
  const Parsed sliced = parse_sliced(frame, every_byte);
  CHECK(sliced.status == Parse::Complete);
  CHECK(sliced.size == frame.size());
  CHECK(sliced.args == Args{"GET", "0123456789"});
}

TEST_CASE("a parser resumes where it stopped, even when the host's buffer moved", "[resp]") {
  const std::string frame = "*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n";
  kv::CommandParser parser;
  std::string arena;
  std::string first(frame.substr(0, 20));
  REQUIRE(parser.parse(first, {}, arena) == Parse::Incomplete);
  first.clear();
  first.shrink_to_fit();  // the bytes now live elsewhere: offsets, not pointers, were kept
  const std::string moved = frame;
  REQUIRE(parser.parse(moved, {}, arena) == Parse::Complete);
  CHECK(strings(parser.args(moved, arena)) == Args{"ECHO", "hello"});
}

TEST_CASE("multibulk counts: up to INT_MAX, and non-positive ones are empty commands, as in Redis", "[resp]") {
  const auto [input, status, error] = GENERATE(table<std::string, Parse, ProtocolError>({
      {"*0\r\n", Parse::Complete, ProtocolError::None},
      {"*-1\r\n", Parse::Complete, ProtocolError::None},
      {"*-5\r\n", Parse::Complete, ProtocolError::None},
      // LLONG_MIN: Redis 7.0.15 takes it as an empty command (and answers a
      // PING after it); read without negating INT64_MIN.
      {"*-9223372036854775808\r\n", Parse::Complete, ProtocolError::None},
      {"*2147483647\r\n", Parse::Incomplete, ProtocolError::None},  // INT_MAX: waits for its arguments
      {"*2147483648\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},  // INT_MAX + 1
      {"*1000000000000000000\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},  // 19 digits
      {"*9223372036854775807\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},  // LLONG_MAX
      {"*9223372036854775808\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},  // LLONG_MAX + 1
      {"*9999999999999999999\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},  // fits 64 bits unsigned
      {"*99999999999999999999\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},  // 20 digits
      {"*-9223372036854775809\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},  // below LLONG_MIN
      {"*01\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},  // leading zero
      {"*00\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},
      {"*-0\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},
      {"*+1\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},
      {"*\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},
      {"*-\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},
      {"*1 \r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},
      {"* 1\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},
      {"*x\r\n", Parse::Error, ProtocolError::InvalidMultibulkLength},
      {"*1\r", Parse::Incomplete, ProtocolError::None},  // the byte after '\r' must arrive first
      {"*1\x00\r\n$4\r\nPING\r\n", Parse::Incomplete, ProtocolError::None},  // a NUL hides the line's end (strchr)
  }));
  INFO(input);
  const Parsed r = parse(input);
  CHECK(r.status == status);
  CHECK(r.error == error);
  if (status == Parse::Complete) {
    CHECK(r.args.empty());
    CHECK(r.size == input.size());
  }
}

TEST_CASE("a declared count reserves nothing: memory follows the arguments that arrived", "[resp]") {
  kv::CommandParser parser;
  std::string arena;
  const std::string frame = "*2147483647\r\n" + bulk("DEL") + bulk("k");
  REQUIRE(parser.parse(frame, {}, arena) == Parse::Incomplete);
  CHECK(parser.spans().size() == 2);  // kept as they arrive, in a vector grown by what arrived
}

TEST_CASE("a command of 1,048,577 arguments is read: kv has no cap of its own", "[resp]") {
  std::string frame = "*1048577\r\n" + bulk("DEL");
  frame.reserve(frame.size() + 1048576 * 7);
  for (int i = 0; i < 1048576; ++i) frame += "$1\r\nk\r\n";
  const Parsed r = parse(frame);
  REQUIRE(r.status == Parse::Complete);
  CHECK(r.args.size() == 1048577);
  CHECK(r.size == frame.size());
}

TEST_CASE("bulk lengths: 0 up to max_bulk_bytes, nothing else", "[resp]") {
  kv::ParseLimits limits;
  limits.max_bulk_bytes = 100;
  const auto [header, error] = GENERATE(table<std::string, ProtocolError>({
      {"$0", ProtocolError::None},
      {"$100", ProtocolError::None},  // max_bulk_bytes itself
      {"$101", ProtocolError::InvalidBulkLength},  // one more: refused at the header, before the data
      {"$-1", ProtocolError::InvalidBulkLength},
      {"$-0", ProtocolError::InvalidBulkLength},
      {"$03", ProtocolError::InvalidBulkLength},
      {"$00", ProtocolError::InvalidBulkLength},
      {"$+3", ProtocolError::InvalidBulkLength},
      {"$", ProtocolError::InvalidBulkLength},
      {"$3x", ProtocolError::InvalidBulkLength},
      {"$ 3", ProtocolError::InvalidBulkLength},
      {"$-9223372036854775808", ProtocolError::InvalidBulkLength},  // LLONG_MIN
      {"$9223372036854775807", ProtocolError::InvalidBulkLength},   // LLONG_MAX, over the limit
      {"$9223372036854775808", ProtocolError::InvalidBulkLength},   // overflow
      {"$99999999999999999999", ProtocolError::InvalidBulkLength},  // 20 digits
  }));
  INFO(header);
  const Parsed r = parse("*1\r\n" + header + "\r\n", limits);
  if (error == ProtocolError::None) {
    CHECK(r.status == Parse::Incomplete);  // waits for the data
  } else {
    CHECK(r.status == Parse::Error);
    CHECK(r.error == error);
  }
}

TEST_CASE("the default bulk limit is proto-max-bulk-len's 512 MiB", "[resp]") {
  CHECK(parse("*1\r\n$536870912\r\n").status == Parse::Incomplete);
  CHECK(parse("*1\r\n$536870913\r\n").error == ProtocolError::InvalidBulkLength);
}

TEST_CASE("an argument not starting with '$' is refused once its line is there, naming the byte", "[resp]") {
  CHECK(parse("*1\r\nX").status == Parse::Incomplete);  // Redis waits for the line first
  const Parsed r = parse("*1\r\n+OK\r\n");
  CHECK(r.status == Parse::Error);
  CHECK(r.error == ProtocolError::ExpectedDollar);
  CHECK(r.error_byte == '+');
  CHECK(parse("*1\r\n\r\nxx").error_byte == '\r');
  CHECK(std::string(kv::message(ProtocolError::ExpectedDollar)) == "Protocol error: expected '$', got ");
}

TEST_CASE("the byte after a header's '\\r' and the two after a bulk are skipped unread, as Redis does", "[resp]") {
  const Parsed r = parse("*1\rX$4\rXPINGab*1\r\n");
  REQUIRE(r.status == Parse::Complete);
  CHECK(r.args == Args{"PING"});
  CHECK(r.size == std::string_view("*1\rX$4\rXPINGab").size());
}

TEST_CASE("a header or inline line gets 64 KiB to end (PROTO_INLINE_MAX_SIZE)", "[resp]") {
  const std::size_t max = kv::kMaxLineBytes;
  REQUIRE(max == 65536);
  SECTION("multibulk count") {
    CHECK(parse("*" + std::string(max - 1, '1')).status == Parse::Incomplete);  // 64 KiB buffered: still waits
    CHECK(parse("*" + std::string(max, '1')).error == ProtocolError::TooBigMultibulkCount);  // one byte more
    // Its '\r' within the first 64 KiB + 1: the line ends; an invalid number.
    CHECK(parse("*" + std::string(max - 1, '1') + "\r\n").error == ProtocolError::InvalidMultibulkLength);
    CHECK(parse("*" + std::string(max - 1, '1') + "\r").status == Parse::Incomplete);
    CHECK(parse("*1\x00" + std::string(max, '1')).error == ProtocolError::TooBigMultibulkCount);  // NUL: never ends
  }
  SECTION("bulk count") {
    CHECK(parse("*1\r\n$" + std::string(max - 1, '1')).status == Parse::Incomplete);
    CHECK(parse("*1\r\n$" + std::string(max, '1')).error == ProtocolError::TooBigBulkCount);
    CHECK(parse("*1\r\n$" + std::string(max - 1, '1') + "\r\n").error == ProtocolError::InvalidBulkLength);
    CHECK(parse("*1\r\nX" + std::string(max, '1')).error == ProtocolError::TooBigBulkCount);  // before "expected '$'"
  }
  SECTION("inline") {
    CHECK(parse(std::string(max, 'a')).status == Parse::Incomplete);
    CHECK(parse(std::string(max + 1, 'a')).error == ProtocolError::TooBigInline);
    const Parsed whole = parse(std::string(max, 'a') + "\n");
    REQUIRE(whole.status == Parse::Complete);
    CHECK(whole.args == Args{std::string(max, 'a')});
    CHECK(parse("PING a\x00" "b\r\n").status == Parse::Incomplete);  // a NUL hides the newline, as strchr does
    CHECK(parse("PING a\x00" + std::string(max, 'b') + "\r\n").error == ProtocolError::TooBigInline);
  }
  SECTION("a line sliced into bytes gets the same answer, scanned once") {
    const std::string line = "*" + std::string(max, '1');
    std::vector<std::size_t> cuts;
    for (std::size_t cut = 1; cut < line.size(); ++cut) cuts.push_back(cut);
    CHECK(parse_sliced(line, cuts).error == ProtocolError::TooBigMultibulkCount);
  }
}

TEST_CASE("inline commands split like Redis's sdssplitargs", "[resp][inline]") {
  const auto [line, args] = GENERATE(table<std::string, Args>({
      {"  SET  key value\r\n", {"SET", "key", "value"}},
      {"PING\n", {"PING"}},
      {"ECHO \"a\\x41\\n\\r\\t\\b\\a\\\\\\\"z\"\r\n", {"ECHO", "aA\n\r\t\b\a\\\"z"}},
      {"ECHO 'a\\'b\\n'\r\n", {"ECHO", "a'b\\n"}},  // only \' is an escape in single quotes
      {"ECHO \"\"\r\n", {"ECHO", ""}},
      {"\"\" a\r\n", {"", "a"}},
      {"ECHO a\"b\"\r\n", {"ECHO", "ab"}},  // a quote may open mid-word
      {"ECHO \"a\"\vb\r\n", {"ECHO", "a", "b"}},  // \v is a blank after a quote...
      {"ECHO a\vb\r\n", {"ECHO", "a\vb"}},  // ...but does not end a bare word
      {"\v\fECHO a\r\n", {"ECHO", "a"}},
      {"ECHO \"\\xZZ\" \"\\x4\" \"\\q\"\r\n", {"ECHO", "xZZ", "x4", "q"}},
      {"ECHO \"\\xff\\x00\"\r\n", {"ECHO", std::string("\xff\x00", 2)}},
      {"ECHO a\r\r\n", {"ECHO", "a"}},
      {"ECHO a\rb\r\n", {"ECHO", "a", "b"}},
      {"ECHO \xff\xfe\r\n", {"ECHO", "\xff\xfe"}},
      {"\r\n", {}},
      {"\n", {}},
      {"   \t \r\n", {}},
  }));
  INFO(line);
  const Parsed r = parse(line);
  REQUIRE(r.status == Parse::Complete);
  CHECK(r.args == args);
  CHECK(r.size == line.size());
}

TEST_CASE("inline quotes that do not close, or close mid-word, are a protocol error", "[resp][inline]") {
  for (const std::string line : {"ECHO \"a\"b\r\n", "ECHO 'a'b\r\n", "ECHO \"abc\r\n", "ECHO 'abc\r\n",
                                 "ECHO \"a\\\r\n", "\"\r\n", "ECHO '\\'\r\n"}) {
    INFO(line);
    const Parsed r = parse(line);
    CHECK(r.status == Parse::Error);
    CHECK(r.error == ProtocolError::UnbalancedQuotes);
  }
  CHECK(std::string(kv::message(ProtocolError::UnbalancedQuotes)) == "Protocol error: unbalanced quotes in request");
}

TEST_CASE("inline arguments live in the arena, escapes decoded", "[resp][inline]") {
  kv::CommandParser parser;
  std::string arena = "kept";
  const std::string line = "SET \"k\\x20\" v\r\n";
  REQUIRE(parser.parse(line, {}, arena) == Parse::Complete);
  CHECK(parser.in_arena());
  CHECK(arena == "keptSETk v");  // appended after what was there
  CHECK(strings(parser.args(line, arena)) == Args{"SET", "k ", "v"});
}

TEST_CASE("after reset() the parser reads the next command from scratch", "[resp]") {
  kv::CommandParser parser;
  std::string arena;
  const std::string frames = "*1\r\n$4\r\nPING\r\nPING\r\n";
  REQUIRE(parser.parse(frames, {}, arena) == Parse::Complete);
  CHECK_FALSE(parser.idle());
  CHECK(parser.parse(frames, {}, arena) == Parse::Complete);  // done stays done until reset
  const std::size_t first = parser.size();
  parser.reset();
  CHECK(parser.idle());
  REQUIRE(parser.parse(std::string_view(frames).substr(first), {}, arena) == Parse::Complete);
  CHECK(parser.in_arena());
}

TEST_CASE("parse_int follows Redis's string2ll", "[resp]") {
  CHECK(kv::parse_int("0") == 0);
  CHECK(kv::parse_int("-42") == -42);
  CHECK(kv::parse_int("9223372036854775807") == INT64_MAX);
  CHECK(kv::parse_int("-9223372036854775808") == INT64_MIN);
  for (const char* bad : {"", "01", "-0", "+1", " 1", "1 ", "9223372036854775808", "-9223372036854775809", "1e3", "-",
                          "18446744073709551616", "99999999999999999999"})
    CHECK_FALSE(kv::parse_int(bad).has_value());
}

TEST_CASE("c_string takes what C's %.*s would: up to a NUL, at most max bytes", "[resp]") {
  CHECK(kv::c_string("abc") == "abc");
  CHECK(kv::c_string(std::string_view("a\0b", 3)) == "a");
  CHECK(kv::c_string("abcdef", 3) == "abc");
  CHECK(kv::c_string(std::string_view("ab\0cd", 5), 4) == "ab");
}
