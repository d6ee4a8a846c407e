// The metrics without sockets: the duration histogram, the text format's
// escaping, the upgrade totals, and GET /-/metrics rendered from a real table.
#include <algorithm>
#include <atomic>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "molt/host/common/histogram.hpp"
#include "molt/host/net/metrics.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;
using host::DurationHistogram;
using host::MetricsText;
using host::Outcome;
using Catch::Matchers::Contains;

namespace {

host::UpgradeReport report_of(std::string module, Outcome outcome, std::chrono::microseconds pause,
                              std::uint64_t queued = 0) {
  host::UpgradeReport report;
  report.module = std::move(module);
  report.outcome = outcome;
  report.pause = pause;
  report.queued_calls = queued;
  return report;
}

}  // namespace

TEST_CASE("a duration counts in the first bucket whose bound is not below it", "[metrics]") {
  CHECK(DurationHistogram::bucket_of(0ns) == 0);
  CHECK(DurationHistogram::bucket_of(5us) == 0);  // bounds are inclusive, like Prometheus's "le"
  CHECK(DurationHistogram::bucket_of(5us + 1ns) == 1);
  CHECK(DurationHistogram::bucket_of(1ms) == 7);
  CHECK(DurationHistogram::bucket_of(1ms + 1ns) == 8);
  CHECK(DurationHistogram::bucket_of(10s) == DurationHistogram::kBounds.size() - 1);
  CHECK(DurationHistogram::bucket_of(10s + 1ns) == DurationHistogram::kBounds.size());  // +Inf
  CHECK(DurationHistogram::bucket_of(std::chrono::hours(1000)) == DurationHistogram::kBuckets - 1);

  DurationHistogram histogram;
  histogram.observe(-5ms);  // a clock that stepped back counts as zero
  const auto counts = histogram.snapshot();
  CHECK(counts.buckets[0] == 1);
  CHECK(counts.sum == 0ns);
}

TEST_CASE("a histogram renders cumulative le buckets, +Inf equal to the count, and the sum in seconds", "[metrics]") {
  DurationHistogram histogram;
  for (auto d : {std::chrono::nanoseconds(3us), std::chrono::nanoseconds(5us), std::chrono::nanoseconds(7us),
                 std::chrono::nanoseconds(1ms), std::chrono::nanoseconds(20s)})
    histogram.observe(d);
  const auto counts = histogram.snapshot();
  CHECK(counts.count() == 5);
  CHECK(counts.at_most(0) == 2);
  CHECK(counts.at_most(1) == 3);
  CHECK(counts.at_most(DurationHistogram::kBounds.size() - 1) == 4);
  CHECK(counts.sum == 20001015us);

  MetricsText out;
  out.family("h_seconds", "histogram", "test");
  out.histogram("h_seconds", {{"module", "m"}}, counts);
  const std::string& text = out.text();
  CHECK_THAT(text, Contains("# HELP h_seconds test\n# TYPE h_seconds histogram\n"
                            "h_seconds_bucket{module=\"m\",le=\"0.000005\"} 2\n"
                            "h_seconds_bucket{module=\"m\",le=\"0.00001\"} 3\n"
                            "h_seconds_bucket{module=\"m\",le=\"0.000025\"} 3\n"));
  CHECK_THAT(text, Contains("h_seconds_bucket{module=\"m\",le=\"0.0005\"} 3\n"
                            "h_seconds_bucket{module=\"m\",le=\"0.001\"} 4\n"
                            "h_seconds_bucket{module=\"m\",le=\"0.0025\"} 4\n"));
  CHECK_THAT(text, Contains("h_seconds_bucket{module=\"m\",le=\"10\"} 4\n"
                            "h_seconds_bucket{module=\"m\",le=\"+Inf\"} 5\n"
                            "h_seconds_sum{module=\"m\"} 20.001015\n"
                            "h_seconds_count{module=\"m\"} 5\n"));
  // One line per bound, +Inf, sum and count, after HELP and TYPE.
  CHECK(std::count(text.begin(), text.end(), '\n') == 2 + static_cast<long>(DurationHistogram::kBuckets) + 2);
}

TEST_CASE("concurrent observers lose no duration", "[metrics]") {
  DurationHistogram histogram;
  constexpr int kThreads = 4, kEach = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&histogram, t] {
      for (int i = 0; i < kEach; ++i) histogram.observe(std::chrono::microseconds(t * 100 + i % 3));
    });
  for (auto& thread : threads) thread.join();
  const auto counts = histogram.snapshot();
  CHECK(counts.count() == kThreads * kEach);
  std::int64_t expected_ns = 0;
  for (int t = 0; t < kThreads; ++t)
    for (int i = 0; i < kEach; ++i) expected_ns += (t * 100 + i % 3) * 1000;
  CHECK(counts.sum.count() == expected_ns);
  CHECK(counts.at_most(0) == kEach);  // thread 0's durations are 0-2 us
}

TEST_CASE("label values escape backslash, double quote and line feed, and nothing else", "[metrics]") {
  CHECK(host::escape_label_value("plain kv-2 ü") == "plain kv-2 ü");
  CHECK(host::escape_label_value("a\\b\"c\nd") == "a\\\\b\\\"c\\nd");
  CHECK(host::escape_label_value("\t") == "\t");

  MetricsText out;
  out.family("m_total", "counter", "back\\slash and\nnew line; \"quotes\" stay");
  out.sample("m_total", {{"module", "x\"y"}, {"file", "C:\\a\nb"}}, std::uint64_t{7});
  out.sample("m_total", {}, 0.25);
  CHECK(out.text() ==
        "# HELP m_total back\\\\slash and\\nnew line; \"quotes\" stay\n"
        "# TYPE m_total counter\n"
        "m_total{module=\"x\\\"y\",file=\"C:\\\\a\\nb\"} 7\n"
        "m_total 0.25\n");
}

TEST_CASE("metric values are the shortest decimals that read back", "[metrics]") {
  CHECK(host::format_metric_value(0) == "0");
  CHECK(host::format_metric_value(10) == "10");
  CHECK(host::format_metric_value(0.0025) == "0.0025");
  CHECK(host::format_metric_value(1764000000.125) == "1764000000.125");
  CHECK(host::format_metric_value(1e20) == "1e+20");
  CHECK(std::stod(host::format_metric_value(1.0 / 3)) == 1.0 / 3);
}

TEST_CASE("upgrade totals count every report by outcome, also those the history forgot", "[metrics]") {
  host::UpgradeHistory history(2);
  history.record(report_of("counter", Outcome::Succeeded, 40us, 3));
  history.record(report_of("counter", Outcome::RolledBack, 2ms, 1));
  history.record(report_of("counter", Outcome::Refused, 0us));
  history.record(report_of("counter", Outcome::Succeeded, 30us));
  history.record(report_of("kv", Outcome::Refused, 0us));
  CHECK(history.list().size() == 2);

  const auto totals = history.totals();
  REQUIRE(totals.size() == 2);
  const auto& counter = totals.at("counter");
  CHECK(counter.count(Outcome::Succeeded) == 2);
  CHECK(counter.count(Outcome::RolledBack) == 1);
  CHECK(counter.count(Outcome::Refused) == 1);
  CHECK(counter.queued_calls == 4);
  CHECK(counter.pause.count() == 3);  // the refused upgrade did not pause the module
  CHECK(counter.pause.sum == 2070us);
  CHECK(counter.pause.at_most(DurationHistogram::bucket_of(50us)) == 2);
  const auto& kv = totals.at("kv");
  CHECK(kv.count(Outcome::Refused) == 1);
  CHECK(kv.pause.count() == 0);
}

TEST_CASE("the metrics of a table show its calls, versions, upgrades and loaded images", "[metrics]") {
  test::TempDir dir;
  host::Loader loader(host::LoaderOptions{dir.path() / "images"});
  host::ModuleTable table(loader, host::TableOptions{dir.path(), {}, test::test_logger, 0});
  REQUIRE(table.start(host::ModuleConfig{"counter", test::plugin_path("counter", 1), {}, {}}));
  CHECK(loader.loaded_images() == 1);
  const auto slot = table.find("counter");
  for (int i = 0; i < 3; ++i) test::call_ok(*slot, "POST", "/counter/incr");
  REQUIRE(slot->call(test::request("GET", "/counter/nowhere")));  // 404: answered, so a call, not an error

  const auto upgraded = table.reload("counter", test::plugin_path("counter", 2));
  REQUIRE(upgraded);
  REQUIRE(upgraded->outcome == Outcome::Succeeded);
  CHECK(loader.loaded_images() == 1);  // v1 unloaded with its last instance
  {
    std::ofstream(dir.path() / "counter-3.so") << "junk\n";
  }
  const auto refused = table.reload("counter", dir.path() / "counter-3.so");
  REQUIRE(refused);
  CHECK(refused->outcome == Outcome::Refused);

  host::HostInfo info;
  info.version = "9.9.9";
  info.started_at = std::chrono::system_clock::now() - 90s;
  info.http = "127.0.0.1:1";
  info.http_connections = [] { return std::size_t{2}; };
  const std::string text = host::render_metrics(table, info);
  CAPTURE(text);
  CHECK_THAT(text, Contains("\nmolt_build_info{version=\"9.9.9\"} 1\n"));
  CHECK_THAT(text, Contains("\nmolt_loaded_images 1\n"));
  CHECK_THAT(text, Contains("\nmolt_http_connections{listener=\"127.0.0.1:1\"} 2\n"));
  CHECK_THAT(text, Contains("\nmolt_module_info{module=\"counter\",version=\"2\",schema=\"2\",file_sha256=\"" +
                            slot->running().sha256 + "\"} 1\n"));
  CHECK_THAT(text, Contains("\nmolt_module_calls_total{module=\"counter\"} 4\n"));
  CHECK_THAT(text, Contains("\nmolt_module_call_errors_total{module=\"counter\"} 0\n"));
  CHECK_THAT(text, Contains("\nmolt_module_call_duration_seconds_count{module=\"counter\"} 4\n"));
  CHECK_THAT(text, Contains("\nmolt_module_call_duration_seconds_bucket{module=\"counter\",le=\"+Inf\"} 4\n"));
  CHECK_THAT(text, Contains("\nmolt_module_state_bytes{module=\"counter\"} " + std::to_string(upgraded->state_bytes) + "\n"));
  CHECK_THAT(text, Contains("\nmolt_upgrades_total{module=\"counter\",outcome=\"succeeded\"} 1\n"
                            "molt_upgrades_total{module=\"counter\",outcome=\"rolled back\"} 0\n"
                            "molt_upgrades_total{module=\"counter\",outcome=\"refused\"} 1\n"));
  CHECK_THAT(text, Contains("\nmolt_upgrade_pause_seconds_count{module=\"counter\"} 1\n"));
  CHECK_THAT(text, Contains("\nmolt_upgrade_queued_calls_total{module=\"counter\"} 0\n"));
  CHECK_THAT(text, !Contains("molt_listener_connections"));  // no stream server, no listeners
  // Every family is announced once, before its samples.
  for (const char* family : {"molt_uptime_seconds", "molt_module_calls_waiting", "molt_upgrade_pause_seconds"}) {
    CHECK_THAT(text, Contains(std::string("# HELP ") + family + ' '));
    CHECK_THAT(text, Contains(std::string("# TYPE ") + family + ' '));
  }
}

TEST_CASE("calls timed one in 64 at random: the count is exact, the buckets and the sum within a few percent",
          "[metrics]") {
  // What ModuleSlot does with each call when sampling (CallSampler, repeat_last), for
  // 8,000,000 calls of known durations: 90% fast (3 us), 9% slower (80 us),
  // 1% slow (4 ms), interleaved in a fixed pattern the sampling must not
  // line up with.
  DurationHistogram histogram;
  DurationHistogram::Counts truth;
  constexpr int kCalls = 8000000;
  auto duration_of = [](int call) {
    const int k = call % 100;
    return k == 37 ? std::chrono::nanoseconds(4ms) : k % 11 == 5 ? std::chrono::nanoseconds(80us) : 3us;
  };
  std::uint64_t timed = 0;
  for (int call = 0; call < kCalls; ++call) {
    const auto duration = duration_of(call);
    truth.add(duration);
    if (host::CallSampler::pick() || !histogram.observed_any()) {
      histogram.observe(duration, DurationHistogram::Writers::One);
      ++timed;
    } else {
      histogram.repeat_last(DurationHistogram::Writers::One);
    }
  }
  const auto counts = histogram.snapshot();
  CHECK(counts.count() == kCalls);
  CHECK(timed > kCalls / host::CallSampler::kOneIn * 9 / 10);
  CHECK(timed < kCalls / host::CallSampler::kOneIn * 11 / 10);
  for (std::size_t bucket = 0; bucket < DurationHistogram::kBuckets; ++bucket) {
    INFO("bucket " << bucket << ": " << counts.buckets[bucket] << " counted, " << truth.buckets[bucket] << " true");
    const double share = static_cast<double>(counts.buckets[bucket]) / kCalls;
    const double true_share = static_cast<double>(truth.buckets[bucket]) / kCalls;
    CHECK(share == Approx(true_share).margin(0.01));
    if (truth.buckets[bucket] == 0) CHECK(counts.buckets[bucket] == 0);  // nothing where nothing was
  }
  // The sum is mostly the 1% slow calls, of which about 1,250 are timed,
  // each standing for the run of untimed calls after it: about 4% apart
  // from the truth (one standard deviation), so 15% is a bound, not luck.
  CHECK(static_cast<double>(counts.sum.count()) == Approx(static_cast<double>(truth.sum.count())).epsilon(0.15));
}

TEST_CASE("every call is timed until a module is called more than 50,000 times a second, and again when it slows",
          "[metrics]") {
  host::CallSampler sampler;
  const auto t0 = std::chrono::steady_clock::time_point(std::chrono::seconds(1000));
  std::uint64_t calls = 0;
  auto count = [&] { return calls; };
  CHECK_FALSE(sampler.sampling());
  sampler.timed(t0, count);  // the first window begins
  calls += 4000;            // 40,000 a second
  sampler.timed(t0 + 100ms, count);
  CHECK_FALSE(sampler.sampling());
  calls += 9000;  // 90,000 a second
  sampler.timed(t0 + 150ms, count);  // mid-window: nothing decided
  CHECK_FALSE(sampler.sampling());
  sampler.timed(t0 + 200ms, count);
  CHECK(sampler.sampling());
  int timed = 0;
  for (int i = 0; i < 64000; ++i) timed += sampler.time_this_call() ? 1 : 0;
  CHECK(timed > 800);
  CHECK(timed < 1200);
  calls += 100;  // 1,000 a second
  sampler.timed(t0 + 300ms, count);
  CHECK_FALSE(sampler.sampling());
  for (int i = 0; i < 100; ++i) CHECK(sampler.time_this_call());
}

TEST_CASE("a serial module called from many threads: its histogram counts every call exactly", "[metrics]") {
  test::Harness h;
  auto slot = h.start(test::plugin_path("counter", 1), "counter");
  constexpr int kThreads = 4, kEach = 5000;
  std::atomic<int> failed{0};  // Catch's assertions are not for other threads
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&slot, &failed] {
      for (int i = 0; i < kEach; ++i)
        if (!slot->call(api::Request{"GET", "/counter", "", {}, {}})) ++failed;
    });
  for (auto& thread : threads) thread.join();
  CHECK(failed == 0);
  CHECK(slot->call_durations().count() == kThreads * kEach);
  CHECK(slot->stats().calls == kThreads * kEach);
  CHECK(slot->call_durations().sum > 0ns);
}
