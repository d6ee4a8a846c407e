// What both counter versions answer alike: routing and JSON output.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "molt/json_text.hpp"
#include "molt/message.hpp"

namespace counter {

/// The routes both versions serve.
enum class Route { Show, Increment, NotFound, WrongMethod };

/// GET /counter shows, POST /counter/incr increments; anything else is an error.
Route route(const molt::api::Request& request);

/// The answer for NotFound and WrongMethod.
molt::api::Response route_error(Route route, const molt::api::Request& request);

using molt::api::json_string;  // molt/json_text.hpp

/// `{"module":"counter","version":N,"total":T` — how every answer begins; the
/// caller adds its own fields and the closing brace.
std::string begin_answer(std::uint32_t version, std::uint64_t total);

}  // namespace counter
