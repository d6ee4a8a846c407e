#include "molt/host/common/histogram.hpp"

#include <algorithm>

namespace molt::host {

std::size_t DurationHistogram::bucket_of(std::chrono::nanoseconds duration) noexcept {
  // The first bound not below the duration: bounds are inclusive ("le").
  return static_cast<std::size_t>(std::lower_bound(kBounds.begin(), kBounds.end(), duration) - kBounds.begin());
}

void DurationHistogram::observe(std::chrono::nanoseconds duration) noexcept {
  if (duration.count() < 0) duration = std::chrono::nanoseconds(0);  // a clock that stepped back is not a call
  buckets_[bucket_of(duration)].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(duration.count(), std::memory_order_relaxed);
}

DurationHistogram::Counts DurationHistogram::snapshot() const noexcept {
  Counts out;
  for (std::size_t i = 0; i < kBuckets; ++i) out.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  out.sum = std::chrono::nanoseconds(sum_ns_.load(std::memory_order_relaxed));
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
