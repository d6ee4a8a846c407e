// A minimal blocking RESP client for tests: sends commands, reads one whole
// reply as raw bytes (so replies can be compared byte for byte).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace molt::test {

class RespClient {
 public:
  explicit RespClient(std::uint16_t port);  ///< on 127.0.0.1
  /// On `host` (IPv4), from the calling thread's network namespace.
  RespClient(const std::string& host, std::uint16_t port);
  ~RespClient();
  RespClient(const RespClient&) = delete;
  RespClient& operator=(const RespClient&) = delete;

  /// Sends raw bytes as they are.
  void send_raw(std::string_view bytes);
  /// Sends one command as a RESP array of bulk strings.
  void send(const std::vector<std::string>& command);
  /// Reads exactly one reply; nothing if the connection closed first.
  std::optional<std::string> read_reply();
  /// send() then read_reply(); an empty string if the connection closed.
  std::string call(const std::vector<std::string>& command);
  /// True once the server has closed the connection (reads return 0).
  bool closed_by_peer();

  static std::string encode(const std::vector<std::string>& command);

 private:
  bool fill();
  std::optional<std::size_t> reply_end(std::size_t pos);

  int fd_ = -1;
  std::string buffer_;
};

/// A port nobody listens on right now (bound then released).
std::uint16_t free_port();

}  // namespace molt::test
