#include "resp.hpp"

#include <algorithm>
#include <climits>

namespace kv {

std::string_view message(ProtocolError error) {
  switch (error) {
    case ProtocolError::None: break;
    case ProtocolError::InvalidMultibulkLength: return "Protocol error: invalid multibulk length";
    case ProtocolError::InvalidBulkLength: return "Protocol error: invalid bulk length";
    case ProtocolError::ExpectedDollar: return "Protocol error: expected '$', got ";
    case ProtocolError::TooBigMultibulkCount: return "Protocol error: too big mbulk count string";
    case ProtocolError::TooBigBulkCount: return "Protocol error: too big bulk count string";
    case ProtocolError::TooBigInline: return "Protocol error: too big inline request";
    case ProtocolError::UnbalancedQuotes: return "Protocol error: unbalanced quotes in request";
  }
  return {};
}

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
    // -(magnitude - 1) - 1: INT64_MIN without negating it.
    return -static_cast<std::int64_t>(magnitude - 1) - 1;
  }
  if (magnitude > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
  return static_cast<std::int64_t>(magnitude);
}

// --- CommandParser -------------------------------------------------------------

Parse CommandParser::fail(ProtocolError error) noexcept {
  error_ = error;
  stage_ = Stage::Failed;
  return Parse::Error;
}

void CommandParser::reset() noexcept {
  stage_ = Stage::Start;
  inline_ = false;
  error_ = ProtocolError::None;
  error_byte_ = 0;
  pos_ = scan_ = 0;
  missing_ = bulk_ = 0;
  args_.clear();
  // A command of a million arguments must not pin its 16 MB of offsets to
  // the connection for good; the usual few arguments keep their capacity.
  if (args_.capacity() > 4096) std::vector<ArgSpan>().swap(args_);
}

// Redis finds a line's end with strchr, so a NUL before it hides it for
// good; and it gives up (closing the connection) once more than
// max_line_bytes are buffered without one. Read as "no end among the line's
// first max_line_bytes + 1 bytes", that answer does not depend on how the
// bytes were sliced into reads. (For an end further on, Redis's own answer
// depends on how its 16 KiB reads fell; this is what it answers when the
// bytes trickle in.)
CommandParser::Line CommandParser::find_line(std::string_view input, char end, std::size_t max, std::size_t& found) {
  const std::size_t window = std::min(input.size(), pos_ + max + 1);
  std::size_t i = std::max(scan_, pos_);
  for (; i < window; ++i) {
    const char ch = input[i];
    if (ch == end) {
      scan_ = i;
      found = i;
      return Line::Found;
    }
    if (ch == '\0') break;  // kept in scan_: the next call stops here at once
  }
  scan_ = i;
  return input.size() - pos_ > max ? Line::TooLong : Line::Incomplete;
}

namespace {

/// The usual header in one pass: at `pos` a kind byte, then 1 to 18 digits
/// without a leading zero, then '\r' (within `max` bytes, as find_line
/// wants it) and a byte after it. Sets `end` (the '\r') and `value`. False
/// for anything else, which the exact path reads.
bool quick_header(std::string_view input, std::size_t pos, std::size_t max, std::size_t& end, std::uint64_t& value) {
  const std::size_t first = pos + 1;
  const std::size_t limit = std::min(input.size(), first + 18);
  std::size_t i = first;
  std::uint64_t v = 0;
  for (; i < limit; ++i) {
    const auto digit = static_cast<unsigned char>(input[i] - '0');
    if (digit > 9) break;
    v = v * 10 + digit;
  }
  if (i == first || (input[first] == '0' && i > first + 1)) return false;
  if (i + 1 >= input.size() || input[i] != '\r' || i - pos > max) return false;
  end = i;
  value = v;
  return true;
}

}  // namespace

Parse CommandParser::parse(std::string_view input, const ParseLimits& limits, std::string& arena) {
  if (stage_ == Stage::Done) return Parse::Complete;
  if (stage_ == Stage::Failed) return Parse::Error;
  // The input shrank: not the host's promise. Start the command over rather
  // than read past the input.
  if (input.size() < std::max(pos_, scan_)) reset();
  if (stage_ == Stage::Start) {
    if (input.empty()) return Parse::Incomplete;
    inline_ = input.front() != '*';
    stage_ = inline_ ? Stage::Inline : Stage::Count;
  }

  std::size_t end = 0;
  if (stage_ == Stage::Inline) {  // one line up to '\n' ("\r\n" also ends it), split like sdssplitargs
    switch (find_line(input, '\n', limits.max_line_bytes, end)) {
      case Line::TooLong: return fail(ProtocolError::TooBigInline);
      case Line::Incomplete: return Parse::Incomplete;
      case Line::Found: break;
    }
    pos_ = end + 1;
    if (end > 0 && input[end - 1] == '\r') --end;
    return split_inline(input.substr(0, end), arena);
  }

  // A header line is "*N" or "$N" up to the first '\r'. Redis skips the byte
  // after it without looking (it is meant to be '\n'), but waits for it.
  if (stage_ == Stage::Count) {
    std::uint64_t quick = 0;
    if (scan_ <= pos_ && quick_header(input, pos_, limits.max_line_bytes, end, quick) && quick <= INT_MAX) {
      pos_ = scan_ = end + 2;
      if (quick == 0) {
        stage_ = Stage::Done;
        return Parse::Complete;
      }
      missing_ = quick;
      stage_ = Stage::Header;
    }
  }
  if (stage_ == Stage::Count) {
    switch (find_line(input, '\r', limits.max_line_bytes, end)) {
      case Line::TooLong: return fail(ProtocolError::TooBigMultibulkCount);
      case Line::Incomplete: return Parse::Incomplete;
      case Line::Found: break;
    }
    if (end + 1 >= input.size()) return Parse::Incomplete;
    const auto count = parse_int(input.substr(pos_ + 1, end - pos_ - 1));
    if (!count || *count > INT_MAX) return fail(ProtocolError::InvalidMultibulkLength);
    pos_ = scan_ = end + 2;
    if (*count <= 0) {  // "*0", "*-1", even "*-9223372036854775808": an empty command, as in Redis
      stage_ = Stage::Done;
      return Parse::Complete;
    }
    missing_ = static_cast<std::uint64_t>(*count);  // not reserved: a client may announce more than it sends
    stage_ = Stage::Header;
  }

  while (true) {
    if (stage_ == Stage::Header && scan_ <= pos_ && pos_ < input.size() && input[pos_] == '$' &&
        quick_header(input, pos_, limits.max_line_bytes, end, bulk_) && bulk_ <= limits.max_bulk_bytes) {
      pos_ = scan_ = end + 2;
      stage_ = Stage::Data;
    }
    if (stage_ == Stage::Header) {
      switch (find_line(input, '\r', limits.max_line_bytes, end)) {
        case Line::TooLong: return fail(ProtocolError::TooBigBulkCount);
        case Line::Incomplete: return Parse::Incomplete;
        case Line::Found: break;
      }
      if (end + 1 >= input.size()) return Parse::Incomplete;
      if (input[pos_] != '$') {
        error_byte_ = input[pos_];
        return fail(ProtocolError::ExpectedDollar);
      }
      const auto length = parse_int(input.substr(pos_ + 1, end - pos_ - 1));
      // Refused at its header, before any of it is buffered.
      if (!length || *length < 0 || static_cast<std::uint64_t>(*length) > limits.max_bulk_bytes)
        return fail(ProtocolError::InvalidBulkLength);
      bulk_ = static_cast<std::uint64_t>(*length);
      pos_ = scan_ = end + 2;
      stage_ = Stage::Data;
    }
    // The bulk and the two bytes after it (meant to be "\r\n", skipped unread as in Redis).
    if (input.size() - pos_ < bulk_ + 2) return Parse::Incomplete;
    args_.push_back(ArgSpan{pos_, static_cast<std::size_t>(bulk_)});
    pos_ = scan_ = pos_ + static_cast<std::size_t>(bulk_) + 2;
    if (--missing_ == 0) {
      stage_ = Stage::Done;
      return Parse::Complete;
    }
    stage_ = Stage::Header;
  }
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }
bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
int hex_value(char c) { return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10; }

}  // namespace

// sdssplitargs, step for step: words separated by blanks; "double quotes"
// with \xHH, \n, \r, \t, \b, \a and \<any> escapes; 'single quotes' with \'.
// A closing quote must be followed by a blank or the end of the line.
Parse CommandParser::split_inline(std::string_view line, std::string& arena) {
  // `line` holds no NUL (find_line stops at one); reading past its end gives
  // NUL, as the C string sdssplitargs reads does.
  const auto at = [&](std::size_t i) { return i < line.size() ? line[i] : '\0'; };
  std::size_t p = 0;
  while (true) {
    while (at(p) != '\0' && is_space(at(p))) ++p;
    if (at(p) == '\0') break;
    const std::size_t start = arena.size();
    bool in_double = false, in_single = false, done = false;
    while (!done) {
      const char c = at(p);
      if (in_double) {
        if (c == '\\' && at(p + 1) == 'x' && is_hex(at(p + 2)) && is_hex(at(p + 3))) {
          arena += static_cast<char>(hex_value(at(p + 2)) * 16 + hex_value(at(p + 3)));
          p += 3;
        } else if (c == '\\' && at(p + 1) != '\0') {
          ++p;
          switch (at(p)) {
            case 'n': arena += '\n'; break;
            case 'r': arena += '\r'; break;
            case 't': arena += '\t'; break;
            case 'b': arena += '\b'; break;
            case 'a': arena += '\a'; break;
            default: arena += at(p); break;
          }
        } else if (c == '"') {
          if (at(p + 1) != '\0' && !is_space(at(p + 1))) return fail(ProtocolError::UnbalancedQuotes);
          done = true;
        } else if (c == '\0') {
          return fail(ProtocolError::UnbalancedQuotes);
        } else {
          arena += c;
        }
      } else if (in_single) {
        if (c == '\\' && at(p + 1) == '\'') {
          ++p;
          arena += '\'';
        } else if (c == '\'') {
          if (at(p + 1) != '\0' && !is_space(at(p + 1))) return fail(ProtocolError::UnbalancedQuotes);
          done = true;
        } else if (c == '\0') {
          return fail(ProtocolError::UnbalancedQuotes);
        } else {
          arena += c;
        }
      } else {
        switch (c) {
          case ' ': case '\n': case '\r': case '\t': case '\0': done = true; break;
          case '"': in_double = true; break;
          case '\'': in_single = true; break;
          default: arena += c; break;
        }
      }
      if (at(p) != '\0') ++p;
    }
    args_.push_back(ArgSpan{start, arena.size() - start});
  }
  stage_ = Stage::Done;
  return Parse::Complete;
}

// --- Reply -----------------------------------------------------------------

void Reply::simple(std::string_view text) {
  char line[64];
  if (text.size() + 3 > sizeof line) {
    out_.write("+");
    out_.write(text);
    out_.write("\r\n");
    return;
  }
  line[0] = '+';
  char* end = std::copy(text.begin(), text.end(), line + 1);
  *end++ = '\r';
  *end++ = '\n';
  out_.write(std::string_view(line, static_cast<std::size_t>(end - line)));
}

void Reply::bulk(std::string_view data) {
  char small[256];
  small[0] = '$';
  char* end = std::to_chars(small + 1, small + 24, data.size()).ptr;
  *end++ = '\r';
  *end++ = '\n';
  const auto header = static_cast<std::size_t>(end - small);
  if (header + data.size() + 2 <= sizeof small) {  // one write for the usual small value
    end = std::copy(data.begin(), data.end(), end);
    *end++ = '\r';
    *end++ = '\n';
    out_.write(std::string_view(small, static_cast<std::size_t>(end - small)));
    return;
  }
  out_.write(std::string_view(small, header));
  out_.write(data);
  out_.write("\r\n");
}

void Reply::error(std::span<const std::string_view> parts) {
  // The line's bytes, up to the first NUL: [0, length).
  std::size_t length = 0;
  for (const std::string_view part : parts) {
    const auto nul = part.find('\0');
    length += std::min(nul, part.size());
    if (nul != std::string_view::npos) break;
  }
  // Without CR and LF at either end: [first, last).
  const auto is_break = [](char c) { return c == '\r' || c == '\n'; };
  std::size_t first = length, last = 0, at = 0;
  for (const std::string_view part : parts) {
    for (std::size_t i = 0; i < part.size() && at < length; ++i, ++at) {
      if (is_break(part[i])) continue;
      first = std::min(first, at);
      last = at + 1;
    }
  }
  char chunk[256];
  std::size_t used = 0;
  const auto put = [&](char c) {
    if (used == sizeof chunk) {
      out_.write(std::string_view(chunk, used));
      used = 0;
    }
    chunk[used++] = c;
  };
  put('-');
  at = 0;
  for (const std::string_view part : parts) {
    for (std::size_t i = 0; i < part.size() && at < last; ++i, ++at)
      if (at >= first) put(is_break(part[i]) ? ' ' : part[i]);
  }
  put('\r');
  put('\n');
  out_.write(std::string_view(chunk, used));
}

}  // namespace kv
