// Forwarding one HTTP request to the moltd a module moved to (handoff):
// the source's HTTP clients keep working during the drain, as its stream
// clients do (docs/handoff.md, "What clients see").
#pragma once

#include <chrono>
#include <string>

#include "molt/message.hpp"

namespace molt::host {

/// The reply of the moltd at `base` ("HOST:PORT") to `request`, sent as
/// received (method, path, query, headers but Host and Connection, body)
/// on a connection of its own, within `timeout`; its status, content type
/// and body (at most `max_body` bytes). 502 with the reason when it cannot
/// be had.
[[nodiscard]] api::Response forward_http(const std::string& base, const api::Request& request,
                                         std::chrono::milliseconds timeout, std::size_t max_body);

}  // namespace molt::host
