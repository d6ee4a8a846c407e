// RESP2 framing: reading commands (multibulk or inline) and writing replies.
//
// What is accepted and refused, and the error each refusal gets, is Redis
// 7's (networking.c: processMultibulkBuffer, processInlineBuffer,
// sdssplitargs), checked byte for byte against a real redis-server by
// tests/integration/kv_test.cpp and tests/hostile/kv_protocol_test.cpp.
// docs/kv.md lists the limits.
#pragma once

#include <charconv>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "molt/stream.hpp"

namespace kv {

/// Redis's PROTO_INLINE_MAX_SIZE: the most bytes a line may take before its
/// end arrives (an inline command, or a "*N" / "$N" header line).
inline constexpr std::size_t kMaxLineBytes = 64u << 10;

struct ParseLimits {
  /// Largest bulk string accepted: Redis's proto-max-bulk-len, reduced by
  /// limits_from() to what the host can buffer.
  std::size_t max_bulk_bytes = 512u << 20;
  /// PROTO_INLINE_MAX_SIZE; smaller only in tests (the fuzzer reaches it).
  std::size_t max_line_bytes = kMaxLineBytes;
};

enum class Parse { Complete, Incomplete, Error };

/// Why a command was refused; each closes the connection, as in Redis.
enum class ProtocolError : std::uint8_t {
  None,
  InvalidMultibulkLength,  ///< "*N": not a number, or over INT_MAX
  InvalidBulkLength,       ///< "$N": not a number, negative, or over max_bulk_bytes
  ExpectedDollar,          ///< an argument not starting with '$' (error_byte() says what it was)
  TooBigMultibulkCount,    ///< no end of the "*N" line within max_line_bytes
  TooBigBulkCount,         ///< no end of a "$N" line within max_line_bytes
  TooBigInline,            ///< no end of an inline command within max_line_bytes
  UnbalancedQuotes,        ///< an inline command's quotes do not close (or close mid-word)
};

/// Redis's words for `error` (after "ERR "); for ExpectedDollar, the text
/// before the quoted byte.
std::string_view message(ProtocolError error);

/// Where one argument of a parsed command lies: from the command's first
/// byte in the input (multibulk), or in the arena (inline). Offsets, not
/// views: the host's buffer may move between calls.
struct ArgSpan {
  std::size_t offset = 0;
  std::size_t size = 0;
};

/// The arguments of a parsed command, seen as string_views of the bytes
/// they lie in. Valid while those bytes and the parser's offsets are.
class ArgList {
 public:
  ArgList() = default;
  ArgList(const char* base, std::span<const ArgSpan> spans) : base_(base), spans_(spans) {}
  [[nodiscard]] std::size_t size() const noexcept { return spans_.size(); }
  [[nodiscard]] bool empty() const noexcept { return spans_.empty(); }
  std::string_view operator[](std::size_t i) const noexcept { return {base_ + spans_[i].offset, spans_[i].size}; }

 private:
  const char* base_ = nullptr;
  std::span<const ArgSpan> spans_;
};

/// Reads one command from the front of a connection's input, resuming where
/// the previous call stopped: a command that arrives in many pieces costs
/// the same as one that arrives whole. Precondition of every call until the
/// command is done (Complete or Error): `input` starts at the command's
/// first byte and begins with everything passed before, unchanged (the
/// host's guarantee for on_data). Reserves nothing by a declared count:
/// memory follows the bytes that arrived.
class CommandParser {
 public:
  /// Reads on. Complete: the command took size() bytes, its arguments are
  /// args() (none for an empty command: "*0", "*-1", a blank line).
  /// Incomplete: call again with more input. Error: error() says why; the
  /// connection must be closed. Inline arguments (escapes decoded) are
  /// appended to `arena`, which must be left alone until the arguments are
  /// used.
  Parse parse(std::string_view input, const ParseLimits& limits, std::string& arena);

  /// Bytes of the input the command took (after Complete).
  [[nodiscard]] std::size_t size() const noexcept { return pos_; }
  [[nodiscard]] std::span<const ArgSpan> spans() const noexcept { return args_; }
  /// Whether args() lie in the arena (an inline command) or in the input.
  [[nodiscard]] bool in_arena() const noexcept { return inline_; }
  [[nodiscard]] ProtocolError error() const noexcept { return error_; }
  /// The byte found instead of '$' (ProtocolError::ExpectedDollar).
  [[nodiscard]] char error_byte() const noexcept { return error_byte_; }

  /// The arguments of a Complete command, in `input` (as passed to the
  /// call that completed it) or `arena`; valid until reset().
  [[nodiscard]] ArgList args(std::string_view input, std::string_view arena) const noexcept {
    return ArgList(inline_ ? arena.data() : input.data(), args_);
  }

  /// Forgets the command, for the next one.
  void reset() noexcept;
  /// Whether nothing of a command has been read yet.
  [[nodiscard]] bool idle() const noexcept { return stage_ == Stage::Start; }

 private:
  enum class Stage : std::uint8_t { Start, Count, Header, Data, Inline, Done, Failed };
  enum class Line : std::uint8_t { Found, Incomplete, TooLong };

  Line find_line(std::string_view input, char end, std::size_t max, std::size_t& found);
  Parse fail(ProtocolError error) noexcept;
  Parse split_inline(std::string_view line, std::string& arena);

  Stage stage_ = Stage::Start;
  bool inline_ = false;
  ProtocolError error_ = ProtocolError::None;
  char error_byte_ = 0;
  std::size_t pos_ = 0;   ///< bytes of the command read (the start of the line or bulk being read)
  std::size_t scan_ = 0;  ///< the line starting at pos_ holds no end before this offset
  std::uint64_t missing_ = 0;  ///< arguments announced and not read yet (<= INT_MAX)
  std::uint64_t bulk_ = 0;     ///< length of the bulk being read (Stage::Data)
  std::vector<ArgSpan> args_;
};

/// Redis's string2ll: an optional '-', no leading zeros, no '+', no spaces,
/// fits in 64 bits.
std::optional<std::int64_t> parse_int(std::string_view text);

/// What C's "%.*s" takes of a client's argument, as Redis prints it in its
/// error messages: the bytes before the first NUL, at most `max`.
inline std::string_view c_string(std::string_view arg, std::size_t max = std::string_view::npos) {
  arg = arg.substr(0, max);
  return arg.substr(0, arg.find('\0'));
}

/// Writes RESP2 replies straight to the connection's output.
class Reply {
 public:
  explicit Reply(molt::api::StreamOutput& out) : out_(out) {}

  /// "+text": the server's own words only (PONG, a type name), never a client's.
  void simple(std::string_view text);
  /// An error line from `parts` (joined), starting with the code: "ERR ...",
  /// "WRONGTYPE ...". The one writer of error lines: like Redis's
  /// addReplyErrorFormat it ends the line at the first NUL, trims CR and LF
  /// at both ends and turns the others into spaces, so no client bytes
  /// quoted in a message can end the line early and forge the next reply.
  /// Quote a client's argument through c_string(), as Redis's "%s" does.
  void error(std::span<const std::string_view> parts);
  void error(std::initializer_list<std::string_view> parts) { error(std::span(parts.begin(), parts.size())); }
  void error(std::string_view text) { error({text}); }
  void integer(std::int64_t value) { number(':', value); }
  void bulk(std::string_view data);
  void null() { out_.write("$-1\r\n"); }
  void null_array() { out_.write("*-1\r\n"); }
  void array(std::size_t count) { number('*', static_cast<std::int64_t>(count)); }
  void ok() { out_.write("+OK\r\n"); }

  void wrong_type() { error("WRONGTYPE Operation against a key holding the wrong kind of value"); }
  void not_integer() { error("ERR value is not an integer or out of range"); }
  void syntax_error() { error("ERR syntax error"); }

 private:
  void number(char kind, std::int64_t value) {
    char line[24];
    line[0] = kind;
    char* end = std::to_chars(line + 1, line + sizeof line - 2, value).ptr;
    *end++ = '\r';
    *end++ = '\n';
    out_.write(std::string_view(line, static_cast<std::size_t>(end - line)));
  }

  molt::api::StreamOutput& out_;
};

}  // namespace kv
