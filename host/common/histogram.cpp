#include "molt/host/common/histogram.hpp"

#include <algorithm>
#include <thread>

namespace molt::host {

std::size_t DurationHistogram::bucket_of(std::chrono::nanoseconds duration) noexcept {
  // The first bound not below the duration: bounds are inclusive ("le").
  return static_cast<std::size_t>(std::lower_bound(kBounds.begin(), kBounds.end(), duration) - kBounds.begin());
}

void DurationHistogram::observe(std::chrono::nanoseconds duration, Writers writers) noexcept {
  if (duration.count() < 0) duration = std::chrono::nanoseconds(0);  // a clock that stepped back is not a call
  const std::size_t bucket = bucket_of(duration);
  add<std::uint64_t>(buckets_[bucket], 1, writers);
  add<std::uint64_t>(sum_ns_, static_cast<std::uint64_t>(duration.count()), writers);
  last_bucket_.store(bucket, std::memory_order_relaxed);
  last_ns_.store(duration.count(), std::memory_order_relaxed);
}

constinit thread_local std::uint64_t CallSampler::random_state = 0;

std::uint64_t CallSampler::seed() noexcept {
  // Threads apart, and runs apart; never 0 (xorshift would stay there).
  const auto thread = std::hash<std::thread::id>{}(std::this_thread::get_id());
  const auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  const std::uint64_t mixed = (thread * 0x9E3779B97F4A7C15ull) ^ now;
  return mixed != 0 ? mixed : 1;
}

DurationHistogram::Counts DurationHistogram::snapshot() const noexcept {
  Counts out;
  for (std::size_t i = 0; i < kBuckets; ++i) out.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  out.sum = std::chrono::nanoseconds(static_cast<std::int64_t>(sum_ns_.load(std::memory_order_relaxed)));
  return out;
}

void DurationHistogram::Counts::add(std::chrono::nanoseconds duration) noexcept {
  if (duration.count() < 0) duration = std::chrono::nanoseconds(0);
  ++buckets[bucket_of(duration)];
  sum += duration;
}

std::uint64_t DurationHistogram::Counts::count() const noexcept { return at_most(kBuckets); }

std::uint64_t DurationHistogram::Counts::at_most(std::size_t bound) const noexcept {
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bound && i < kBuckets; ++i) total += buckets[i];
  return total;
}

}  // namespace molt::host
