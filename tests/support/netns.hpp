// Three network namespaces a test (or a benchmark) creates and removes
// itself, so that two moltd talk over a real link and never over any other
// address: "a" and "b" for the hosts, "c" for their clients, joined by a
// bridge in "c" (a veth pair from each). Addresses 10.77.N.1 (a), .2 (b),
// .3 (c), N from the pid; names molt-<pid>-<a|b|c>. Needs root (CAP_SYS_ADMIN
// and CAP_NET_ADMIN) and iproute2.
#pragma once

#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace molt::test {

class NetnsTopology {
 public:
  /// Creates the namespaces and links; nothing (and `why`) when it cannot,
  /// leaving nothing behind.
  static std::optional<NetnsTopology> create(std::string& why);
  ~NetnsTopology();
  NetnsTopology(NetnsTopology&& other) noexcept : names_(std::exchange(other.names_, {})), subnet_(other.subnet_) {}
  NetnsTopology& operator=(NetnsTopology&&) = delete;

  [[nodiscard]] std::string name(char which) const;  ///< 'a', 'b' or 'c'
  [[nodiscard]] std::string ip(char which) const;
  /// {"ip", "netns", "exec", NAME}: a command run through it (keeping its pid).
  [[nodiscard]] std::vector<std::string> exec(char which) const;
  /// Moves the calling thread into `which`'s network namespace (sockets it
  /// creates from then on live there, whichever thread uses them later).
  void enter(char which) const;
  /// Runs `fn` on a thread of its own inside `which`'s namespace; its result.
  template <class F>
  auto in(char which, F&& fn) const {
    decltype(fn()) result{};
    std::exception_ptr error;
    std::thread([&] {
      try {
        enter(which);
        result = fn();
      } catch (...) {
        error = std::current_exception();
      }
    }).join();
    if (error) std::rethrow_exception(error);
    return result;
  }

 private:
  NetnsTopology(int subnet) : subnet_(subnet) {}
  std::vector<std::string> names_;  ///< created, removed by the destructor
  int subnet_;
};

}  // namespace molt::test
