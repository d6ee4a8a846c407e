#include "resp.hpp"

namespace kv {
namespace {

constexpr std::string_view kCrlf = "\r\n";

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

  std::size_t pos = input.find(kCrlf);
  if (pos == std::string_view::npos)
    return input.size() > limits.max_inline_bytes ? error("Protocol error: too big mbulk count string") : ParseResult{};
  const auto count = parse_int(input.substr(1, pos - 1));
  if (!count || *count > static_cast<std::int64_t>(limits.max_args)) return error("Protocol error: invalid multibulk length");
  pos += 2;
  if (*count <= 0) return ParseResult{Parse::Complete, pos, {}};
  if (args.capacity() < static_cast<std::size_t>(*count) && *count <= 1024) args.reserve(static_cast<std::size_t>(*count));

  for (std::int64_t n = 0; n < *count; ++n) {
    if (pos >= input.size()) return {};
    if (input[pos] != '$') {
      // Redis: "Protocol error: expected '$', got 'X'"; the reply is built by
      // the caller from this fixed prefix and the byte.
      ParseResult bad = error("Protocol error: expected '$', got ");
      bad.unexpected = input[pos];
      return bad;
    }
    const auto end = input.find(kCrlf, pos);
    if (end == std::string_view::npos)
      return input.size() - pos > limits.max_inline_bytes ? error("Protocol error: too big bulk count string") : ParseResult{};
    const auto length = parse_int(input.substr(pos + 1, end - pos - 1));
    if (!length || *length < 0 || static_cast<std::uint64_t>(*length) > limits.max_bulk_bytes)
      return error("Protocol error: invalid bulk length");
    pos = end + 2;
    const auto size = static_cast<std::size_t>(*length);
    if (input.size() - pos < size + 2) return {};  // the bulk has not fully arrived
    args.push_back(input.substr(pos, size));
    pos += size + 2;
  }
  return ParseResult{Parse::Complete, pos, {}};
}

}  // namespace kv
