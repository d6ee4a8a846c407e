// RESP2 framing: reading commands (multibulk or inline) and writing replies.
// Parsing allocates nothing: arguments are views into the connection's input.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kv {

struct ParseLimits {
  std::size_t max_bulk_bytes = 512u << 20;  ///< Redis's proto-max-bulk-len
  std::size_t max_inline_bytes = 64u << 10;
  std::size_t max_args = 1024u * 1024u;
};

enum class Parse { Complete, Incomplete, Error };

struct ParseResult {
  Parse status = Parse::Incomplete;
  std::size_t consumed = 0;  ///< bytes of the command (Complete), or 0
  std::string_view error;    ///< Redis's wording, without "ERR " (Error)
  char unexpected = 0;       ///< for "expected '$', got 'X'"
};

/// Reads one command from the front of `input` into `args` (cleared first;
/// views into `input`). An empty command (blank inline line, "*0") is
/// Complete with no args.
ParseResult parse_command(std::string_view input, std::vector<std::string_view>& args, const ParseLimits& limits);

/// Redis's string2ll: an optional '-', no leading zeros, no '+', no spaces,
/// fits in 64 bits.
std::optional<std::int64_t> parse_int(std::string_view text);

/// Appends RESP2 replies to a buffer the connection reuses.
class Reply {
 public:
  explicit Reply(std::string& out) : out_(out) {}

  void simple(std::string_view text) { line('+', text); }
  void error(std::string_view text) { line('-', text); }  ///< text starts with the code: "ERR ...", "WRONGTYPE ..."
  void integer(std::int64_t value) { number(':', value); }
  void bulk(std::string_view data) {
    number('$', static_cast<std::int64_t>(data.size()));
    out_.append(data);
    out_.append("\r\n");
  }
  void null() { out_.append("$-1\r\n"); }
  void null_array() { out_.append("*-1\r\n"); }
  void array(std::size_t count) { number('*', static_cast<std::int64_t>(count)); }
  void ok() { out_.append("+OK\r\n"); }

  void wrong_type() { error("WRONGTYPE Operation against a key holding the wrong kind of value"); }
  void not_integer() { error("ERR value is not an integer or out of range"); }
  void syntax_error() { error("ERR syntax error"); }

 private:
  void line(char kind, std::string_view text) {
    out_ += kind;
    out_.append(text);
    out_.append("\r\n");
  }
  void number(char kind, std::int64_t value) {
    char digits[24];
    const auto end = std::to_chars(digits, digits + sizeof digits, value).ptr;
    out_ += kind;
    out_.append(digits, static_cast<std::size_t>(end - digits));
    out_.append("\r\n");
  }

  std::string& out_;
};

}  // namespace kv
