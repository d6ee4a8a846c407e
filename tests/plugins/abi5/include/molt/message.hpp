// Requests and responses: what a module is called with and answers.
//
// HTTP-shaped but transport-free: the host parses the wire protocol, a module
// sees only these values.
#pragma once

#include <algorithm>
#include <cctype>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace molt::api {

struct Header {
  std::string name;
  std::string value;
};

struct Request {
  std::string method;           ///< "GET", "POST", ... as received
  std::string path;             ///< full path, e.g. "/counter/incr", without the query
  std::string query;            ///< raw query string without '?', e.g. "key=a%20b"
  std::vector<Header> headers;  ///< in arrival order
  std::string body;

  /// The first header called `name` (case-insensitive), or nothing.
  [[nodiscard]] std::optional<std::string_view> header(std::string_view name) const;

  /// The percent-decoded value of query parameter `name` ("a+b" decodes to
  /// "a b"), or nothing when absent. A parameter given without '=' has an
  /// empty value.
  [[nodiscard]] std::optional<std::string> query_param(std::string_view name) const;
};

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;

  [[nodiscard]] static Response json(std::string body, int status = 200) {
    return Response{status, "application/json", std::move(body)};
  }
  [[nodiscard]] static Response text(std::string body, int status = 200) {
    return Response{status, "text/plain; charset=utf-8", std::move(body)};
  }
};

/// Decodes %XX escapes and '+' (as space). Malformed escapes are kept as is.
[[nodiscard]] inline std::string percent_decode(std::string_view in) {
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '+') {
      out += ' ';
    } else if (in[i] == '%' && i + 2 < in.size() && hex(in[i + 1]) >= 0 && hex(in[i + 2]) >= 0) {
      out += static_cast<char>(hex(in[i + 1]) * 16 + hex(in[i + 2]));
      i += 2;
    } else {
      out += in[i];
    }
  }
  return out;
}

inline std::optional<std::string_view> Request::header(std::string_view name) const {
  auto same = [](std::string_view a, std::string_view b) {
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
      return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
    });
  };
  for (const auto& h : headers)
    if (same(h.name, name)) return std::string_view(h.value);
  return std::nullopt;
}

inline std::optional<std::string> Request::query_param(std::string_view name) const {
  std::string_view rest = query;
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    const auto eq = pair.find('=');
    if (percent_decode(pair.substr(0, eq)) != name) continue;
    return eq == std::string_view::npos ? std::string{} : percent_decode(pair.substr(eq + 1));
  }
  return std::nullopt;
}

}  // namespace molt::api
