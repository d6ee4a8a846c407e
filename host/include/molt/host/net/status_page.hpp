// The status page, GET /-/: one self-contained HTML file with its CSS and
// script inline (host/net/status_page.html), compiled into the host at build
// time by cmake/EmbedText.cmake. It loads nothing from the network: in the
// browser it polls GET /-/status and GET /-/history on the same origin.
#pragma once

#include <string_view>

namespace molt::host {

/// The page's HTML (UTF-8), as it is in host/net/status_page.html.
[[nodiscard]] std::string_view status_page_html() noexcept;

}  // namespace molt::host
