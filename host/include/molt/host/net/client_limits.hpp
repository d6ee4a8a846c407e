// The arithmetic behind the host's limits on clients, apart from the sockets
// (so that it is tested without any): the memory budget all stream
// connections share, which connections to close when it runs out, how far
// to lower maxclients when the descriptors cannot cover it, and how the
// accept loops back off when the descriptors run out.
//
// These are the conventions Redis operators know: maxmemory-clients evicts
// the clients holding the most memory first; maxclients is lowered, once, at
// start when RLIMIT_NOFILE is too low; an accept that fails for want of
// descriptors waits before it tries again instead of spinning.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace molt::host {

/// Bytes held by every connection's buffers together, against one budget
/// (max_connection_memory). Lock-free: a connection reserves before it grows
/// a buffer and releases what it frees. Unlimited when the budget is 0.
class MemoryBudget {
 public:
  explicit MemoryBudget(std::uint64_t budget) noexcept : budget_(budget) {}

  /// Takes `bytes` if the total stays within the budget; else takes nothing.
  [[nodiscard]] bool try_reserve(std::uint64_t bytes) noexcept;
  /// Takes `bytes` even past the budget (output a module has written, which
  /// cannot be refused): the caller then closes the largest holders.
  void force_reserve(std::uint64_t bytes) noexcept { used_.fetch_add(bytes, std::memory_order_relaxed); }
  void release(std::uint64_t bytes) noexcept { used_.fetch_sub(bytes, std::memory_order_relaxed); }

  [[nodiscard]] std::uint64_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t budget() const noexcept { return budget_; }
  [[nodiscard]] bool limited() const noexcept { return budget_ != 0; }

 private:
  const std::uint64_t budget_;
  std::atomic<std::uint64_t> used_{0};
};

/// One connection, as the eviction sees it.
struct Holder {
  std::uint64_t bytes = 0;  ///< buffered now (reserved in the budget)
  bool closing = false;     ///< already chosen: its bytes are on their way back
};

/// What to do when a connection (the asker) needs `asking` more bytes and the
/// budget does not have them.
struct Eviction {
  std::vector<std::size_t> close;  ///< holders to close now, largest first
  /// The asker closes itself too: it is reached in the order (it would
  /// hold more than the rest), or it can never fit (then nobody else is
  /// closed).
  bool asker_closes = false;
};

/// Redis's maxmemory-clients: closes the holders with the most bytes first
/// (counting the asker with what it asks for) until `used` minus what they
/// hold, plus `asking`, fits in `budget`. Holders already closing count as
/// freed. When nothing needs closing but the bytes are not back yet, the
/// plan is empty and the asker waits for them. `asker` indexes `holders`.
[[nodiscard]] Eviction plan_eviction(std::uint64_t used, std::uint64_t budget, std::uint64_t asking,
                                     std::span<const Holder> holders, std::size_t asker);

/// The maxclients every listener gets when RLIMIT_NOFILE is `fd_limit`,
/// `reserve` descriptors are kept for everything else, and the listeners
/// ask for `wanted`: nothing when they fit; else the largest N such that
/// the sum of min(wanted_i, N) fits (the small listeners keep theirs), at
/// least 1.
[[nodiscard]] std::optional<std::uint32_t> maxclients_cap(std::span<const std::uint32_t> wanted,
                                                          std::uint64_t fd_limit, std::uint64_t reserve);

/// The soft RLIMIT_NOFILE before and after raising it to the hard limit.
struct FdLimit {
  std::uint64_t before = 0;
  std::uint64_t after = 0;
  std::uint64_t hard = 0;
};
/// Raises this process's soft RLIMIT_NOFILE to its hard limit (what Redis
/// does at start); reports what it got.
FdLimit raise_fd_limit();

/// How an accept loop waits when accept() fails for want of descriptors
/// (EMFILE, ENFILE; the connection stays in the backlog): 50 ms, doubling
/// up to 500 ms, back to no wait after an accept succeeds; and it says so in
/// the log at most once per `log_every`. Without it the listening socket
/// stays readable and the loop spins on a core.
class AcceptBackoff {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::chrono::milliseconds kFirst{50};
  static constexpr std::chrono::milliseconds kMost{500};

  explicit AcceptBackoff(std::chrono::milliseconds log_every = std::chrono::seconds(10)) : log_every_(log_every) {}

  struct Step {
    std::chrono::milliseconds delay;
    /// Whether to write the log line now; `failures` counts the failures
    /// since the last line (this one included).
    bool log = false;
    std::uint64_t failures = 0;
  };
  /// An accept failed at `now`.
  Step failed(Clock::time_point now);
  /// An accept succeeded: the failures since the last success when one of
  /// them was logged (then log that accepting works again), else 0.
  std::uint64_t succeeded();
  [[nodiscard]] bool backing_off() const noexcept { return delay_.count() != 0; }

 private:
  const std::chrono::milliseconds log_every_;
  std::chrono::milliseconds delay_{0};
  std::optional<Clock::time_point> logged_;  ///< when the last line was written
  std::uint64_t unlogged_ = 0;               ///< failures since then
  std::uint64_t streak_ = 0;                 ///< failures since the last success
  bool logged_in_streak_ = false;            ///< one of them was logged
};

/// errno values of accept() that mean "no descriptor (or kernel memory) for
/// the connection now": retry later, not at once.
[[nodiscard]] bool out_of_descriptors(int error) noexcept;

}  // namespace molt::host
