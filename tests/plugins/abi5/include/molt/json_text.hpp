// A JSON string literal for text a module puts in a JSON answer, escaped as
// RFC 8259 requires (quotes, backslashes, control characters). Header-only:
// modules that answer JSON without a JSON library share this one.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace molt::api {

/// "say \"hi\"\n" -> "\"say \\\"hi\\\"\\n\"" (with the quotes).
inline std::string json_string(std::string_view text) {
  std::string out = "\"";
  out.reserve(text.size() + 2);
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", static_cast<unsigned>(c));
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace molt::api
