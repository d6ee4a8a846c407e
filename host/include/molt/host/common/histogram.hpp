// A histogram of durations for the metrics: how long module calls and
// upgrade pauses took, counted into fixed buckets.
//
// observe() is on module calls, so it is lock-free and allocation-free: a
// search through 20 bounds and two relaxed additions, atomic ones when many
// threads observe at once (Writers::Many) and a plain load and store when
// one at a time does (Writers::One: the calls of a serial module, each alone
// in its gate). Readers take a snapshot() while observers go on; a snapshot's
// count is the sum of its buckets, so the "+Inf" bucket always equals the
// count, as Prometheus requires, even when the sum was read a call earlier
// or later. Counts is also a histogram of its own, without atomics, for data
// behind a lock.
//
// Module calls are not always all timed. Reading the clock twice costs
// about 50 ns on this project's machine (perf: a third of a call through a
// slot, bench/call_bench.cpp), nothing next to a request over a socket but
// most of what the host adds to a call when a module is called millions of
// times a second. So CallSampler times every call of a module called at most
// 50,000 times a second (the histogram is exact), and above that one call in
// 64, chosen at random; every other call is then counted as if it took as
// long as the last one timed (repeat_last). The count stays exact; the
// buckets and the sum are an estimate, as good as the calls are many
// (tests/unit/metrics_test.cpp measures it).
#pragma once

#include <algorithm>
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

  /// Who observes at the same time.
  enum class Writers {
    Many,  ///< any number of threads: atomic additions
    One,   ///< one at a time, ordered by a lock or a serial gate: no locked instruction
  };

  DurationHistogram() = default;
  DurationHistogram(const DurationHistogram&) = delete;
  DurationHistogram& operator=(const DurationHistogram&) = delete;

  /// Counts one duration (a negative one as zero). Lock-free.
  void observe(std::chrono::nanoseconds duration, Writers writers = Writers::Many) noexcept;

  /// Counts one duration that was not measured as the last one observe()
  /// counted (in its bucket, and into the sum). Lock-free.
  void repeat_last(Writers writers) noexcept {
    const std::int64_t ns = last_ns_.load(std::memory_order_relaxed);
    add<std::uint64_t>(buckets_[last_bucket_.load(std::memory_order_relaxed)], 1, writers);
    add<std::uint64_t>(sum_ns_, ns > 0 ? static_cast<std::uint64_t>(ns) : 0, writers);
  }

  /// Whether observe() has counted anything yet (repeat_last has nothing to repeat before).
  [[nodiscard]] bool observed_any() const noexcept { return last_ns_.load(std::memory_order_relaxed) >= 0; }

  [[nodiscard]] Counts snapshot() const noexcept;
  /// Adds what another histogram counted (a hot restart's predecessor's:
  /// counters never go back). Lock-free.
  void add_counts(const Counts& counts) noexcept {
    for (std::size_t i = 0; i < kBuckets; ++i) buckets_[i].fetch_add(counts.buckets[i], std::memory_order_relaxed);
    sum_ns_.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(0, counts.sum.count())), std::memory_order_relaxed);
  }

  /// The bucket a duration falls into.
  [[nodiscard]] static std::size_t bucket_of(std::chrono::nanoseconds duration) noexcept;

 private:
  template <class T>
  static void add(std::atomic<T>& counter, T amount, Writers writers) noexcept {
    if (writers == Writers::One)
      counter.store(counter.load(std::memory_order_relaxed) + amount, std::memory_order_relaxed);
    else
      counter.fetch_add(amount, std::memory_order_relaxed);
  }

  std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
  std::atomic<std::uint64_t> sum_ns_{0};  ///< 584 years of durations before it wraps
  // The last duration observe() counted, for repeat_last; -1: none yet.
  std::atomic<std::size_t> last_bucket_{0};
  std::atomic<std::int64_t> last_ns_{-1};
};

/// Which calls of one module to time (see the header comment): every call
/// while the module is called at most kSampleAbove times a second, one in
/// kOneIn at random above that. The rate is measured over windows of
/// kWindow, at the calls that are timed.
class CallSampler {
 public:
  /// One call in this many is timed when sampling. A power of two.
  static constexpr std::uint64_t kOneIn = 64;
  /// Calls per second above which calls are sampled: timing all of them
  /// costs about 50 ns each (two clock reads), 0.25% of a core at this rate.
  static constexpr std::uint64_t kSampleAbove = 50000;
  static constexpr std::chrono::milliseconds kWindow{100};

  /// Whether to time the call about to be made.
  [[nodiscard]] bool time_this_call() const noexcept {
    return !sampling_.load(std::memory_order_relaxed) || pick();
  }

  /// A timed call ended at `now`; `calls` is how many calls were counted so
  /// far (read only when a window ends). Thread-safe: racing calls may
  /// each close a window, which only makes one window shorter.
  template <class CountCalls>
  void timed(std::chrono::steady_clock::time_point now, CountCalls&& calls) noexcept {
    const std::int64_t now_ns = now.time_since_epoch().count();
    const std::int64_t began = window_began_ns_.load(std::memory_order_relaxed);
    if (now_ns - began < std::chrono::nanoseconds(kWindow).count()) return;
    const std::uint64_t count = calls();
    const std::uint64_t before = window_calls_.exchange(count, std::memory_order_relaxed);
    window_began_ns_.store(now_ns, std::memory_order_relaxed);
    if (began == 0) return;  // the first window begins now
    const double per_second = static_cast<double>(count - std::min(count, before)) * 1e9 / static_cast<double>(now_ns - began);
    sampling_.store(per_second > static_cast<double>(kSampleAbove), std::memory_order_relaxed);
  }

  /// Whether calls are sampled now (else every call is timed).
  [[nodiscard]] bool sampling() const noexcept { return sampling_.load(std::memory_order_relaxed); }

  /// true for one call in kOneIn, at random (a per-thread xorshift64, so
  /// that no pattern in the calls can line up with it).
  [[nodiscard]] static bool pick() noexcept {
    std::uint64_t x = random_state != 0 ? random_state : seed();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    random_state = x;
    return (x & (kOneIn - 1)) == 0;
  }

 private:
  /// A nonzero seed for this thread.
  [[nodiscard]] static std::uint64_t seed() noexcept;
  /// This thread's xorshift64 state; 0 until its first draw.
  static constinit thread_local std::uint64_t random_state __attribute__((tls_model("initial-exec")));

  std::atomic<bool> sampling_{false};
  std::atomic<std::int64_t> window_began_ns_{0};  ///< steady clock; 0: no window yet
  std::atomic<std::uint64_t> window_calls_{0};    ///< calls counted when it began
};

}  // namespace molt::host
