#include "molt/host/net/listen_socket.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <boost/asio/socket_base.hpp>

namespace molt::host {

std::optional<ListenFailure> bind_and_listen(boost::asio::ip::tcp::acceptor& acceptor, const Endpoint& endpoint) {
  namespace asio = boost::asio;
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(endpoint.host, ec);
  if (ec) return ListenFailure{"bad address", ec};
  const asio::ip::tcp::endpoint bind_to(address, endpoint.port);
  acceptor.open(bind_to.protocol(), ec);
  if (ec) return ListenFailure{"open", ec};
  acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  acceptor.bind(bind_to, ec);
  if (ec) return ListenFailure{"bind", ec};
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return ListenFailure{"listen", ec};
  return std::nullopt;
}

Result<int> listening_tcp_family(int fd, const std::string& what) {
  const auto refuse = [&](const std::string& why) {
    return Error{what, {}, {}, Phase::Start, "listening socket fd " + std::to_string(fd) + ": " + why};
  };
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return refuse(std::strerror(errno));
  int type = 0, listening = 0;
  socklen_t size = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) != 0) return refuse(std::strerror(errno));
  size = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) != 0) return refuse(std::strerror(errno));
  if ((address.ss_family != AF_INET && address.ss_family != AF_INET6) || type != SOCK_STREAM)
    return refuse("not a TCP socket (ListenStream= takes a port or ADDRESS:PORT for moltd)");
  if (listening == 0) return refuse("not listening");
  return static_cast<int>(address.ss_family);
}

}  // namespace molt::host
