#include "http.hpp"

#include <cstdio>

namespace counter {

Route route(const molt::api::Request& request) {
  const bool show = request.path == "/counter" || request.path == "/counter/";
  const bool increment = request.path == "/counter/incr";
  if (!show && !increment) return Route::NotFound;
  if (show) return request.method == "GET" || request.method == "HEAD" ? Route::Show : Route::WrongMethod;
  return request.method == "POST" ? Route::Increment : Route::WrongMethod;
}

molt::api::Response route_error(Route route, const molt::api::Request& request) {
  if (route == Route::WrongMethod)
    return molt::api::Response::json(
        R"({"error":)" + json_string("method " + request.method + " not allowed on " + request.path) + "}\n", 405);
  return molt::api::Response::json(R"({"error":)" + json_string("no such resource: " + request.path) + "}\n", 404);
}

std::string begin_answer(std::uint32_t version, std::uint64_t total) {
  std::string out = R"({"module":"counter","version":)";
  out += std::to_string(version);
  out += R"(,"total":)";
  out += std::to_string(total);
  return out;
}

}  // namespace counter
