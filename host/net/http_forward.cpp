#include "molt/host/net/http_forward.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace molt::host {
namespace {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

api::Response bad_gateway(const std::string& base, const std::string& why) {
  return api::Response::json("{\"error\":\"forwarding to " + base + ": " + why + "\"}\n", 502);
}
}  // namespace

api::Response forward_http(const std::string& base, const api::Request& request, std::chrono::milliseconds timeout,
                           std::size_t max_body) {
  const auto colon = base.rfind(':');
  if (colon == std::string::npos) return bad_gateway(base, "not HOST:PORT");
  asio::io_context io;
  tcp::socket socket(io);
  beast::error_code ec;
  const auto address = asio::ip::make_address(base.substr(0, colon), ec);
  if (ec) return bad_gateway(base, ec.message());
  socket.open(address.is_v4() ? tcp::v4() : tcp::v6(), ec);
  if (ec) return bad_gateway(base, ec.message());
  // Blocking calls with the socket's own time limits: this runs on an HTTP
  // thread, for a request whose module is no longer here.
  timeval limit{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>(timeout.count() % 1000 * 1000)};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  socket.connect(tcp::endpoint(address, static_cast<unsigned short>(std::stoi(base.substr(colon + 1)))), ec);
  if (ec) return bad_gateway(base, ec.message());
  std::string target = request.path;
  if (!request.query.empty()) target += "?" + request.query;
  http::request<http::string_body> out{http::string_to_verb(request.method), target, 11};
  if (out.method() == http::verb::unknown) out.method_string(request.method);
  for (const auto& h : request.headers)
    if (!beast::iequals(h.name, "host") && !beast::iequals(h.name, "connection") && !beast::iequals(h.name, "content-length"))
      out.set(h.name, h.value);
  out.set(http::field::host, base);
  out.set(http::field::connection, "close");
  out.body() = request.body;
  out.prepare_payload();
  http::write(socket, out, ec);
  if (ec) return bad_gateway(base, ec.message());
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(max_body);
  http::read(socket, buffer, parser, ec);
  if (ec) return bad_gateway(base, ec.message());
  auto& in = parser.get();
  api::Response response;
  response.status = static_cast<int>(in.result_int());
  if (auto it = in.find(http::field::content_type); it != in.end()) response.content_type = std::string(it->value());
  response.body = std::move(in.body());
  return response;
}

}  // namespace molt::host
