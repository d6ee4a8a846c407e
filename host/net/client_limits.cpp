#include "molt/host/net/client_limits.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <numeric>

namespace molt::host {

bool MemoryBudget::try_reserve(std::uint64_t bytes) noexcept {
  if (budget_ == 0) {
    used_.fetch_add(bytes, std::memory_order_relaxed);
    return true;
  }
  std::uint64_t used = used_.load(std::memory_order_relaxed);
  do {
    if (used > budget_ || bytes > budget_ - used) return false;
  } while (!used_.compare_exchange_weak(used, used + bytes, std::memory_order_relaxed));
  return true;
}

Eviction plan_eviction(std::uint64_t used, std::uint64_t budget, std::uint64_t asking,
                       std::span<const Holder> holders, std::size_t asker) {
  Eviction plan;
  std::uint64_t freed = 0;
  for (const auto& holder : holders)
    if (holder.closing) freed += holder.bytes;
  const auto fits = [&] { return used - std::min(used, freed) + asking <= budget; };
  // More than the whole budget can never fit: closing others would not help.
  const std::uint64_t asker_bytes = asker < holders.size() ? holders[asker].bytes : 0;
  if (asker_bytes + asking > budget) {
    plan.asker_closes = true;
    return plan;
  }
  if (fits()) return plan;  // once the closing holders are gone
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < holders.size(); ++i)
    if (!holders[i].closing) order.push_back(i);
  const auto size_of = [&](std::size_t i) { return holders[i].bytes + (i == asker ? asking : 0); };
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return size_of(a) > size_of(b); });
  for (const std::size_t i : order) {
    if (i == asker) {
      plan.asker_closes = true;  // after the larger ones: Redis evicts the largest first, whoever asked
      return plan;
    }
    plan.close.push_back(i);
    freed += holders[i].bytes;
    if (fits()) return plan;
  }
  plan.asker_closes = true;  // not even closing everyone else makes room
  return plan;
}

std::optional<std::uint32_t> maxclients_cap(std::span<const std::uint32_t> wanted, std::uint64_t fd_limit,
                                            std::uint64_t reserve) {
  const std::uint64_t available = fd_limit > reserve ? fd_limit - reserve : 0;
  const auto total = [&](std::uint64_t cap) {
    return std::accumulate(wanted.begin(), wanted.end(), std::uint64_t{0},
                           [cap](std::uint64_t sum, std::uint32_t w) { return sum + std::min<std::uint64_t>(w, cap); });
  };
  const std::uint32_t most = wanted.empty() ? 0 : *std::max_element(wanted.begin(), wanted.end());
  if (total(most) <= available) return std::nullopt;
  // The largest cap whose total fits; total() grows with the cap.
  std::uint32_t low = 1, high = most;
  while (low < high) {
    const std::uint32_t middle = low + (high - low + 1) / 2;
    if (total(middle) <= available) low = middle;
    else high = middle - 1;
  }
  return low;
}

FdLimit raise_fd_limit() {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  FdLimit result{limit.rlim_cur, limit.rlim_cur, limit.rlim_max};
  rlim_t wanted = limit.rlim_max;
  if (wanted == RLIM_INFINITY) {  // the kernel allows no more than fs.nr_open
    std::uint64_t nr_open = 1 << 20;
    std::ifstream("/proc/sys/fs/nr_open") >> nr_open;
    wanted = nr_open;
    result.hard = nr_open;
  }
  if (limit.rlim_cur < wanted) {
    limit.rlim_cur = wanted;
    if (::setrlimit(RLIMIT_NOFILE, &limit) == 0) result.after = wanted;
  }
  return result;
}

AcceptBackoff::Step AcceptBackoff::failed(Clock::time_point now) {
  delay_ = delay_.count() == 0 ? kFirst : std::min(delay_ * 2, kMost);
  ++unlogged_;
  ++streak_;
  Step step{delay_};
  if (!logged_ || now - *logged_ >= log_every_) {
    step.log = true;
    step.failures = unlogged_;
    unlogged_ = 0;
    logged_ = now;
    logged_in_streak_ = true;
  }
  return step;
}

std::uint64_t AcceptBackoff::succeeded() {
  delay_ = std::chrono::milliseconds(0);
  const std::uint64_t failures = logged_in_streak_ ? streak_ : 0;
  streak_ = 0;
  logged_in_streak_ = false;
  return failures;
}

bool out_of_descriptors(int error) noexcept {
  return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM;
}

}  // namespace molt::host
