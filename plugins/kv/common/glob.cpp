#include "glob.hpp"

namespace kv {
namespace {

/// Redis's tolower, in the C locale it runs in: ASCII letters only. Bytes
/// are compared as signed chars, as Redis's ranges do.
int lower(int c) { return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c; }

bool same(char a, char b, Case mode) { return mode == Case::Sensitive ? a == b : lower(a) == lower(b); }

/// Matches the one-character token at pattern[p] (anything but '*') against
/// `c`; sets `next` past the token. Where a token ends never depends on the
/// text, which is what lets glob_match backtrack without recursion.
bool token_matches(std::string_view pattern, std::size_t p, char c, Case mode, std::size_t& next) {
  const std::size_t n = pattern.size();
  switch (pattern[p]) {
    case '?':
      next = p + 1;
      return true;
    case '[': {
      std::size_t i = p + 1;
      const bool negate = i < n && pattern[i] == '^';
      if (negate) ++i;
      bool match = false;
      while (true) {
        if (i < n && pattern[i] == '\\' && n - i >= 2) {
          ++i;
          if (pattern[i] == c) match = true;  // an escape inside [] is compared case-sensitively, as in Redis
        } else if (i < n && pattern[i] == ']') {
          break;
        } else if (i >= n) {  // no ']': the class ends with the pattern
          --i;
          break;
        } else if (n - i >= 3 && pattern[i + 1] == '-') {
          int start = static_cast<signed char>(pattern[i]);
          int end = static_cast<signed char>(pattern[i + 2]);
          int ch = static_cast<signed char>(c);
          if (start > end) std::swap(start, end);
          if (mode == Case::Insensitive) {
            start = lower(start);
            end = lower(end);
            ch = lower(ch);
          }
          i += 2;
          if (ch >= start && ch <= end) match = true;
        } else if (same(pattern[i], c, mode)) {
          match = true;
        }
        ++i;
      }
      next = i + 1;
      return negate ? !match : match;
    }
    case '\\':
      if (n - p >= 2) ++p;  // a trailing '\' stands for itself
      [[fallthrough]];
    default:
      next = p + 1;
      return same(pattern[p], c, mode);
  }
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view text, Case mode) {
  if (text.empty()) return pattern.empty();  // stringmatchlen's loop never runs: not even "*" matches
  const std::size_t npos = std::string_view::npos;
  std::size_t p = 0, s = 0;
  std::size_t star = npos;  // the pattern just after the last '*' met
  std::size_t star_text = 0;  // where the text stood when that '*' matched nothing
  while (s < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      while (p < pattern.size() && pattern[p] == '*') ++p;
      if (p == pattern.size()) return true;
      star = p;
      star_text = s;
      continue;
    }
    std::size_t next = 0;
    if (p < pattern.size() && token_matches(pattern, p, text[s], mode, next)) {
      p = next;
      ++s;
      continue;
    }
    if (star == npos) return false;
    p = star;  // let the last '*' take one more character
    s = ++star_text;
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace kv
