#include "resp_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

namespace molt::test {

RespClient::RespClient(std::uint16_t port) : RespClient("127.0.0.1", port) {}

RespClient::RespClient(const std::string& host, std::uint16_t port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  if (::inet_pton(AF_INET, host.c_str(), &address.sin_addr) != 1) {
    ::close(fd_);
    throw std::runtime_error("not an IPv4 address: " + host);
  }
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd_);  // the destructor does not run for a constructor that throws
    throw std::runtime_error("cannot connect to " + host + ":" + std::to_string(port));
  }
  timeval tv{30, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RespClient::~RespClient() { ::close(fd_); }

std::string RespClient::encode(const std::vector<std::string>& command) {
  std::string out = "*";
  out += std::to_string(command.size());
  out += "\r\n";
  for (const auto& arg : command) {
    out += '$';
    out += std::to_string(arg.size());
    out += "\r\n";
    out += arg;
    out += "\r\n";
  }
  return out;
}

void RespClient::send_raw(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return;  // the server closed: what it answered is still readable
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

void RespClient::send(const std::vector<std::string>& command) { send_raw(encode(command)); }

bool RespClient::fill() {
  char chunk[65536];
  const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n <= 0) return false;
  buffer_.append(chunk, static_cast<std::size_t>(n));
  return true;
}

/// Where the reply starting at `pos` ends, if it has fully arrived.
std::optional<std::size_t> RespClient::reply_end(std::size_t pos) {
  const auto line_end = buffer_.find("\r\n", pos);
  if (line_end == std::string::npos || pos >= buffer_.size()) return std::nullopt;
  const char kind = buffer_[pos];
  const std::size_t after_line = line_end + 2;
  if (kind == '+' || kind == '-' || kind == ':') return after_line;
  const long long n = std::stoll(buffer_.substr(pos + 1, line_end - pos - 1));
  if (kind == '$') {
    if (n < 0) return after_line;
    const std::size_t end = after_line + static_cast<std::size_t>(n) + 2;
    return buffer_.size() >= end ? std::optional(end) : std::nullopt;
  }
  if (kind == '*') {
    std::size_t next = after_line;
    for (long long i = 0; i < n; ++i) {
      const auto end = reply_end(next);
      if (!end) return std::nullopt;
      next = *end;
    }
    return next;
  }
  throw std::runtime_error("not a RESP reply: " + buffer_.substr(pos, 40));
}

std::optional<std::string> RespClient::read_reply() {
  while (true) {
    if (const auto end = reply_end(0)) {
      std::string reply = buffer_.substr(0, *end);
      buffer_.erase(0, *end);
      return reply;
    }
    if (!fill()) return std::nullopt;
  }
}

std::string RespClient::call(const std::vector<std::string>& command) {
  send(command);
  return read_reply().value_or("");
}

bool RespClient::closed_by_peer() {
  char c;
  return buffer_.empty() && ::recv(fd_, &c, 1, 0) == 0;
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

}  // namespace molt::test
