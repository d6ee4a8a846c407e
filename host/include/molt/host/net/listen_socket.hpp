// Listening sockets, for the HTTP server and the stream server alike: one
// moltd binds itself, or one systemd passed at start (socket activation,
// daemon/systemd.hpp), which a server adopts in place of binding its
// configured address.
#pragma once

#include <optional>
#include <string>

#include <boost/asio/ip/tcp.hpp>

#include "molt/host/common/error.hpp"
#include "molt/host/config/host_config.hpp"

namespace molt::host {

/// Where bind_and_listen stopped: the step ("bad address", "open", "bind" or
/// "listen") and the system's reason. Each server words its own error.
struct ListenFailure {
  std::string step;
  boost::system::error_code reason;
};

/// Opens `acceptor` for `endpoint`'s address family, binds it to `endpoint`
/// and listens, with the longest backlog the system allows. SO_REUSEADDR lets
/// a restarted moltd bind while its old connections linger in TIME_WAIT; on
/// Linux it does not let two listeners share the port, so a second moltd on
/// it fails at "bind". Nothing on success.
[[nodiscard]] std::optional<ListenFailure> bind_and_listen(boost::asio::ip::tcp::acceptor& acceptor,
                                                           const Endpoint& endpoint);

/// The address family (AF_INET or AF_INET6) of `fd` if it is a listening TCP
/// socket, which is all moltd serves; otherwise why not. `what` names it in
/// the error ("kv", "http").
[[nodiscard]] Result<int> listening_tcp_family(int fd, const std::string& what);

}  // namespace molt::host
