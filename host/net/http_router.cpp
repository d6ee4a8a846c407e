#include "molt/host/net/http_router.hpp"

namespace molt::host {
namespace {

api::Response json_error(int status, const std::string& message) {
  return api::Response::json(nlohmann::json{{"error", message}}.dump() + '\n', status);
}

/// "/counter/incr" -> "counter"; "/" -> "".
std::string_view first_segment(std::string_view path) {
  if (path.starts_with('/')) path.remove_prefix(1);
  return path.substr(0, path.find('/'));
}

}  // namespace

api::Response HttpRouter::route(const api::Request& request) {
  const std::string_view name = first_segment(request.path);
  if (name == "-") {
    if (request.path == "/-/status") return api::Response::json(status_json(table_, host_).dump(2) + '\n');
    return json_error(404, "no such host resource: " + request.path);
  }
  const auto slot = table_.find(name);
  if (!slot) return json_error(404, "no module '" + std::string(name) + "' (GET /-/status lists them)");
  auto response = slot->call(request);
  if (!response) {
    slot->log().error("{}", response.error().to_string());
    return json_error(500, "internal error in module " + slot->name());
  }
  return std::move(response.value());
}

}  // namespace molt::host
