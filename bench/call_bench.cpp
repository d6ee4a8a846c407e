// What the host adds to a call, measured with Google Benchmark:
//  - a kv GET through ModuleSlot::stream_data against the same instance's
//    on_data called directly;
//  - a counter GET through ModuleSlot::call against handle() directly;
//  - a whole GET round trip over loopback TCP through the host's stream server;
//  - a ModuleCodeScope around a call (what the crash handler's bookkeeping
//    adds to every call into a module) against the bare call;
//  - the ways a call's duration can be measured for the histogram (every
//    call with steady_clock, every call with the TSC, one call in 64 at
//    random as ModuleSlot does above 50,000 calls a second), and the
//    coarse clock (what reading a cheaper clock would cost), each around
//    the same bare call;
//  - the call gate alone: entering and leaving an idle serial gate.
// Each reports allocations per call ("allocs"): this binary counts every
// operator new, so a steady-state dispatch path must show 0.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <time.h>
#include <x86intrin.h>

#include <atomic>
#include <cstdlib>
#include <new>

#include <benchmark/benchmark.h>
#include <spdlog/sinks/null_sink.h>

#include "molt/host/common/histogram.hpp"
#include "molt/host/common/module_site.hpp"
#include "molt/host/loader/loader.hpp"
#include "molt/host/net/stream_server.hpp"
#include "molt/host/slot/module_slot.hpp"

namespace {
std::atomic<std::uint64_t> g_allocations{0};
}

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

namespace fs = std::filesystem;
using namespace molt;

constexpr std::string_view kGet = "*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
constexpr std::string_view kSet = "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";

struct Collector final : api::StreamOutput {
  std::string written;
  void write(std::string_view bytes) override { written.append(bytes); }
  void close_after_write() override {}
  bool has_room() const override { return true; }
};

/// A context for an instance called directly, outside any slot.
struct BareContext final : api::Context {
  std::shared_ptr<spdlog::logger> logger =
      std::make_shared<spdlog::logger>("bench", std::make_shared<spdlog::sinks::null_sink_mt>());
  api::Values values;
  spdlog::logger& log() override { return *logger; }
  const api::Values& config() const override { return values; }
  std::string_view module_name() const override { return "bench"; }
  api::StreamLimits stream_limits() const override { return {1u << 30, 1u << 20}; }
  void set_timer(std::string_view, std::chrono::milliseconds) override {}
  void set_timer_once(std::string_view, std::chrono::milliseconds) override {}
  void cancel_timer(std::string_view) override {}
  bool start_job(std::string_view) override { return false; }
};

/// Images, a slot and a bare instance of each module, made once.
struct Setup {
  fs::path dir;
  std::unique_ptr<host::Loader> loader;
  std::shared_ptr<const host::Image> kv_image, counter_image;
  std::shared_ptr<host::ModuleSlot> kv_slot, counter_slot;
  host::Instance kv_direct, counter_direct;
  BareContext context;

  Setup() {
    char pattern[] = "/tmp/molt-bench-call-XXXXXX";
    dir = ::mkdtemp(pattern);
    loader = std::make_unique<host::Loader>(host::LoaderOptions{dir / "images"});
    kv_image = must(loader->load(fs::path(MOLT_PLUGIN_DIR) / "kv-2.so", "kv"));
    counter_image = must(loader->load(fs::path(MOLT_PLUGIN_DIR) / "counter-1.so", "counter"));
    auto logger = context.logger;
    kv_slot = must(host::ModuleSlot::start(kv_image, {logger, {}, nullptr, nullptr}));
    counter_slot = must(host::ModuleSlot::start(counter_image, {logger, {}, nullptr, nullptr}));
    kv_direct = must(kv_image->instantiate());
    counter_direct = must(counter_image->instantiate());
    kv_direct->start(context);
    counter_direct->start(context);
    Collector out;
    (void)kv_slot->stream_data(1, kSet, out);
    kv_direct->on_data(1, kSet, out);
    // Called as a busy server calls them, for a while: the slots time one
    // call in 64 from the first window (CallSampler) on, as they would then.
    const api::Request get{"GET", "/counter", "", {}, {}};
    for (const auto until = std::chrono::steady_clock::now() + 2 * host::CallSampler::kWindow + std::chrono::milliseconds(50);
         std::chrono::steady_clock::now() < until;) {
      out.written.clear();
      (void)kv_slot->stream_data(1, kGet, out);
      (void)counter_slot->call(get);
    }
  }
  ~Setup() {
    kv_direct.reset();
    counter_direct.reset();
    kv_slot.reset();
    counter_slot.reset();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  template <class T>
  static T must(host::Result<T> result) {
    if (!result) {
      std::fprintf(stderr, "molt-bench-call: %s\n", result.error().to_string().c_str());
      std::exit(1);
    }
    return std::move(result.value());
  }

  static Setup& get() {
    static Setup setup;
    return setup;
  }
};

void report_allocations(benchmark::State& state, std::uint64_t before) {
  state.counters["allocs"] = benchmark::Counter(static_cast<double>(g_allocations.load() - before),
                                                benchmark::Counter::kAvgIterations);
}

void BM_KvGet_Direct(benchmark::State& state) {
  auto& s = Setup::get();
  Collector out;
  out.written.reserve(64);
  const auto before = g_allocations.load();
  for (auto _ : state) {
    out.written.clear();
    benchmark::DoNotOptimize(s.kv_direct->on_data(1, kGet, out));
  }
  report_allocations(state, before);
}

void BM_KvGet_Slot(benchmark::State& state) {
  auto& s = Setup::get();
  Collector out;
  out.written.reserve(64);
  const auto before = g_allocations.load();
  for (auto _ : state) {
    out.written.clear();
    benchmark::DoNotOptimize(s.kv_slot->stream_data(1, kGet, out));
  }
  report_allocations(state, before);
}

void BM_CounterGet_Direct(benchmark::State& state) {
  auto& s = Setup::get();
  const api::Request request{"GET", "/counter", "", {}, {}};
  const auto before = g_allocations.load();
  for (auto _ : state) benchmark::DoNotOptimize(s.counter_direct->handle(request));
  report_allocations(state, before);
}

void BM_CounterGet_Slot(benchmark::State& state) {
  auto& s = Setup::get();
  const api::Request request{"GET", "/counter", "", {}, {}};
  const auto before = g_allocations.load();
  for (auto _ : state) benchmark::DoNotOptimize(s.counter_slot->call(request));
  report_allocations(state, before);
}

/// Stands in for a module's hook: a call the compiler cannot see through.
__attribute__((noinline)) int module_hook_stand_in(int x) {
  benchmark::DoNotOptimize(x);
  return x + 1;
}

void BM_Call_Bare(benchmark::State& state) {
  int x = 0;
  for (auto _ : state) benchmark::DoNotOptimize(x = module_hook_stand_in(x));
}

void BM_Call_ModuleCodeScope(benchmark::State& state) {
  const host::ModuleSite site("kv", {2}, "/srv/molt/plugins/kv-2.so", std::string(64, 'a'));
  int x = 0;
  for (auto _ : state) {
    const host::ModuleCodeScope scope(site, host::module_hook::kOnData);
    benchmark::DoNotOptimize(x = module_hook_stand_in(x));
  }
}

// How to time a call for the histogram: each around the same bare call.

void BM_Timing_EveryCall_SteadyClock(benchmark::State& state) {
  host::DurationHistogram histogram;
  int x = 0;
  for (auto _ : state) {
    const auto started = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(x = module_hook_stand_in(x));
    histogram.observe(std::chrono::steady_clock::now() - started, host::DurationHistogram::Writers::One);
  }
}

void BM_Timing_EveryCall_Tsc(benchmark::State& state) {
  // The TSC's rate, taken as 1 GHz here: what is measured is the cost of
  // reading it, not the conversion a real use would calibrate.
  host::DurationHistogram histogram;
  int x = 0;
  for (auto _ : state) {
    const auto started = __rdtsc();
    benchmark::DoNotOptimize(x = module_hook_stand_in(x));
    histogram.observe(std::chrono::nanoseconds(__rdtsc() - started), host::DurationHistogram::Writers::One);
  }
}

void BM_Timing_OneIn64(benchmark::State& state) {
  host::DurationHistogram histogram;
  int x = 0;
  for (auto _ : state) {
    const bool timed = host::CallSampler::pick() || !histogram.observed_any();
    const auto started = timed ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    benchmark::DoNotOptimize(x = module_hook_stand_in(x));
    if (timed)
      histogram.observe(std::chrono::steady_clock::now() - started, host::DurationHistogram::Writers::One);
    else
      histogram.repeat_last(host::DurationHistogram::Writers::One);
  }
}

void BM_Clock_Coarse(benchmark::State& state) {
  for (auto _ : state) {
    timespec now{};
    ::clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    benchmark::DoNotOptimize(now);
  }
}

void BM_Gate_SerialIdle(benchmark::State& state) {
  host::CallGate gate(api::CallMode::Serial);
  int x = 0;
  for (auto _ : state) {
    const host::CallGate::Pass pass = gate.enter("handle");
    benchmark::DoNotOptimize(x = module_hook_stand_in(x));
  }
}

/// One atomic read-modify-write on a cache line no other thread touches
/// (x86: a locked instruction): the floor under a gate that keeps other
/// threads out. BM_Gate_SerialIdle takes two (in, out), so on a machine
/// where this costs c, the idle gate costs at least 2c.
void BM_Atomic_Rmw(benchmark::State& state) {
  std::atomic<std::uint64_t> word{0};
  for (auto _ : state) benchmark::DoNotOptimize(word.fetch_add(1, std::memory_order_acq_rel));
}

/// A GET sent and answered over loopback TCP through the host's stream
/// server (one I/O thread) into the kv slot. The client side allocates
/// nothing, so "allocs" is the host's dispatch path plus kv's.
void BM_KvGet_Tcp(benchmark::State& state) {
  auto& s = Setup::get();
  auto logger = s.context.logger;
  host::StreamServer server(host::StreamOptions{.threads = 1, .max_input_bytes = 1u << 20}, logger);
  auto slot = std::shared_ptr<host::ModuleSlot>(s.kv_slot.get(), [](host::ModuleSlot*) {});
  const auto endpoint = server.listen(host::Endpoint{"127.0.0.1", 0}, slot);
  if (!endpoint) return state.SkipWithError(endpoint.error().to_string().c_str());
  server.serve();

  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(endpoint->port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return state.SkipWithError("connect");
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const std::string_view expected = "$5\r\nvalue\r\n";
  char reply[64];
  auto round_trip = [&] {
    (void)::send(fd, kGet.data(), kGet.size(), 0);
    std::size_t got = 0;
    while (got < expected.size()) {
      const ssize_t n = ::recv(fd, reply + got, sizeof reply - got, 0);
      if (n <= 0) return false;
      got += static_cast<std::size_t>(n);
    }
    return true;
  };
  for (int i = 0; i < 1000; ++i) round_trip();  // warm up: buffers reach their working size
  const auto before = g_allocations.load();
  for (auto _ : state)
    if (!round_trip()) return state.SkipWithError("connection lost");
  report_allocations(state, before);
  ::close(fd);
  server.stop(std::chrono::seconds(1));
}

}  // namespace

BENCHMARK(BM_KvGet_Direct);
BENCHMARK(BM_KvGet_Slot);
BENCHMARK(BM_CounterGet_Direct);
BENCHMARK(BM_CounterGet_Slot);
BENCHMARK(BM_KvGet_Tcp)->UseRealTime();
BENCHMARK(BM_Call_Bare);
BENCHMARK(BM_Call_ModuleCodeScope);
BENCHMARK(BM_Timing_EveryCall_SteadyClock);
BENCHMARK(BM_Timing_EveryCall_Tsc);
BENCHMARK(BM_Timing_OneIn64);
BENCHMARK(BM_Clock_Coarse);
BENCHMARK(BM_Gate_SerialIdle);
BENCHMARK(BM_Atomic_Rmw);
BENCHMARK_MAIN();
