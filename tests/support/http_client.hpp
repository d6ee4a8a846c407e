// A minimal blocking HTTP/1.1 client on one keep-alive connection, for tests
// and benchmarks that must see that connection live on (a hot restart):
// requests are sent as given, responses read whole (by Content-Length).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace molt::test {

class HttpClient {
 public:
  /// Connects to "HOST:PORT" (IPv4); throws std::runtime_error if it cannot.
  explicit HttpClient(const std::string& endpoint, std::chrono::seconds timeout = std::chrono::seconds(10));
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  /// Sends raw bytes as they are; false if the connection is gone.
  bool send(std::string_view bytes);
  /// Reads one whole response; empty if the connection closed (or timed out) first.
  std::string response();
  /// GET `path`, then its response.
  std::string get(const std::string& path);
  /// POST `path` with an empty body, then its response.
  std::string post(const std::string& path);

 private:
  int fd_ = -1;
  std::string buffer_;
};

}  // namespace molt::test
