#include "molt/host/net/http_router.hpp"

#include "molt/host/net/http_forward.hpp"

#include "molt/host/common/json_text.hpp"
#include "molt/host/net/metrics.hpp"
#include "molt/host/net/status_page.hpp"

namespace molt::host {
namespace {

api::Response json_error(int status, const std::string& message) {
  return api::Response::json(json_text(nlohmann::json{{"error", message}}) + '\n', status);
}

/// "/counter/incr" -> "counter"; "/" -> "".
std::string_view first_segment(std::string_view path) {
  if (path.starts_with('/')) path.remove_prefix(1);
  return path.substr(0, path.find('/'));
}

}  // namespace

HttpReply HttpRouter::route(const api::Request& request) {
  const std::string_view name = first_segment(request.path);
  if (name == "-") {
    if (request.path == "/-/status") return api::Response::json(json_text(status_json(table_, host_), 2) + '\n');
    if (request.path == "/-/metrics")
      return api::Response{200, std::string(kMetricsContentType), render_metrics(table_, host_)};
    if (request.path == "/-/history") {
      // The page polls this every 2 s: only the last kHistoryLimit reports, never the whole history.
      nlohmann::json history = history_json(table_.history_log(), {}, kHistoryLimit);
      history["limit"] = kHistoryLimit;
      return api::Response::json(json_text(history) + '\n');
    }
    if (request.path == "/-/ready") {  // a readiness probe: false while the host drains (docs/handoff.md)
      const auto why = host_.not_ready ? host_.not_ready() : std::nullopt;
      if (why) return json_error(503, *why);
      return api::Response::json("{\"ready\":true}\n");
    }
    if (request.path == "/-/" || request.path == "/-/index.html")
      return api::Response{200, "text/html; charset=utf-8", std::string(status_page_html())};
    return json_error(404, "no such host resource: " + request.path);
  }
  const auto slot = table_.find(name);
  if (!slot) {
    if (auto moved = moved_to(name, request)) return std::move(*moved);
    return json_error(404, "no module '" + std::string(name) + "' (GET /-/status lists them)");
  }
  auto response = slot->call(request);
  if (!response && slot->retired())  // waited in a handoff's pause: the module is elsewhere now
    if (auto moved = moved_to(name, request)) return std::move(*moved);
  if (!response) {
    slot->log().error("{}", response.error().to_string());
    return json_error(500, "internal error in module " + slot->name());
  }
  return std::move(response.value());
}

std::optional<HttpReply> HttpRouter::moved_to(std::string_view module, const api::Request& request) const {
  const auto base = host_.moved_http ? host_.moved_http(module) : std::nullopt;
  if (!base) return std::nullopt;
  if (!host_.redirect_moved_http) return forward_http(*base, request, kForwardTimeout, kMaxForwardedBody);
  // host.handoff_http = "redirect": 307 keeps the method and the body (RFC 9110, 15.4.8).
  std::string target = request.path;
  if (!request.query.empty()) target += "?" + request.query;
  HttpReply reply = json_error(307, "module '" + std::string(module) + "' moved to " + *base);
  reply.location = "http://" + *base + target;
  return reply;
}

}  // namespace molt::host
