// A listening socket moltd did not bind itself: one systemd passed at start
// (socket activation, daemon/systemd.hpp), which a server adopts in place of
// binding its configured address.
#pragma once

#include <string>

#include "molt/host/common/error.hpp"

namespace molt::host {

/// The address family (AF_INET or AF_INET6) of `fd` if it is a listening TCP
/// socket, which is all moltd serves; otherwise why not. `what` names it in
/// the error ("kv", "http").
[[nodiscard]] Result<int> listening_tcp_family(int fd, const std::string& what);

}  // namespace molt::host
