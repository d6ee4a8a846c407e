#include "resp.hpp"

namespace kv {
namespace {

ParseResult error(std::string_view message) { return ParseResult{Parse::Error, 0, message}; }

}  // namespace

std::optional<std::int64_t> parse_int(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  if (text == "0") return 0;
  const bool negative = text.front() == '-';
  const std::string_view digits = negative ? text.substr(1) : text;
  if (digits.empty() || digits.front() < '1' || digits.front() > '9') return std::nullopt;
  std::uint64_t magnitude = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    if (magnitude > (UINT64_MAX - static_cast<std::uint64_t>(c - '0')) / 10) return std::nullopt;
    magnitude = magnitude * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (negative) {
    if (magnitude > static_cast<std::uint64_t>(INT64_MAX) + 1) return std::nullopt;
    return static_cast<std::int64_t>(0 - magnitude);
  }
  if (magnitude > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
  return static_cast<std::int64_t>(magnitude);
}

namespace {

enum class Number { Ok, Incomplete, Invalid };

/// Reads the decimal after a '*' or '$' at `pos` up to its "\r\n", in one
/// pass (the hot path of every command), with string2ll's rules: optional
/// '-', no leading zeros, fits in 64 bits. On Ok, `pos` is past the "\r\n".
Number read_number(std::string_view in, std::size_t& pos, std::int64_t& value) {
  std::size_t i = pos + 1;  // past the '*' or '$'
  const bool negative = i < in.size() && in[i] == '-';
  if (negative) ++i;
  const std::size_t first = i;
  std::uint64_t magnitude = 0;
  while (i < in.size() && in[i] >= '0' && in[i] <= '9') {
    if (i - first >= 19) return Number::Invalid;  // longer than any 64-bit length we accept
    magnitude = magnitude * 10 + static_cast<std::uint64_t>(in[i] - '0');
    ++i;
  }
  if (i + 1 >= in.size()) return i - pos > 32 ? Number::Invalid : Number::Incomplete;
  const std::size_t digits = i - first;
  if (in[i] != '\r' || in[i + 1] != '\n' || digits == 0 || (in[first] == '0' && (digits > 1 || negative)))
    return Number::Invalid;
  value = negative ? -static_cast<std::int64_t>(magnitude) : static_cast<std::int64_t>(magnitude);
  pos = i + 2;
  return Number::Ok;
}

}  // namespace

ParseResult parse_command(std::string_view input, std::vector<std::string_view>& args, const ParseLimits& limits) {
  args.clear();
  if (input.empty()) return {};

  if (input.front() != '*') {  // inline command: one line, words separated by spaces
    const auto newline = input.find('\n');
    if (newline == std::string_view::npos)
      return input.size() > limits.max_inline_bytes ? error("Protocol error: too big inline request") : ParseResult{};
    std::string_view line = input.substr(0, newline);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    std::size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      const std::size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
      if (i > start) args.push_back(line.substr(start, i - start));
    }
    return ParseResult{Parse::Complete, newline + 1, {}};
  }

  std::size_t pos = 0;
  std::int64_t count = 0;
  switch (read_number(input, pos, count)) {
    case Number::Incomplete: return {};
    case Number::Invalid: return error("Protocol error: invalid multibulk length");
    case Number::Ok: break;
  }
  if (count > static_cast<std::int64_t>(limits.max_args)) return error("Protocol error: invalid multibulk length");
  if (count <= 0) return ParseResult{Parse::Complete, pos, {}};
  if (args.capacity() < static_cast<std::size_t>(count) && count <= 1024) args.reserve(static_cast<std::size_t>(count));

  for (std::int64_t n = 0; n < count; ++n) {
    if (pos >= input.size()) return {};
    if (input[pos] != '$') {
      ParseResult bad = error("Protocol error: expected '$', got ");
      bad.unexpected = input[pos];
      return bad;
    }
    std::int64_t length = 0;
    switch (read_number(input, pos, length)) {
      case Number::Incomplete: return {};
      case Number::Invalid: return error("Protocol error: invalid bulk length");
      case Number::Ok: break;
    }
    if (length < 0 || static_cast<std::uint64_t>(length) > limits.max_bulk_bytes)
      return error("Protocol error: invalid bulk length");
    const auto size = static_cast<std::size_t>(length);
    if (input.size() - pos < size + 2) return {};  // the bulk has not fully arrived
    args.push_back(input.substr(pos, size));
    pos += size + 2;
  }
  return ParseResult{Parse::Complete, pos, {}};
}

}  // namespace kv
