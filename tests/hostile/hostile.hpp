// Tools for the hostile-input tests: a real moltd attacked over real
// sockets, and what /proc says it costs (memory, descriptors, CPU).
//
// Every test here attacks one limit, asserts the bound from /proc/PID/, that
// other clients are still served meanwhile, and the exact error the client
// or the operator gets. Loopback only; every load loop is bounded in count
// and in time. Under the sanitizers (kSanitized) memory and CPU are not the
// product's own, so tests assert behaviour there and the bounds only in the
// plain build.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace molt::test {

#ifdef MOLT_SANITIZED
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

/// Resident memory of `pid` now (VmRSS), in bytes.
std::uint64_t rss_bytes(pid_t pid);
/// Peak resident memory of `pid` so far (VmHWM), in bytes.
std::uint64_t peak_rss_bytes(pid_t pid);
/// Open file descriptors of `pid` (entries of /proc/PID/fd).
std::size_t open_fds(pid_t pid);
/// CPU time `pid` has used, user + system, in seconds (/proc/PID/stat).
double cpu_seconds(pid_t pid);

/// Prints one measured figure on stdout, "hostile: <what>: <figure>", so that
/// a run of the suite (build/tests/molt_hostile_tests) shows each bound met
/// and by how much; ctest keeps it in its log.
void measured(const std::string& what, const std::string& figure);

/// Raises this process's soft RLIMIT_NOFILE to at least `wanted` (within the
/// hard limit); returns the soft limit it ends with.
std::uint64_t raise_fd_limit(std::uint64_t wanted);

/// A non-blocking TCP connection to 127.0.0.1:`port`, for clients that
/// misbehave: send without reading, trickle, hold a connection open.
class RawConnection {
 public:
  explicit RawConnection(std::uint16_t port);
  ~RawConnection();
  RawConnection(RawConnection&& other) noexcept;
  RawConnection& operator=(RawConnection&&) = delete;
  RawConnection(const RawConnection&) = delete;

  /// Sends what the socket takes now, without waiting; returns the bytes sent
  /// (0 when its buffer is full or the peer is gone).
  std::size_t send_some(std::string_view bytes);
  /// Sends all of `bytes`, waiting for room until `timeout`; false if the
  /// socket would not take them by then or the peer closed.
  bool send_all(std::string_view bytes, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Reads what has arrived, waiting up to `timeout` for the first byte;
  /// empty on timeout. Sets closed() when the peer closed.
  std::string read_some(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  /// Reads until `bytes` bytes arrived, the peer closed, or `timeout`.
  std::string read_exactly(std::size_t bytes, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  /// Whether the peer has closed the connection (after a read saw it).
  [[nodiscard]] bool closed() const noexcept { return closed_; }
  /// Waits up to `timeout` for the peer to close, reading and dropping
  /// anything that arrives first; whether it did.
  bool wait_closed(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  [[nodiscard]] int fd() const noexcept { return fd_; }

 private:
  int fd_ = -1;
  bool closed_ = false;
};

}  // namespace molt::test
