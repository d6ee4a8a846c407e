// A histogram of durations for the metrics: how long module calls and
// upgrade pauses took, counted into fixed buckets.
//
// observe() is on every module call, so it is lock-free and allocation-free:
// a search through 20 bounds and two relaxed atomic additions. Readers take a
// snapshot() while observers go on; a snapshot's count is the sum of its
// buckets, so the "+Inf" bucket always equals the count, as Prometheus
// requires, even when the sum was read a call earlier or later. Counts is
// also a histogram of its own, without atomics, for data behind a lock.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace molt::host {

class DurationHistogram {
 public:
  /// Upper bounds of the buckets (inclusive: a bucket counts durations <= its
  /// bound), from 5 us, the fastest calls into a module, to 10 s, the longest
  /// upgrade pauses measured (10M keys migrated); beyond it, the +Inf bucket.
  static constexpr std::array<std::chrono::nanoseconds, 20> kBounds{
      std::chrono::microseconds(5),    std::chrono::microseconds(10),   std::chrono::microseconds(25),
      std::chrono::microseconds(50),   std::chrono::microseconds(100),  std::chrono::microseconds(250),
      std::chrono::microseconds(500),  std::chrono::milliseconds(1),    std::chrono::microseconds(2500),
      std::chrono::milliseconds(5),    std::chrono::milliseconds(10),   std::chrono::milliseconds(25),
      std::chrono::milliseconds(50),   std::chrono::milliseconds(100),  std::chrono::milliseconds(250),
      std::chrono::milliseconds(500),  std::chrono::seconds(1),         std::chrono::milliseconds(2500),
      std::chrono::seconds(5),         std::chrono::seconds(10)};
  /// The buckets: one per bound, and the last for what is above every bound.
  static constexpr std::size_t kBuckets = kBounds.size() + 1;

  /// What a histogram had counted at one moment.
  struct Counts {
    std::array<std::uint64_t, kBuckets> buckets{};  ///< per bucket, not cumulative
    std::chrono::nanoseconds sum{};                 ///< of every duration observed
    /// Counts one duration (a negative one as zero); not thread-safe.
    void add(std::chrono::nanoseconds duration) noexcept;
    /// Durations observed: the sum of `buckets`.
    [[nodiscard]] std::uint64_t count() const noexcept;
    /// Durations <= kBounds[bound] (Prometheus's cumulative "le" bucket);
    /// count() for bound >= kBounds.size().
    [[nodiscard]] std::uint64_t at_most(std::size_t bound) const noexcept;
  };

  DurationHistogram() = default;
  DurationHistogram(const DurationHistogram&) = delete;
  DurationHistogram& operator=(const DurationHistogram&) = delete;

  /// Counts one duration (a negative one as zero). Thread-safe, lock-free.
  void observe(std::chrono::nanoseconds duration) noexcept;

  [[nodiscard]] Counts snapshot() const noexcept;

  /// The bucket a duration falls into.
  [[nodiscard]] static std::size_t bucket_of(std::chrono::nanoseconds duration) noexcept;

 private:
  std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
  std::atomic<std::int64_t> sum_ns_{0};  ///< 292 years of durations before it wraps
};

}  // namespace molt::host
