#include "http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <stdexcept>

namespace molt::test {

HttpClient::HttpClient(const std::string& endpoint, std::chrono::seconds timeout) {
  const auto colon = endpoint.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("not HOST:PORT: " + endpoint);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(std::stoi(endpoint.substr(colon + 1))));
  if (::inet_pton(AF_INET, endpoint.substr(0, colon).c_str(), &address.sin_addr) != 1)
    throw std::runtime_error("not an IPv4 address: " + endpoint);
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    if (fd_ >= 0) ::close(fd_);
    throw std::runtime_error("cannot connect to " + endpoint);
  }
  timeval limit{static_cast<time_t>(timeout.count()), 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
}

HttpClient::~HttpClient() { ::close(fd_); }

bool HttpClient::send(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string HttpClient::response() {
  while (true) {
    const auto head_end = buffer_.find("\r\n\r\n");
    if (head_end != std::string::npos) {
      const auto at = buffer_.find("Content-Length: ");
      const std::size_t length = at < head_end ? std::stoul(buffer_.substr(at + 16)) : 0;
      if (buffer_.size() >= head_end + 4 + length) {
        std::string whole = buffer_.substr(0, head_end + 4 + length);
        buffer_.erase(0, whole.size());
        return whole;
      }
    }
    char chunk[4096];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return {};
    buffer_.append(chunk, static_cast<std::size_t>(n));
  }
}

std::string HttpClient::get(const std::string& path) {
  if (!send("GET " + path + " HTTP/1.1\r\nHost: molt\r\n\r\n")) return {};
  return response();
}

std::string HttpClient::post(const std::string& path) {
  if (!send("POST " + path + " HTTP/1.1\r\nHost: molt\r\nContent-Length: 0\r\n\r\n")) return {};
  return response();
}

}  // namespace molt::test
