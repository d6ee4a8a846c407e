// molt-bench-kv: kv against redis-server, upgrades under load, and the
// upgrade pause against state size; one report, one JSON file.
//
//   (a) redis-benchmark -t set,get,incr,lpush,lpop -n N -c 50, without and with
//       -P 16, against redis-server and against moltd's kv, in this run;
//   (b) the same load (SET, GET) while kv is upgraded 2->3 and rolled back every
//       50 ms, with a client that checks afterwards that no acknowledged write
//       was lost;
//   (c) in this process, on the real transaction: the pause of a migrating
//       upgrade (1->2 by stop-and-copy, 2->1 and 1->2 by pre-copy) and of a
//       code-only one (2->3) at 1K..10M keys, each phase and the total, peak
//       RSS against steady RSS; p50/p99 over 200 upgrades at 10K keys;
//   (d) molt-bench-call (Google Benchmark): a call through a module slot against
//       a direct call, and a TCP round trip, with allocations per call;
//   (e) through a real moltd, what a client on its own connection waits
//       (its longest PING round trip around the command) during a reload
//       of kv 1->2 (stop-and-copy, pre-copy, pre-copy after a rehearsal),
//       2->3 and a save, beside the pause the host reports, while a writer
//       SETs on its own connection: its rate before and during the
//       pre-copy, and every key it was acknowledged read back afterwards;
//       moltd's peak RSS over its RSS before the command;
//   (f) through a real moltd, 50 hot restarts of moltd itself at 10K and 1M
//       keys (pre-copy; stop-and-copy at 1M), under 150 RESP connections
//       pipelining INCRs and 50 HTTP keep-alive connections: connections
//       closed, replies lost, repeated or reordered, errors, a PING client's
//       longest round trip around each hot restart, moltd's own freeze;
//   (g) two real moltd: kv with 1M keys handed back and forth (moltctl
//       handoff) under a writer on one connection to the source: its rate,
//       its longest round trip, moltd's freeze, pre-copy rounds, the
//       source's peak RSS; then every key read back from the owner.
// Then every target of the issues is checked and marked met or missed.
#include <malloc.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/null_sink.h>

#include "molt/host/common/sha256.hpp"
#include "molt/host/control/control_server.hpp"
#include "molt/host/upgrade/transaction.hpp"
#include "http_client.hpp"
#include "process.hpp"
#include "resp_client.hpp"

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;
using namespace molt;
using molt::test::Process;
using molt::test::RespClient;
using molt::test::run_process;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  std::uint64_t requests = 1000000;
  unsigned clients = 50;
  unsigned rounds = 3;
  unsigned baseline_s = 15;
  unsigned io_threads = 1;
  unsigned upgrades = 1000;  ///< issue 5: >= 1000; their snapshots are coalesced (install_snapshot_delay_ms, at most one per 30 s)
  unsigned period_ms = 50;
  std::vector<std::uint64_t> sizes{1000, 100000, 1000000, 10000000};
  unsigned pause_rounds = 200;
  std::vector<std::uint64_t> stall_sizes{100000, 1000000, 10000000};
  std::string sections = "abcdefg";
  unsigned restarts = 50;  ///< (f): hot restarts per state size
  std::vector<std::uint64_t> restart_sizes{10000, 1000000};
  unsigned resp_clients = 150, http_clients = 50;  ///< (f): connections that must live through them
  unsigned crowd_rate = 20;  ///< (f): rounds per second on each of them (a RESP round: 4 pipelined INCRs)
  unsigned handoffs = 6;  ///< (g): handoffs per state size, alternating direction
  std::vector<std::uint64_t> handoff_sizes{1000000};
  std::string json_path;
  bool quick = false;  ///< (d) with a very short minimum time: a smoke test, not a measurement
  bool trace_stalls = false;  ///< (e): every round trip over 5 ms, with its wall time; moltd logs at info, kept
};

fs::path bin(const std::string& name) { return fs::path(MOLT_BIN_DIR) / name; }
fs::path plugin(unsigned version) { return fs::path(MOLT_PLUGIN_DIR) / ("kv-" + std::to_string(version) + ".so"); }

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<std::size_t>(p * static_cast<double>(values.size())))];
}

std::string fixed(double value, int decimals = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

std::string bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB"};
  int unit = 0;
  while (b >= 1024 && unit < 3) {
    b /= 1024;
    ++unit;
  }
  return fixed(b, unit == 0 ? 0 : 1) + " " + units[unit];
}

std::string duration(double us) {
  if (us < 1000) return fixed(us, 0) + " us";
  if (us < 1000000) return fixed(us / 1000, 2) + " ms";
  return fixed(us / 1e6, 2) + " s";
}

// ---------------------------------------------------------------------------
// Servers

bool answers_ping(std::uint16_t port) {
  try {
    return RespClient(port).call({"PING"}) == "+PONG\r\n";
  } catch (const std::exception&) {
    return false;
  }
}

bool wait_for(const std::function<bool()>& condition) {
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (!condition()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

class RedisServer {
 public:
  explicit RedisServer(const fs::path& dir) : port_(test::free_port()) {
    fs::create_directories(dir);
    process_ = std::make_unique<Process>(
        std::vector<std::string>{"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", dir.string()},
        dir / "redis-server.out");
    if (!wait_for([&] { return answers_ping(port_); })) throw std::runtime_error("redis-server did not start");
  }
  ~RedisServer() {
    process_->signal(SIGTERM);
    process_->wait(std::chrono::seconds(10));
  }
  [[nodiscard]] std::uint16_t port() const { return port_; }

 private:
  std::uint16_t port_;
  std::unique_ptr<Process> process_;
};

class Moltd {
 public:
  /// kv `version` (its images 1, 2 and 3 in the plugin directory); `host_config`: more [host] lines.
  /// `version` 0: no kv until a handoff brings it (accept_handoff); `kv_config`: more [modules.kv] lines.
  Moltd(const fs::path& dir, unsigned io_threads, unsigned version = 2, const std::string& host_config = "",
        const char* log_level = "warn", const std::string& kv_config = "")
      : dir_(dir), port_(test::free_port()) {
    fs::create_directories(dir / "plugins");
    for (unsigned v : {1u, 2u, 3u}) fs::copy_file(plugin(v), dir / "plugins" / plugin(v).filename(), fs::copy_options::overwrite_existing);
    std::ofstream(dir / "moltd.toml") << "[host]\nrun_dir = \"" << (dir / "run").string() << "\"\nplugin_dir = \""
                                      << (dir / "plugins").string() << "\"\nhttp = \"127.0.0.1:0\"\nio_threads = "
                                      << io_threads << "\nlog_level = \"" << log_level << "\"\n" << host_config
                                      << "\n[modules.kv]\n" << (version == 0 ? "" : "version = " + std::to_string(version) + "\n")
                                      << "listen = \"127.0.0.1:" << port_ << "\"\n" << kv_config;
    process_ = std::make_unique<Process>(std::vector<std::string>{bin("moltd"), "--config", (dir / "moltd.toml").string()},
                                         dir / "moltd.out");
    const auto up = [&] {
      if (version != 0) return answers_ping(port_);
      return host::control_call(socket(), {{"command", "status"}}).ok();
    };
    if (!wait_for(up)) throw std::runtime_error("moltd did not start; see " + (dir / "moltd.out").string());
  }
  ~Moltd() {
    if (successor_ > 0) {  // a hot restart's: our child too (main makes this process a subreaper)
      ::kill(successor_, SIGTERM);
      const auto deadline = Clock::now() + std::chrono::seconds(20);
      while (::waitpid(successor_, nullptr, WNOHANG) == 0 && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    process_->signal(SIGTERM);
    process_->wait(std::chrono::seconds(20));
  }
  /// After a hot restart: moltd is `pid` now; the process before it exits by itself.
  void follow(pid_t pid) {
    process_->wait(std::chrono::seconds(20));
    successor_ = pid;
  }
  [[nodiscard]] std::uint16_t port() const { return port_; }
  [[nodiscard]] fs::path socket() const { return dir_ / "run" / "control.sock"; }
  [[nodiscard]] fs::path plugins() const { return dir_ / "plugins"; }
  [[nodiscard]] pid_t pid() const { return successor_ > 0 ? successor_ : process_->pid(); }
  /// Its HTTP address, from its status.
  [[nodiscard]] std::string http() const {
    auto status = host::control_call(socket(), {{"command", "status"}});
    if (!status) throw std::runtime_error("moltd status: " + status.error().to_string());
    return status->body["host"]["http"].get<std::string>();
  }

 private:
  fs::path dir_;
  std::uint16_t port_;
  std::unique_ptr<Process> process_;
  pid_t successor_ = 0;
};

// ---------------------------------------------------------------------------
// (a) throughput

struct BenchRow {
  std::string test;
  double rps = 0, p50 = 0, p99 = 0, max = 0;
};

std::vector<BenchRow> redis_benchmark(std::uint16_t port, const std::string& tests, std::uint64_t requests,
                                      unsigned clients, unsigned pipeline, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv{"redis-benchmark", "-h", "127.0.0.1", "-p", std::to_string(port), "-t", tests,
                                "-n", std::to_string(requests), "-c", std::to_string(clients), "-P",
                                std::to_string(pipeline), "--csv"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  const auto result = run_process(argv, std::chrono::minutes(30));
  if (result.exit_code != 0) throw std::runtime_error("redis-benchmark failed: " + result.err);
  // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
  std::vector<BenchRow> rows;
  std::istringstream in(result.out);
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> cells;
    std::stringstream fields(line);
    std::string cell;
    while (std::getline(fields, cell, ',')) cells.push_back(cell.size() >= 2 ? cell.substr(1, cell.size() - 2) : cell);
    if (cells.size() < 8 || cells[0] == "test") continue;
    rows.push_back({cells[0], std::stod(cells[1]), std::stod(cells[4]), std::stod(cells[6]), std::stod(cells[7])});
  }
  return rows;
}

/// The median of `rounds` runs, per test: the VM's noise is large between
/// two back-to-back runs, so redis-server and kv alternate, round by round.
std::vector<BenchRow> medians(const std::vector<std::vector<BenchRow>>& rounds) {
  std::vector<BenchRow> out;
  for (const auto& first : rounds.front()) {
    std::vector<double> rps, p50, p99, max;
    for (const auto& round : rounds)
      for (const auto& row : round)
        if (row.test == first.test) rps.push_back(row.rps), p50.push_back(row.p50), p99.push_back(row.p99), max.push_back(row.max);
    out.push_back({first.test, percentile(rps, 0.5), percentile(p50, 0.5), percentile(p99, 0.5), percentile(max, 0.5)});
  }
  return out;
}

Json section_a(const Options& o, std::uint16_t redis_port, std::uint16_t kv_port) {
  std::printf("\n(a) Throughput: redis-benchmark -t set,get,incr,lpush,lpop -n %llu -c %u, same run;\n"
              "    median of %u rounds, redis-server and kv alternating\n",
              static_cast<unsigned long long>(o.requests), o.clients, o.rounds);
  std::printf("    %-6s %8s | %14s %14s | %7s | %9s %9s\n", "test", "pipeline", "redis-server/s", "molt kv/s",
              "kv/redis", "redis p99", "kv p99");
  Json out = Json::array();
  for (unsigned pipeline : {1u, 16u}) {
    std::vector<std::vector<BenchRow>> redis_rounds, kv_rounds;
    for (unsigned round = 0; round < o.rounds; ++round) {
      redis_rounds.push_back(redis_benchmark(redis_port, "set,get,incr,lpush,lpop", o.requests, o.clients, pipeline));
      kv_rounds.push_back(redis_benchmark(kv_port, "set,get,incr,lpush,lpop", o.requests, o.clients, pipeline));
    }
    const auto redis = medians(redis_rounds);
    const auto kv = medians(kv_rounds);
    for (const auto& r : redis) {
      const auto k = std::find_if(kv.begin(), kv.end(), [&](const BenchRow& row) { return row.test == r.test; });
      if (k == kv.end()) continue;
      const double ratio = k->rps / r.rps;
      std::printf("    %-6s %8u | %14s %14s | %6.0f%% | %7.3f ms %7.3f ms\n", r.test.c_str(), pipeline,
                  fixed(r.rps).c_str(), fixed(k->rps).c_str(), ratio * 100, r.p99, k->p99);
      Json all_redis = Json::array(), all_kv = Json::array();
      for (const auto& round : redis_rounds)
        for (const auto& row : round)
          if (row.test == r.test) all_redis.push_back(row.rps);
      for (const auto& round : kv_rounds)
        for (const auto& row : round)
          if (row.test == r.test) all_kv.push_back(row.rps);
      out.push_back({{"test", r.test}, {"pipeline", pipeline}, {"redis_rps", r.rps}, {"kv_rps", k->rps},
                     {"ratio", ratio}, {"redis_p99_ms", r.p99}, {"kv_p99_ms", k->p99},
                     {"redis_rps_rounds", all_redis}, {"kv_rps_rounds", all_kv}});
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// (b) load while upgrading

/// One phase of (b): redis-benchmark runs back to back plus a writer that
/// remembers what was acknowledged; meanwhile `upgrades` upgrades and
/// rollbacks, one per period, or (0) just `duration` of the same load.
Json load_phase(const Options& o, Moltd& moltd, unsigned upgrades, std::chrono::seconds duration, const std::string& prefix) {
  std::atomic<bool> done{false};
  std::vector<BenchRow> load_rows;
  std::mutex rows_mutex;
  std::thread load([&] {
    while (!done) {
      auto rows = redis_benchmark(moltd.port(), "set,get", 200000, o.clients, 1, {"-r", "100000"});
      std::lock_guard lock(rows_mutex);
      load_rows.insert(load_rows.end(), rows.begin(), rows.end());
    }
  });
  std::atomic<std::uint64_t> acked{0}, errors{0};
  std::vector<double> write_latency_us;
  std::thread writer([&] {
    auto client = std::make_unique<RespClient>(moltd.port());
    for (std::uint64_t i = 0; !done; ++i) {
      const auto start = Clock::now();
      const std::string reply = client->call({"SET", prefix + std::to_string(i), std::to_string(i)});
      write_latency_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
      if (reply == "+OK\r\n") {
        acked = i + 1;
      } else {
        ++errors;  // an error reply, or a lost connection: either is a failure
        if (reply.empty()) client = std::make_unique<RespClient>(moltd.port());
      }
    }
  });

  unsigned completed = 0, failed = 0;
  std::string first_failure;
  if (upgrades == 0) {
    std::this_thread::sleep_for(duration);  // the baseline: the same load, nothing else
  } else {
    auto next = Clock::now();
    for (unsigned u = 0; u < upgrades; ++u) {
      next += std::chrono::milliseconds(o.period_ms);
      std::this_thread::sleep_until(next);  // the load pattern: one upgrade or rollback per period
      const nlohmann::json request = u % 2 == 0 ? nlohmann::json{{"command", "reload"}, {"module", "kv"},
                                                                 {"file", (moltd.plugins() / "kv-3.so").string()}}
                                                : nlohmann::json{{"command", "rollback"}, {"module", "kv"}};
      auto reply = host::control_call(moltd.socket(), request);
      if (reply && reply->body.value("ok", false)) {
        ++completed;
      } else {
        ++failed;
        if (first_failure.empty()) first_failure = reply ? reply->body.dump() : reply.error().to_string();
      }
    }
  }
  done = true;
  writer.join();
  load.join();

  // Every acknowledged write must read back.
  RespClient reader(moltd.port());
  std::uint64_t lost = 0;
  for (std::uint64_t from = 0; from < acked; from += 1000) {
    std::vector<std::string> mget{"MGET"};
    const std::uint64_t to = std::min<std::uint64_t>(from + 1000, acked);
    for (std::uint64_t i = from; i < to; ++i) mget.push_back(prefix + std::to_string(i));
    const std::string reply = reader.call(mget);
    for (std::uint64_t i = from; i < to; ++i) {
      std::string framed = "\r\n";  // the value as a bulk string's payload
      framed += std::to_string(i);
      framed += "\r\n";
      if (reply.find(framed) == std::string::npos) ++lost;
    }
  }
  Json out{{"upgrades_completed", completed}, {"upgrades_failed", failed}, {"writes_acknowledged", acked.load()},
           {"write_errors", errors.load()}, {"writes_lost", lost},
           {"writer_p99_us", percentile(write_latency_us, 0.99)}, {"writer_max_us", percentile(write_latency_us, 1.0)}};
  if (!first_failure.empty()) out["first_failure"] = first_failure;
  Json tests = Json::array();
  for (const char* test : {"SET", "GET"}) {
    std::vector<double> rps, p99, max;
    for (const auto& row : load_rows)
      if (row.test == test) rps.push_back(row.rps), p99.push_back(row.p99), max.push_back(row.max);
    tests.push_back({{"test", test}, {"runs", rps.size()}, {"rps", percentile(rps, 0.5)},
                     {"p99_ms", percentile(p99, 0.5)}, {"max_ms", percentile(max, 1.0)}});
  }
  out["load"] = tests;
  return out;
}

Json section_b(const Options& o, Moltd& moltd) {
  std::printf("\n(b) The same load (redis-benchmark SET, GET; -c %u, 100k keys) and a checking writer,\n"
              "    first alone, then while kv is upgraded 2->3 and rolled back every %u ms\n", o.clients, o.period_ms);
  Json baseline = load_phase(o, moltd, 0, std::chrono::seconds(o.baseline_s), "base:");
  Json upgrading = load_phase(o, moltd, o.upgrades, {}, "ack:");

  auto history = host::control_call(moltd.socket(), {{"command", "history"}, {"module", "kv"}});
  std::vector<double> pauses;
  std::size_t in_memory = 0;
  std::vector<nlohmann::json> slowest;
  if (history)
    for (const auto& report : history->body["reports"]) {
      pauses.push_back(report["pause_us"].get<double>());
      in_memory += report["state_transfer"] == "memory" ? 1 : 0;
      slowest.push_back(report);
    }
  std::sort(slowest.begin(), slowest.end(), [](const auto& a, const auto& b) { return a["pause_us"] > b["pause_us"]; });
  slowest.resize(std::min<std::size_t>(slowest.size(), 5));
  Json slowest_phases = Json::array();
  for (const auto& report : slowest)
    slowest_phases.push_back({{"pause_us", report["pause_us"]}, {"phases_us", report["phases_us"]},
                              {"queued_calls", report["queued_calls"]}});
  upgrading["slowest_pauses"] = slowest_phases;
  upgrading["state_handed_over_in_memory"] = in_memory;
  upgrading["pause_p50_us"] = percentile(pauses, 0.5);
  upgrading["pause_p99_us"] = percentile(pauses, 0.99);
  upgrading["pause_max_us"] = percentile(pauses, 1.0);

  std::printf("    %-22s | %-4s | %11s | %9s | %10s | %s\n", "", "test", "requests/s", "p99", "max", "median of runs");
  for (const auto& [name, phase] : {std::pair<const char*, const Json*>{"without upgrades", &baseline},
                                    std::pair<const char*, const Json*>{"during upgrades", &upgrading}})
    for (const auto& t : (*phase)["load"])
      std::printf("    %-22s | %-4s | %11s | %6.3f ms | %7.3f ms | %d runs\n", name, t["test"].get<std::string>().c_str(),
                  fixed(t["rps"].get<double>()).c_str(), t["p99_ms"].get<double>(), t["max_ms"].get<double>(),
                  t["runs"].get<int>());
  for (const auto& [name, phase] : {std::pair<const char*, const Json*>{"without upgrades", &baseline},
                                    std::pair<const char*, const Json*>{"during upgrades", &upgrading}})
    std::printf("    checking writer, %-16s: %llu writes acknowledged, %llu errors, %llu lost; p99 %s, max %s\n", name,
                static_cast<unsigned long long>((*phase)["writes_acknowledged"].get<std::uint64_t>()),
                static_cast<unsigned long long>((*phase)["write_errors"].get<std::uint64_t>()),
                static_cast<unsigned long long>((*phase)["writes_lost"].get<std::uint64_t>()),
                duration((*phase)["writer_p99_us"].get<double>()).c_str(),
                duration((*phase)["writer_max_us"].get<double>()).c_str());
  for (const auto& slow : slowest_phases) {
    const auto& ph = slow["phases_us"];
    std::printf("    slow pause %s: quiesce %s, save %s, migrate %s, resume %s; %d calls waited\n",
                duration(slow["pause_us"].get<double>()).c_str(), duration(ph["quiesce"].get<double>()).c_str(),
                duration(ph["save"].get<double>()).c_str(), duration(ph["migrate"].get<double>()).c_str(),
                duration(ph["resume"].get<double>()).c_str(), slow["queued_calls"].get<int>());
  }
  std::printf("    upgrades: %u completed, %u failed, %zu handed the state over in memory; pause p50 %s, p99 %s, max %s\n",
              upgrading["upgrades_completed"].get<unsigned>(), upgrading["upgrades_failed"].get<unsigned>(), in_memory,
              duration(percentile(pauses, 0.5)).c_str(), duration(percentile(pauses, 0.99)).c_str(),
              duration(percentile(pauses, 1.0)).c_str());
  return Json{{"baseline", baseline}, {"upgrading", upgrading}};
}

// ---------------------------------------------------------------------------
// (c) pause against state size, in this process

std::uint64_t status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stoull(line.substr(std::strlen(field)));
  return 0;
}
std::uint64_t rss_bytes() { return status_kib("VmRSS:") * 1024; }
std::uint64_t peak_rss_bytes() { return status_kib("VmHWM:") * 1024; }
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }
void settle_heap() { malloc_trim(0); }

struct Discard final : api::StreamOutput {
  void write(std::string_view) override {}
  void close_after_write() override {}
  bool has_room() const override { return true; }
};

std::shared_ptr<host::ModuleSlot> start_kv(host::Loader& loader, unsigned version) {
  auto image = loader.load(plugin(version), "kv");
  if (!image) throw std::runtime_error(image.error().to_string());
  auto logger = std::make_shared<spdlog::logger>("kv", std::make_shared<spdlog::sinks::null_sink_mt>());
  auto slot = host::ModuleSlot::start(std::move(image.value()), {logger, {}, nullptr, nullptr});
  if (!slot) throw std::runtime_error(slot.error().to_string());
  return std::move(slot.value());
}

/// Loads `keys` string keys through kv's own protocol, in pipelined batches.
void fill(host::ModuleSlot& slot, std::uint64_t keys) {
  Discard out;
  std::string batch;
  for (std::uint64_t i = 0; i < keys;) {
    batch.clear();
    for (int n = 0; n < 10000 && i < keys; ++n, ++i) batch += RespClient::encode({"SET", "key:" + std::to_string(i), "value:" + std::to_string(i)});
    (void)slot.stream_data(1, batch, out);
  }
}

Json phases_json(const host::UpgradeReport& r) {
  return Json{{"prepare_us", r.phases.prepare.count()}, {"precopy_us", r.phases.precopy.count()},
              {"quiesce_us", r.phases.quiesce.count()},
              {"save_us", r.phases.save.count()},       {"migrate_us", r.phases.migrate.count()},
              {"resume_us", r.phases.resume.count()},   {"pause_us", r.pause.count()},
              {"cleanup_us", r.phases.cleanup.count()}, {"state_bytes", r.state_bytes},
              {"state_transfer", r.state_in_memory ? "memory" : "serialized"}};
}

Json section_c(const Options& o) {
  std::printf("\n(c) Upgrade pause against state size (string keys, in-process, the real transaction)\n");
  std::printf("    %-10s %-18s | %9s %9s %9s %9s %9s | %9s | %9s | %9s | %10s %10s %6s\n", "keys", "upgrade", "pre-copy",
              "quiesce", "save", "migrate", "resume", "pause", "cleanup", "total", "steady RSS", "peak RSS", "peak/");
  char pattern[] = "/tmp/molt-bench-kv-XXXXXX";
  const fs::path dir = ::mkdtemp(pattern);
  host::Loader loader(host::LoaderOptions{dir / "images"});
  Json rows = Json::array();
  host::UpgradeOptions stop_and_copy;
  stop_and_copy.precopy.enabled = false;
  auto run = [&](host::ModuleSlot& slot, unsigned to, std::uint64_t keys, const char* kind,
                 const host::UpgradeOptions& options = {}) {
    settle_heap();
    const std::uint64_t steady = rss_bytes();
    reset_peak_rss();
    const auto started = Clock::now();
    const auto report = host::upgrade(slot, loader, plugin(to), {}, options);
    const double total_us = std::chrono::duration<double, std::micro>(Clock::now() - started).count();
    if (report.outcome != host::Outcome::Succeeded) throw std::runtime_error(report.summary());
    const std::uint64_t peak = std::max(peak_rss_bytes(), steady);
    const double ratio = static_cast<double>(peak) / static_cast<double>(steady);
    std::printf("    %-10llu %-18s | %9s %9s %9s %9s %9s | %9s | %9s | %9s | %10s %10s %5.2fx\n",
                static_cast<unsigned long long>(keys), kind, duration(report.phases.precopy.count()).c_str(),
                duration(report.phases.quiesce.count()).c_str(), duration(report.phases.save.count()).c_str(),
                duration(report.phases.migrate.count()).c_str(), duration(report.phases.resume.count()).c_str(),
                duration(report.pause.count()).c_str(), duration(report.phases.cleanup.count()).c_str(),
                duration(total_us).c_str(), bytes(steady).c_str(), bytes(peak).c_str(), ratio);
    std::fflush(stdout);
    Json row = phases_json(report);
    row["keys"] = keys;
    row["upgrade"] = kind;
    row["total_us"] = total_us;
    row["steady_rss_bytes"] = steady;
    row["peak_rss_bytes"] = peak;
    row["peak_over_steady"] = ratio;
    rows.push_back(row);
  };
  for (const std::uint64_t keys : o.sizes) {
    auto slot = start_kv(loader, 1);
    fill(*slot, keys);
    run(*slot, 2, keys, "1->2 stop-and-copy", stop_and_copy);
    run(*slot, 1, keys, "2->1 migrating");
    run(*slot, 2, keys, "1->2 migrating");
    run(*slot, 3, keys, "2->3 code-only");
    slot.reset();
    settle_heap();
  }

  // Distribution over many upgrades at 10K keys.
  Json distribution = Json::array();
  auto slot = start_kv(loader, 1);
  fill(*slot, 10000);
  for (const auto& [kind, a, b] : {std::tuple{"migrating 1<->2", 2u, 1u}, std::tuple{"code-only 2<->3", 3u, 2u}}) {
    if (std::string(kind).starts_with("code")) (void)host::upgrade(*slot, loader, plugin(2));  // start from v2
    std::vector<double> pauses;
    for (unsigned i = 0; i < o.pause_rounds; ++i) {
      const auto report = host::upgrade(*slot, loader, plugin(i % 2 == 0 ? a : b));
      if (report.outcome != host::Outcome::Succeeded) throw std::runtime_error(report.summary());
      pauses.push_back(static_cast<double>(report.pause.count()));
    }
    std::printf("    10000 keys, %u upgrades %-16s: pause p50 %s, p99 %s, max %s\n", o.pause_rounds, kind,
                duration(percentile(pauses, 0.5)).c_str(), duration(percentile(pauses, 0.99)).c_str(),
                duration(percentile(pauses, 1.0)).c_str());
    distribution.push_back({{"keys", 10000}, {"upgrade", kind}, {"n", pauses.size()},
                            {"pause_p50_us", percentile(pauses, 0.5)}, {"pause_p99_us", percentile(pauses, 0.99)},
                            {"pause_max_us", percentile(pauses, 1.0)}});
  }
  slot.reset();
  fs::remove_all(dir);
  return Json{{"by_size", rows}, {"at_10k_keys", distribution}};
}

// ---------------------------------------------------------------------------
// (e) an upgrade through a real moltd, as a client sees it

/// A client on its own connection that sends PING every half millisecond
/// from construction until stop(), and keeps the longest round trip.
class Pinger {
 public:
  explicit Pinger(std::uint16_t port) : client_(port) {
    thread_ = std::thread([this] { run(); });
    (void)wait_for([this] { return pings_.load() >= 20; });  // warm: connected and answered
  }
  ~Pinger() { (void)stop(); }

  struct Stall {
    std::int64_t sent_ms = 0;  ///< wall clock, ms since the epoch
    double us = 0;
  };
  struct Seen {
    double longest_us = 0;
    std::uint64_t pings = 0;
    std::uint64_t errors = 0;
    std::vector<Stall> stalls;  ///< every round trip over 5 ms
  };
  /// Stops after the PING in flight has its answer.
  Seen stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return {longest_us_, pings_.load(), errors_, stalls_};
  }
  /// Forgets the round trips so far: what follows is what is measured.
  void restart_measure() { reset_ = true; }

 private:
  void run() {
    auto next = Clock::now();
    while (!stop_) {
      if (reset_.exchange(false)) {
        longest_us_ = 0;
        stalls_.clear();
      }
      const auto sent = Clock::now();
      const auto sent_wall = std::chrono::system_clock::now();
      if (client_.call({"PING"}) != "+PONG\r\n") ++errors_;
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - sent).count();
      longest_us_ = std::max(longest_us_, us);
      if (us > 5000)
        stalls_.push_back(
            {std::chrono::duration_cast<std::chrono::milliseconds>(sent_wall.time_since_epoch()).count(), us});
      ++pings_;
      next += std::chrono::microseconds(500);
      if (const auto now = Clock::now(); next < now) next = now;
      std::this_thread::sleep_until(next);
    }
  }

  RespClient client_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reset_{false};
  std::atomic<std::uint64_t> pings_{0};
  double longest_us_ = 0;
  std::uint64_t errors_ = 0;
  std::vector<Stall> stalls_;
};

/// SETs `keys` string keys into kv over TCP, pipelined.
void fill_over_tcp(std::uint16_t port, std::uint64_t keys) {
  RespClient client(port);
  std::string batch;
  for (std::uint64_t i = 0; i < keys;) {
    batch.clear();
    unsigned n = 0;
    for (; n < 10000 && i < keys; ++n, ++i)
      batch += RespClient::encode({"SET", "key:" + std::to_string(i), "value:" + std::to_string(i)});
    client.send_raw(batch);
    for (unsigned r = 0; r < n; ++r)
      if (client.read_reply() != "+OK\r\n") throw std::runtime_error("fill: SET failed");
  }
}

/// A client on its own connection that SETs as fast as it is answered, one
/// command at a time, from construction until stop(): key w<id>:<n mod
/// kKeys>, value <n>, where <id> is this writer's own (a writer before it
/// on the same moltd left keys of its own). It remembers each key's last acknowledged value, and how many
/// acknowledgements came in each millisecond, for its rate in any window.
class Writer {
 public:
  static constexpr std::uint64_t kKeys = 20000;

  explicit Writer(std::uint16_t port)
      : port_(port), prefix_("w" + std::to_string(next_id_++) + ":"), client_(port), last_(kKeys, 0) {
    thread_ = std::thread([this] { run(); });
  }
  ~Writer() { stop(); }

  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  [[nodiscard]] std::uint64_t writes() const { return writes_; }
  [[nodiscard]] std::uint64_t errors() const { return errors_; }

  /// Acknowledged SETs per second between two instants (system clock, ms
  /// since the epoch). After stop().
  [[nodiscard]] double rate(std::int64_t from_ms, std::int64_t to_ms) const {
    from_ms = std::max(from_ms, started_ms_);
    to_ms = std::min<std::int64_t>(to_ms, started_ms_ + static_cast<std::int64_t>(acks_per_ms_.size()));
    if (to_ms <= from_ms) return 0;
    std::uint64_t acks = 0;
    for (std::int64_t ms = from_ms; ms < to_ms; ++ms) acks += acks_per_ms_[static_cast<std::size_t>(ms - started_ms_)];
    return static_cast<double>(acks) * 1000.0 / static_cast<double>(to_ms - from_ms);
  }

  /// Reads back every key it wrote, over a new connection: how many do not
  /// hold their last acknowledged value. After stop().
  [[nodiscard]] std::uint64_t lost() const {
    RespClient reader(port_);
    std::uint64_t lost = 0;
    for (std::uint64_t first = 0; first < kKeys; first += 1000) {
      std::string batch;
      for (std::uint64_t k = first; k < first + 1000; ++k) batch += RespClient::encode({"GET", prefix_ + std::to_string(k)});
      reader.send_raw(batch);
      for (std::uint64_t k = first; k < first + 1000; ++k) {
        const auto reply = reader.read_reply();
        const std::string value = last_[k] == 0 ? "" : std::to_string(last_[k]);
        const std::string expected =
            last_[k] == 0 ? std::string("$-1\r\n") : "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n";
        if (!reply || *reply != expected) ++lost;
      }
    }
    return lost;
  }

 private:
  static std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  void run() {
    started_ms_ = now_ms();
    for (std::uint64_t n = 1; !stop_; ++n) {
      const std::uint64_t key = n % kKeys;
      if (client_.call({"SET", prefix_ + std::to_string(key), std::to_string(n)}) != "+OK\r\n") {
        ++errors_;
        continue;
      }
      last_[key] = n;
      ++writes_;
      const auto bin = static_cast<std::size_t>(now_ms() - started_ms_);
      if (bin >= acks_per_ms_.size()) acks_per_ms_.resize(bin + 1, 0);
      ++acks_per_ms_[bin];
    }
  }

  static inline unsigned next_id_ = 0;
  std::uint16_t port_;
  std::string prefix_;
  RespClient client_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> writes_{0};
  std::uint64_t errors_ = 0;
  std::vector<std::uint64_t> last_;  ///< per key: the value last acknowledged; 0: never written
  std::int64_t started_ms_ = 0;
  std::vector<std::uint32_t> acks_per_ms_;
};

std::uint64_t process_kib(pid_t pid, const char* field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stoull(line.substr(std::strlen(field)));
  return 0;
}

/// One moltctl command against `moltd`, timed, with a PING client and a
/// writer on their own connections from a second before the command until
/// after it returns: the row of table (e).
/// `hold`: the clients go on that long after the command returned.
Json client_seen(Moltd& moltd, const std::vector<std::string>& command, bool trace_stalls,
                 std::chrono::milliseconds hold = {}) {
  Writer writer(moltd.port());
  Pinger pinger(moltd.port());
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the writer's steady rate, before the command
  std::ofstream("/proc/" + std::to_string(moltd.pid()) + "/clear_refs") << "5";  // VmHWM from now
  const std::uint64_t steady_rss = process_kib(moltd.pid(), "VmRSS:") * 1024;
  pinger.restart_measure();
  std::vector<std::string> argv{bin("moltctl").string(), "--socket", moltd.socket().string(), "--json"};
  argv.insert(argv.end(), command.begin(), command.end());
  const auto started = Clock::now();
  const std::int64_t started_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  // --trace-stalls: moltd's RSS every 20 ms while the command runs.
  std::atomic<bool> sampling{trace_stalls};
  std::vector<std::pair<std::int64_t, std::uint64_t>> rss_trace;  // ms from the start, KiB
  std::thread sampler([&] {
    while (sampling) {
      rss_trace.emplace_back(
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count(),
          process_kib(moltd.pid(), "VmRSS:"));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  const auto result = run_process(argv);
  const double command_us = std::chrono::duration<double, std::micro>(Clock::now() - started).count();
  // An install's snapshot is written in the background after the command
  // answered (host.install_snapshot_delay_ms, 0 here): the clients' window
  // goes on until it is, so that what it costs them counts.
  const auto pending = [&] {
    auto status = host::control_call(moltd.socket(), {{"command", "status"}});
    if (!status) return false;
    for (const auto& m : status->body["modules"])
      if (!m["snapshot_pending"].is_null()) return true;
    return false;
  };
  const auto give_up = Clock::now() + std::chrono::minutes(10);
  while (pending() && Clock::now() < give_up) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const double written_us = std::chrono::duration<double, std::micro>(Clock::now() - started).count();
  sampling = false;
  sampler.join();
  std::this_thread::sleep_for(hold);
  const Pinger::Seen seen = pinger.stop();
  if (trace_stalls) {
    std::fprintf(stderr, "    moltctl %s: started at %lld ms (wall); round trips over 5 ms:\n", command.front().c_str(),
                 static_cast<long long>(started_ms));
    for (const auto& stall : seen.stalls)
      std::fprintf(stderr, "      sent at +%lld ms: %.1f ms\n", static_cast<long long>(stall.sent_ms - started_ms),
                   stall.us / 1000);
    std::fprintf(stderr, "    moltd's RSS (MiB) at +ms, each change of 5%% or more:");
    std::uint64_t shown = 0;
    for (const auto& [ms, kib] : rss_trace)
      if (kib * 20 > shown * 21 || kib * 21 < shown * 20) {
        std::fprintf(stderr, " %lld:%llu", static_cast<long long>(ms), static_cast<unsigned long long>(kib / 1024));
        shown = kib;
      }
    std::fprintf(stderr, "\n");
  }
  const std::uint64_t peak_rss = std::max(process_kib(moltd.pid(), "VmHWM:") * 1024, steady_rss);
  writer.stop();
  if (result.exit_code != 0) throw std::runtime_error("moltctl " + command.front() + ": " + result.out + result.err);
  const double steady_rate = writer.rate(started_ms - 1000, started_ms);
  Json row{{"command", "moltctl " + command.front()},
           {"command_us", command_us},
           {"snapshot_written_us", written_us},
           {"client_stall_us", seen.longest_us},
           {"pings", seen.pings},
           {"ping_errors", seen.errors},
           {"writes", writer.writes()},
           {"write_errors", writer.errors()},
           {"writes_lost", writer.lost()},
           {"writer_steady_per_s", steady_rate},
           {"steady_rss_bytes", steady_rss},
           {"peak_rss_bytes", peak_rss},
           {"peak_over_steady", static_cast<double>(peak_rss) / static_cast<double>(steady_rss)}};
  const Json reply = Json::parse(result.out, nullptr, false);
  if (reply.is_object() && reply.contains("report")) {
    const Json& report = reply["report"];
    row["pause_us"] = report["pause_us"];
    row["rehearse_us"] = report["phases_us"]["rehearse"];
    row["precopy_us"] = report["phases_us"]["precopy"];
    row["rehearsal"] = report["rehearsal"];
    row["state_transfer"] = report["state_transfer"];
    if (report["precopy"].is_object()) {
      row["precopy_rounds"] = report["precopy"]["rounds"].size();
      // The writer's rate while the state moved: the pre-copy phase, which
      // follows the rehearsal and the prepare phase.
      const std::int64_t from = report["started_at_ms"].get<std::int64_t>() +
                                (report["phases_us"]["rehearse"].get<std::int64_t>() +
                                 report["phases_us"]["prepare"].get<std::int64_t>()) / 1000;
      const std::int64_t to = from + report["phases_us"]["precopy"].get<std::int64_t>() / 1000;
      if (to - from >= 20) row["writer_during_precopy_per_s"] = writer.rate(from, to);
    }
  }
  return row;
}

Json section_e(const Options& o, const fs::path& scratch) {
  std::printf("\n(e) An upgrade through a real moltd, as a client sees it: kv with N keys; a client on its own\n"
              "    connection sends PING every 0.5 ms, and a writer on another SETs as fast as it is answered,\n"
              "    from a second before the command until after it returns and the snapshot an install takes\n"
              "    (in the background, install_snapshot_delay_ms = 0) is written. moltd's RSS: peak during / before.\n");
  std::printf("    %-9s %-43s | %9s %9s | %9s | %10s | %9s | %15s | %4s | %5s\n", "keys", "command", "pause", "pre-copy",
              "command", "client", "pings", "SET/s before", "lost", "RSS");
  std::printf("    %-9s %-43s | %9s %9s | %9s | %10s | %9s | %15s | %4s | %5s\n", "", "", "", "", "+snapshot", "stall", "",
              "-> in pre-copy", "", "peak/");
  Json rows = Json::array();
  auto print = [&](std::uint64_t keys, const std::string& what, Json row) {
    row["keys"] = keys;
    row["case"] = what;
    const auto us = [&](const char* field) {
      return row.contains(field) && row[field].is_number() ? duration(row[field].get<double>()) : std::string("-");
    };
    std::string rates = fixed(row["writer_steady_per_s"].get<double>());
    if (row.contains("writer_during_precopy_per_s"))
      rates += " -> " + fixed(row["writer_during_precopy_per_s"].get<double>());
    std::printf("    %-9llu %-43s | %9s %9s | %9s | %10s | %9llu | %15s | %4llu | %4.2fx%s\n",
                static_cast<unsigned long long>(keys), what.c_str(), us("pause_us").c_str(), us("precopy_us").c_str(),
                us("snapshot_written_us").c_str(), us("client_stall_us").c_str(),
                static_cast<unsigned long long>(row["pings"].get<std::uint64_t>()), rates.c_str(),
                static_cast<unsigned long long>(row["writes_lost"].get<std::uint64_t>()),
                row["peak_over_steady"].get<double>(),
                row["ping_errors"].get<std::uint64_t>() + row["write_errors"].get<std::uint64_t>() > 0 ? " (errors!)"
                                                                                                        : "");
    std::fflush(stdout);
    rows.push_back(std::move(row));
  };
  // Each case on a moltd of its own, filled over TCP: "stop-and-copy" has
  // pre-copy off (host.precopy = "never"), as every release before it.
  struct Case {
    const char* name;
    const char* host_config;
    bool others;  ///< also 2->3 and save on this moltd
    std::uint64_t up_to_keys = UINT64_MAX;  ///< the rehearsal doubles the memory and minutes: not at 10M
  };
  for (const std::uint64_t keys : o.stall_sizes) {
    for (const Case& c : {Case{"stop-and-copy", "precopy = \"never\"\nrehearse = \"never\"", false},
                          Case{"pre-copy", "rehearse = \"never\"", true},
                          Case{"pre-copy, rehearsed", "rehearse = \"migrating\"", false, 1000000}}) {
      if (keys > c.up_to_keys) continue;
      const fs::path dir = scratch / ("moltd-e-" + std::to_string(keys) + "-" + std::to_string(rows.size()));
      Moltd moltd(dir, o.io_threads, 1, std::string("probation_seconds = 0\ninstall_snapshot_delay_ms = 0\n") + c.host_config,
                  o.trace_stalls ? "info" : "warn");
      if (o.trace_stalls) std::fprintf(stderr, "    moltd's log: %s\n", (dir / "moltd.out").c_str());
      fill_over_tcp(moltd.port(), keys);
      print(keys, std::string("reload 1->2 migrating, ") + c.name,
            client_seen(moltd, {"reload", "kv", (moltd.plugins() / "kv-2.so").string()}, o.trace_stalls));
      if (c.others) {
        // What a client sees when nothing moves: the floor of this machine
        // with the writer, the pinger and moltd on its cores.
        print(keys, "status + 1 s (the floor: nothing moves)",
              client_seen(moltd, {"status"}, o.trace_stalls, std::chrono::seconds(1)));
        print(keys, "reload 2->3 code-only", client_seen(moltd, {"reload", "kv", (moltd.plugins() / "kv-3.so").string()}, o.trace_stalls));
        print(keys, "save (every module's snapshot)", client_seen(moltd, {"save"}, o.trace_stalls));
      }
    }
  }
  return Json{{"rows", rows}};
}

// ---------------------------------------------------------------------------
// (f) hot restart of moltd itself

/// Connections that must live through every hot restart, driven by a few
/// threads: RESP clients that pipeline INCRs (4 at a time) on a key of their
/// own, so that every reply must be the next integer (a lost, repeated or
/// reordered reply shows), and HTTP keep-alive clients (GET /kv). A
/// connection that closes is counted and not reopened.
class Crowd {
 public:
  /// `rate`: rounds per second on each connection (0: as fast as answered).
  Crowd(std::uint16_t port, const std::string& http, unsigned resp_clients, unsigned http_clients, unsigned rate,
        unsigned threads = 4)
      : period_(rate == 0 ? Clock::duration::zero()
                          : std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(1)) / rate) {
    for (unsigned i = 0; i < resp_clients; ++i) resp_.push_back(std::make_unique<Resp>(port, "crowd:" + std::to_string(i)));
    for (unsigned i = 0; i < http_clients; ++i) http_.push_back(std::make_unique<Http>(http));
    for (unsigned t = 0; t < threads; ++t) threads_.emplace_back([this, t, threads] { run(t, threads); });
  }
  ~Crowd() { stop(); }
  void stop() {
    stop_ = true;
    for (auto& thread : threads_)
      if (thread.joinable()) thread.join();
  }
  struct Seen {
    std::uint64_t replies = 0;  ///< answered as expected
    std::uint64_t wrong = 0;    ///< a RESP reply not the next integer: lost, repeated or reordered
    std::uint64_t errors = 0;   ///< an HTTP response not 200
    std::uint64_t closed = 0;   ///< connections that closed
    std::size_t connections = 0;
  };
  [[nodiscard]] Seen seen() const {
    Seen out;
    out.connections = resp_.size() + http_.size();
    for (const auto& c : resp_) out.replies += c->next - 1, out.wrong += c->wrong, out.closed += c->closed;
    for (const auto& c : http_) out.replies += c->ok, out.errors += c->errors, out.closed += c->closed;
    return out;
  }
  /// Every RESP client's key holds the count of its acknowledged INCRs
  /// (read on a new connection): how many do not. After stop().
  [[nodiscard]] std::uint64_t lost(std::uint16_t port) const {
    RespClient reader(port);
    std::uint64_t lost = 0;
    for (const auto& c : resp_) {
      const std::string value = std::to_string(c->next - 1);
      if (c->next > 1 && reader.call({"GET", c->key}) != "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n")
        ++lost;
    }
    return lost;
  }

 private:
  struct Resp {
    Resp(std::uint16_t port, std::string k) : client(port), key(std::move(k)) {}
    RespClient client;
    std::string key;
    std::uint64_t next = 1;  ///< the reply the next INCR must get
    std::uint64_t wrong = 0;
    bool closed = false;
  };
  struct Http {
    explicit Http(const std::string& endpoint) : client(endpoint) {}
    test::HttpClient client;
    std::uint64_t ok = 0, errors = 0;
    bool closed = false;
  };
  void run(unsigned first, unsigned step) {
    const auto deadline = Clock::now() + std::chrono::minutes(30);  // bounded whatever happens
    auto next = Clock::now();
    while (!stop_ && Clock::now() < deadline) {
      next += period_;
      if (const auto now = Clock::now(); next > now) std::this_thread::sleep_until(next);
      else next = now;
      for (std::size_t i = first; i < resp_.size(); i += step) {
        Resp& c = *resp_[i];
        if (c.closed) continue;
        const std::string incr = RespClient::encode({"INCR", c.key});
        c.client.send_raw(incr + incr + incr + incr);
        for (int k = 0; k < 4; ++k) {
          const auto reply = c.client.read_reply();
          if (!reply) {
            c.closed = true;
            break;
          }
          if (*reply == ":" + std::to_string(c.next) + "\r\n") ++c.next;
          else ++c.wrong;
        }
      }
      for (std::size_t i = first; i < http_.size(); i += step) {
        Http& c = *http_[i];
        if (c.closed) continue;
        const std::string response = c.client.get("/kv");
        if (response.empty()) c.closed = true;
        else if (response.rfind("HTTP/1.1 200", 0) == 0) ++c.ok;
        else ++c.errors;
      }
    }
  }
  std::vector<std::unique_ptr<Resp>> resp_;
  std::vector<std::unique_ptr<Http>> http_;
  Clock::duration period_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
};

Json section_f(const Options& o, const fs::path& scratch) {
  std::printf("\n(f) Hot restart of moltd itself (moltctl hot-restart, %u times per row), kv with N keys, under %u RESP\n"
              "    connections pipelining 4 INCRs (each reply must be the next integer) and %u HTTP keep-alive\n"
              "    connections, each doing %u rounds a second; a PING client on its own connection measures the longest round trip around each\n"
              "    hot restart (stall), moltd reports its own freeze (frozen: from the stop of accepting to the new\n"
              "    process serving). Every connection opened before the first must still be open after the last.\n",
              o.restarts, o.resp_clients, o.http_clients, o.crowd_rate);
  std::printf("    %-9s %-12s | %5s | %11s | %6s | %9s | %7s | %9s %9s %9s | %9s %9s\n", "keys", "state", "conns",
              "replies", "closed", "lost/dup/", "errors", "stall p50", "p99", "max", "frozen", "frozen");
  std::printf("    %-9s %-12s | %5s | %11s | %6s | %9s | %7s | %9s %9s %9s | %9s %9s\n", "", "", "", "", "", "reordered",
              "", "", "", "", "p50", "p99");
  Json rows = Json::array();
  struct Case {
    const char* name;
    const char* host_config;
  };
  for (const std::uint64_t keys : o.restart_sizes) {
    for (const Case& c : {Case{"pre-copy", ""}, Case{"stop-and-copy", "precopy = \"never\"\n"}}) {
      if (keys < 1000000 && std::string(c.name) == "stop-and-copy") continue;  // the same at this size
      const fs::path dir = scratch / ("moltd-f-" + std::to_string(keys) + "-" + std::to_string(rows.size()));
      Moltd moltd(dir, o.io_threads, 2, std::string("rehearse = \"never\"\n") + c.host_config,
                  o.trace_stalls ? "info" : "warn");
      if (o.trace_stalls) std::fprintf(stderr, "    moltd's log: %s\n", (dir / "run" / "moltd.log").c_str());
      fill_over_tcp(moltd.port(), keys);
      Crowd crowd(moltd.port(), moltd.http(), o.resp_clients, o.http_clients, o.crowd_rate);
      std::vector<double> stalls, frozen;
      std::map<std::string, std::vector<double>> phases;  // each step's time, as moltd reports it
      std::uint64_t failed = 0;
      std::string failure;
      for (unsigned r = 0; r < o.restarts; ++r) {
        Pinger pinger(moltd.port());
        pinger.restart_measure();
        const auto result = run_process({bin("moltctl").string(), "--socket", moltd.socket().string(), "--json",
                                         "hot-restart"}, std::chrono::minutes(5));
        const Json reply = Json::parse(result.out, nullptr, false);
        if (result.exit_code != 0 || !reply.is_object() || !reply.value("ok", false)) {
          ++failed;
          failure = result.out + result.err;
          continue;
        }
        moltd.follow(reply["report"]["new_pid"].get<pid_t>());
        std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the PING client's window goes on a little
        stalls.push_back(pinger.stop().longest_us);
        for (const auto& p : reply["report"]["phases"]) {
          phases[p["phase"].get<std::string>()].push_back(p["us"].get<double>());
          if (p["phase"] == "frozen") frozen.push_back(p["us"].get<double>());
        }
      }
      crowd.stop();
      const Crowd::Seen seen = crowd.seen();
      const std::uint64_t lost = crowd.lost(moltd.port());
      Json row{{"keys", keys},
               {"state", c.name},
               {"restarts", o.restarts},
               {"failed", failed},
               {"connections", seen.connections},
               {"replies", seen.replies},
               {"closed", seen.closed},
               {"wrong_replies", seen.wrong},
               {"lost_writes", lost},
               {"errors", seen.errors},
               {"stall_p50_us", percentile(stalls, 0.5)},
               {"stall_p99_us", percentile(stalls, 0.99)},
               {"stall_max_us", percentile(stalls, 1.0)},
               {"frozen_p50_us", percentile(frozen, 0.5)},
               {"frozen_p99_us", percentile(frozen, 0.99)}};
      std::string steps;
      for (const auto& [phase, took] : phases) {
        row["phase_p50_us"][phase] = percentile(took, 0.5);
        if (phase != "frozen") steps += " " + phase + " " + duration(percentile(took, 0.5));
      }
      std::printf("    %-9llu %-12s | %5zu | %11llu | %6llu | %9llu | %7llu | %9s %9s %9s | %9s %9s%s\n",
                  static_cast<unsigned long long>(keys), c.name, seen.connections,
                  static_cast<unsigned long long>(seen.replies), static_cast<unsigned long long>(seen.closed),
                  static_cast<unsigned long long>(seen.wrong + lost), static_cast<unsigned long long>(seen.errors + failed),
                  duration(row["stall_p50_us"]).c_str(), duration(row["stall_p99_us"]).c_str(),
                  duration(row["stall_max_us"]).c_str(), duration(row["frozen_p50_us"]).c_str(),
                  duration(row["frozen_p99_us"]).c_str(),
                  failed > 0 ? (" (" + std::to_string(failed) + " failed: " + failure.substr(0, 200) + ")").c_str() : "");
      std::printf("    %-22s   each step, p50:%s\n", "", steps.c_str());
      std::fflush(stdout);
      rows.push_back(std::move(row));
    }
  }
  std::printf("    anchor: nginx binary upgrade (USR2, WINCH, QUIT) under 100 keep-alive connections, measured for\n"
              "    issue 16 on this machine kind: ~25 ms, no connection refused, 100 of 100 open connections closed\n"
              "    on every upgrade. Envoy and HAProxy pass only listening sockets: open connections drain.\n");
  return Json{{"rows", rows}};
}

// ---------------------------------------------------------------------------
// (g) handoff: kv moves between two moltd

/// The most a process's resident set reached while this sampler ran (VmRSS every 5 ms).
class RssSampler {
 public:
  explicit RssSampler(pid_t pid) : pid_(pid), thread_([this] {
    while (!stop_) {
      peak_ = std::max<std::uint64_t>(peak_, process_kib(pid_, "VmRSS:"));
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }) {}
  std::uint64_t stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return peak_ * 1024;
  }
  ~RssSampler() { stop(); }

 private:
  pid_t pid_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> peak_{0};
  std::thread thread_;
};

/// One client on one connection SETting key:<n mod keys> to "w<n>" as fast as it is answered, one command at a
/// time; it keeps every acknowledged n's key and value, and each round trip's time with the wall clock.
class MovingWriter {
 public:
  MovingWriter(std::uint16_t port, std::uint64_t keys, std::uint64_t first, std::map<std::uint64_t, std::uint64_t>& acked)
      : client_(port), keys_(keys), next_(first), acked_(acked) {
    thread_ = std::thread([this] { run(); });
  }
  ~MovingWriter() { stop(); }
  std::uint64_t stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return next_;
  }
  /// The longest round trip that began or ended in [from, to] (steady clock), in µs.
  [[nodiscard]] double longest(Clock::time_point from, Clock::time_point to) const {
    double most = 0;
    for (const auto& [began, us] : trips_)
      if (began + std::chrono::microseconds(static_cast<std::int64_t>(us)) >= from && began <= to) most = std::max(most, us);
    return most;
  }
  /// Acknowledged SETs per second over [from, to].
  [[nodiscard]] double rate(Clock::time_point from, Clock::time_point to) const {
    std::uint64_t n = 0;
    for (const auto& trip : trips_)
      if (trip.first >= from && trip.first <= to) ++n;
    return static_cast<double>(n) / std::chrono::duration<double>(to - from).count();
  }
  [[nodiscard]] std::uint64_t errors() const { return errors_; }
  /// After stop(): the first reply that was not +OK, if any.
  [[nodiscard]] const std::string& first_error() const { return first_error_; }

 private:
  void run() {
    while (!stop_) {
      const std::uint64_t n = next_;
      const auto began = Clock::now();
      const std::string reply = client_.call({"SET", "key:" + std::to_string(n % keys_), "w" + std::to_string(n)});
      const double us = std::chrono::duration<double, std::micro>(Clock::now() - began).count();
      if (reply != "+OK\r\n") {
        if (errors_++ == 0) first_error_ = reply.empty() ? std::string("connection closed") : reply;
        if (reply.empty()) return;  // closed
        continue;
      }
      acked_[n % keys_] = n;
      trips_.emplace_back(began, us);
      ++next_;
    }
  }

  RespClient client_;
  std::uint64_t keys_;
  std::atomic<std::uint64_t> next_;
  std::map<std::uint64_t, std::uint64_t>& acked_;  ///< key -> its last acknowledged n (this thread's while it runs)
  std::vector<std::pair<Clock::time_point, double>> trips_;
  std::atomic<std::uint64_t> errors_{0};
  std::string first_error_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

Json section_g(const Options& o, const fs::path& scratch) {
  std::printf("\n(g) Handoff: kv with N keys moves between two moltd (moltctl handoff, A to B, B to A, ... %u times)\n"
              "    while one client on its own connection to the source SETs existing keys as fast as it is answered\n"
              "    (forwarded by the source after the flip). stall: its longest round trip around the handoff;\n"
              "    frozen: moltd's own pause (no call of kv answered anywhere); RSS: the source's peak during the\n"
              "    handoff against its steady size. At the end every key is read back from the owner: each must hold\n"
              "    its last acknowledged value (digest: sha256 of them all); then, the writer stopped, one more handoff:\n"
              "    kv's DEBUG DIGEST of the whole state on the source before it must equal the target's after it.\n",
              o.handoffs);
  std::printf("    %-9s | %9s | %9s %9s | %9s %9s | %6s | %8s | %11s | %s\n", "keys", "SET/s", "stall p50", "max",
              "frozen p50", "max", "rounds", "RSS peak", "lost/wrong", "digest");
  Json rows = Json::array();
  for (const std::uint64_t keys : o.handoff_sizes) {
    const fs::path dir = scratch / ("moltd-g-" + std::to_string(keys));
    fs::create_directories(dir);
    const fs::path secret = dir / "peer.secret";
    std::ofstream(secret) << "a benchmark's shared secret, 0600\n";
    fs::permissions(secret, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
    const std::uint16_t peer_a = test::free_port(), peer_b = test::free_port();
    const auto host = [&](std::uint16_t peer) {
      return "rehearse = \"never\"\nprobation_seconds = 0\nhandoff_drain_seconds = 600\npeer = \"127.0.0.1:" +
             std::to_string(peer) + "\"\npeer_secret_file = \"" + secret.string() + "\"\n";
    };
    Moltd a(dir / "a", o.io_threads, 2, host(peer_a), o.trace_stalls ? "info" : "warn", "accept_handoff = true\n");
    Moltd b(dir / "b", o.io_threads, 0, host(peer_b), o.trace_stalls ? "info" : "warn", "accept_handoff = true\n");
    fill_over_tcp(a.port(), keys);
    std::map<std::uint64_t, std::uint64_t> acked;  // key -> last acknowledged n
    std::vector<double> stalls, frozen, rates;
    std::uint64_t rounds_most = 0, errors = 0, next = 0;
    double rss_ratio_most = 0;
    std::string failure;
    Moltd* from = &a;
    Moltd* to = &b;
    for (unsigned h = 0; h < o.handoffs; ++h) {
      MovingWriter writer(from->port(), keys, next, acked);
      std::this_thread::sleep_for(std::chrono::seconds(1));  // its steady rate first
      const std::uint64_t steady = process_kib(from->pid(), "VmRSS:") * 1024;
      RssSampler rss(from->pid());
      const auto began = Clock::now();
      const auto result = run_process({bin("moltctl").string(), "--socket", from->socket().string(), "--json", "handoff",
                                       "kv", "--to", "127.0.0.1:" + std::to_string(to == &a ? peer_a : peer_b)},
                                      std::chrono::minutes(5));
      const auto ended = Clock::now();
      const std::uint64_t peak = rss.stop();
      std::this_thread::sleep_for(std::chrono::seconds(1));  // through the target, forwarded
      next = writer.stop();
      errors += writer.errors();
      if (writer.errors() > 0 && failure.empty()) failure = "the writer: " + writer.first_error();
      const Json reply = Json::parse(result.out, nullptr, false);
      if (result.exit_code != 0 || !reply.is_object() || !reply.value("ok", false)) {
        ++errors;
        failure = result.out + result.err;
        break;
      }
      const Json& report = reply["handoff"];
      for (const auto& p : report["phases"])
        if (p["phase"] == "frozen") frozen.push_back(p["us"].get<double>());
      stalls.push_back(writer.longest(began, ended));
      rates.push_back(writer.rate(began - std::chrono::seconds(1), ended + std::chrono::seconds(1)));
      rounds_most = std::max<std::uint64_t>(rounds_most, report["rounds"].get<std::uint64_t>());
      rss_ratio_most = std::max(rss_ratio_most, static_cast<double>(peak) / static_cast<double>(steady));
      std::swap(from, to);
    }
    // Every key from the owner (`from` after the last swap): the last acknowledged value, or the fill's.
    std::uint64_t wrong = 0;
    std::string expected_digest_input, seen_digest_input;
    {
      RespClient check(from->port());
      for (std::uint64_t first = 0; first < keys; first += 10000) {
        const std::uint64_t end = std::min(keys, first + 10000);
        std::string batch;
        for (std::uint64_t k = first; k < end; ++k) batch += RespClient::encode({"GET", "key:" + std::to_string(k)});
        check.send_raw(batch);
        for (std::uint64_t k = first; k < end; ++k) {
          const auto it = acked.find(k);
          const std::string value = it != acked.end() ? "w" + std::to_string(it->second) : "value:" + std::to_string(k);
          const std::string want = "$" + std::to_string(value.size()) + "\r\n" + value + "\r\n";
          const auto got = check.read_reply();
          expected_digest_input += want;
          seen_digest_input += got.value_or("");
          if (got != want) ++wrong;
        }
      }
      if (check.call({"DBSIZE"}) != ":" + std::to_string(keys) + "\r\n") ++wrong;
    }
    const std::string digest = host::sha256_hex(seen_digest_input).substr(0, 12);
    const bool same = seen_digest_input == expected_digest_input;
    // One more handoff, the writer stopped: kv's DEBUG DIGEST (every key, type, value and deadline) on the
    // source before it and on the target after it must be equal: the whole state, as it was at the flip.
    std::string source_digest, target_digest;
    if (errors == 0) {
      source_digest = RespClient(from->port()).call({"DEBUG", "DIGEST"});
      const auto result = run_process({bin("moltctl").string(), "--socket", from->socket().string(), "handoff", "kv",
                                       "--to", "127.0.0.1:" + std::to_string(to == &a ? peer_a : peer_b)},
                                      std::chrono::minutes(5));
      if (result.exit_code != 0) {
        ++errors;
        failure = "the digest's handoff: " + result.out + result.err;
      }
      target_digest = RespClient(to->port()).call({"DEBUG", "DIGEST"});
    }
    const bool flip_equal = !source_digest.empty() && source_digest == target_digest && source_digest.starts_with('+');
    Json row{{"keys", keys},
             {"handoffs", o.handoffs},
             {"errors", errors},
             {"failure", failure},
             {"set_per_s_min", rates.empty() ? 0 : *std::min_element(rates.begin(), rates.end())},
             {"stall_p50_us", percentile(stalls, 0.5)},
             {"stall_max_us", percentile(stalls, 1.0)},
             {"frozen_p50_us", percentile(frozen, 0.5)},
             {"frozen_max_us", percentile(frozen, 1.0)},
             {"rounds_max", rounds_most},
             {"rss_peak_ratio", rss_ratio_most},
             {"wrong", wrong},
             {"acknowledged_keys", acked.size()},
             {"digest", digest},
             {"digest_equal", same},
             {"kv_digest_source", source_digest.size() > 3 ? source_digest.substr(1, source_digest.size() - 3) : source_digest},
             {"kv_digest_target", target_digest.size() > 3 ? target_digest.substr(1, target_digest.size() - 3) : target_digest},
             {"kv_digest_equal", flip_equal}};
    std::printf("    %-9llu | %9s | %9s %9s | %9s %9s | %6llu | %7.2fx | %11llu | %s %s, DEBUG DIGEST %s %s%s\n",
                static_cast<unsigned long long>(keys), fixed(row["set_per_s_min"].get<double>()).c_str(),
                duration(row["stall_p50_us"]).c_str(), duration(row["stall_max_us"]).c_str(),
                duration(row["frozen_p50_us"]).c_str(), duration(row["frozen_max_us"]).c_str(),
                static_cast<unsigned long long>(rounds_most), rss_ratio_most, static_cast<unsigned long long>(wrong),
                digest.c_str(), same ? "(= expected)" : "(DIFFERS)",
                row["kv_digest_target"].get<std::string>().substr(0, 12).c_str(),
                flip_equal ? "(= source's at the flip)" : "(DIFFERS from the source's)",
                failure.empty() ? "" : (" failed: " + failure.substr(0, 200)).c_str());
    std::fflush(stdout);
    rows.push_back(std::move(row));
  }
  std::printf("    anchors: Xen pre-copy live migration 60 ms downtime (Quake 3 server), 210 ms (SPECweb); Swarm's\n"
              "    handoff moves the whole state in one message, no pre-copy; Redis Cluster moves a slot key by key\n"
              "    (MIGRATE) and only cluster-aware clients follow -ASK/-MOVED.\n");
  return Json{{"rows", rows}};
}

// ---------------------------------------------------------------------------
// (d) micro-benchmarks

Json section_d(const fs::path& scratch, bool quick) {
  std::printf("\n(d) One call through a module slot against a direct call (Google Benchmark; allocs = per call)\n");
  const fs::path out = scratch / "call.json";
  const auto result = run_process({fs::path(MOLT_BENCH_DIR) / "molt-bench-call", "--benchmark_out=" + out.string(),
                                   "--benchmark_out_format=json", quick ? "--benchmark_min_time=0.01" : "--benchmark_min_time=0.5"},
                                  std::chrono::minutes(10));
  if (result.exit_code != 0) throw std::runtime_error("molt-bench-call failed: " + result.err);
  const auto json = nlohmann::json::parse(std::ifstream(out));
  Json rows = Json::array();
  std::printf("    %-24s | %10s | %8s\n", "benchmark", "time", "allocs");
  for (const auto& b : json["benchmarks"]) {
    const double ns = b["real_time"].get<double>();
    const double allocs = b.value("allocs", 0.0);
    std::printf("    %-24s | %7.1f ns | %8.3f\n", b["name"].get<std::string>().c_str(), ns, allocs);
    rows.push_back({{"name", b["name"]}, {"ns", ns}, {"allocs_per_call", allocs}});
  }
  return rows;
}

// ---------------------------------------------------------------------------

void check(Json& targets, const std::string& what, bool met, const std::string& measured) {
  std::printf("    [%s] %-62s %s\n", met ? "met " : "MISS", what.c_str(), measured.c_str());
  targets.push_back({{"target", what}, {"met", met}, {"measured", measured}});
}

Json check_targets(const Json& r);

/// Issue 16's: every connection through every hot restart, and the stall.
void check_hot_restart(Json& targets, const Json& rows);

Json check_targets(const Json& r) {
  std::printf("\nTargets (issues 5, 15, 16 and 17)\n");
  Json targets = Json::array();
  if (r.contains("throughput"))
    for (const auto& row : r["throughput"])
      if (row["test"] == "SET" || row["test"] == "GET")
        check(targets, "kv >= 90% of redis-server on " + row["test"].get<std::string>() + ", -P " + std::to_string(row["pipeline"].get<int>()),
              row["ratio"].get<double>() >= 0.9, fixed(row["ratio"].get<double>() * 100) + "%");
  if (r.contains("under_upgrades")) {
    const auto& b = r["under_upgrades"]["upgrading"];
    check(targets, "zero errors and zero lost writes across >= 1000 upgrades under load",
          b["write_errors"] == 0 && b["writes_lost"] == 0 && b["upgrades_completed"].get<unsigned>() >= 1000 &&
              b["upgrades_failed"] == 0,
          std::to_string(b["upgrades_completed"].get<unsigned>()) + " upgrades, " + std::to_string(b["write_errors"].get<std::uint64_t>()) +
              " errors, " + std::to_string(b["writes_lost"].get<std::uint64_t>()) + " lost");
  }
  if (r.contains("pause")) {
    double code_only_max = 0;
    for (const auto& row : r["pause"]["by_size"]) {
      const auto keys = row["keys"].get<std::uint64_t>();
      const double pause = row["pause_us"].get<double>();
      if (row["upgrade"] == "2->3 code-only") code_only_max = std::max(code_only_max, pause);
      if (row["upgrade"] == "1->2 migrating" && keys == 1000000) {
        check(targets, "migrating pause <= 250 ms at 1M keys", pause <= 250000, duration(pause));
        check(targets, "peak RSS <= 2.0x steady during the 1M-key migration", row["peak_over_steady"].get<double>() <= 2.0,
              fixed(row["peak_over_steady"].get<double>(), 2) + "x");
      }
      if (row["upgrade"] == "1->2 migrating" && keys == 10000000) {
        check(targets, "10M keys migrated in under 5 s", pause < 5e6, duration(pause));
        check(targets, "peak RSS <= 2.0x steady during the 10M-key migration", row["peak_over_steady"].get<double>() <= 2.0,
              fixed(row["peak_over_steady"].get<double>(), 2) + "x");
      }
    }
    check(targets, "code-only pause <= 0.5 ms at every size", code_only_max <= 500, "max " + duration(code_only_max));
    for (const auto& row : r["pause"]["at_10k_keys"])
      if (row["upgrade"] == "migrating 1<->2")
        check(targets, "migrating pause p99 <= 1 ms over 200 upgrades at 10K keys", row["pause_p99_us"].get<double>() <= 1000,
              duration(row["pause_p99_us"].get<double>()));
    // Pre-copy against stop-and-copy, in process.
    std::map<std::uint64_t, double> stop_and_copy_total;
    for (const auto& row : r["pause"]["by_size"])
      if (row["upgrade"] == "1->2 stop-and-copy") stop_and_copy_total[row["keys"].get<std::uint64_t>()] = row["total_us"].get<double>();
    for (const auto& row : r["pause"]["by_size"]) {
      const auto keys = row["keys"].get<std::uint64_t>();
      if (row["upgrade"] != "1->2 migrating" || keys < 1000000 || !stop_and_copy_total.contains(keys)) continue;
      const double ratio = row["total_us"].get<double>() / stop_and_copy_total[keys];
      check(targets, "pre-copy upgrade total <= 2x stop-and-copy at " + std::to_string(keys / 1000000) + "M keys (in process)",
            ratio <= 2.0, fixed(ratio, 2) + "x");
    }
  }
  if (r.contains("calls")) {
    std::map<std::string, double> ns;
    for (const auto& row : r["calls"]) ns[row["name"].get<std::string>()] = row["ns"].get<double>();
    for (const auto& [name, label] : {std::pair{"CounterGet", "counter GET"}, std::pair{"KvGet", "kv GET"}}) {
      const std::string direct = std::string("BM_") + name + "_Direct", slot = std::string("BM_") + name + "_Slot";
      if (!ns.contains(direct) || !ns.contains(slot)) continue;
      check(targets, std::string("a call through a slot <= direct + 10 ns (") + label + ")", ns[slot] <= ns[direct] + 10,
            "+" + fixed(ns[slot] - ns[direct], 1) + " ns");
    }
  }
  if (r.contains("client_seen")) {
    const auto& rows = r["client_seen"]["rows"];
    auto find = [&](const std::string& what, std::uint64_t keys) -> const Json* {
      for (const auto& row : rows)
        if (row["case"] == what && row["keys"] == keys) return &row;
      return nullptr;
    };
    auto size = [](std::uint64_t keys) { return keys >= 1000000 ? std::to_string(keys / 1000000) + "M" : std::to_string(keys / 1000) + "K"; };
    for (const std::uint64_t keys : {1000000ull, 10000000ull}) {
      if (const Json* row = find("reload 2->3 code-only", keys))
        check(targets, "code-only 2->3 at " + size(keys) + " keys, its snapshot included: client stall <= 5 ms",
              (*row)["client_stall_us"].get<double>() <= 5000, duration((*row)["client_stall_us"].get<double>()));
      const Json* precopy = find("reload 1->2 migrating, pre-copy", keys);
      if (precopy) {
        const double limit = keys >= 10000000 ? 100000 : 50000;
        check(targets, "migrating 1->2 at " + size(keys) + " keys: client stall <= " + duration(limit),
              (*precopy)["client_stall_us"].get<double>() <= limit, duration((*precopy)["client_stall_us"].get<double>()));
        if (const Json* base = find("reload 1->2 migrating, stop-and-copy", keys)) {
          // With the snapshot the install takes (in the background, after the command answered).
          const double ratio = (*precopy)["snapshot_written_us"].get<double>() / (*base)["snapshot_written_us"].get<double>();
          check(targets, "pre-copy reload total <= 2x stop-and-copy at " + size(keys) + " keys", ratio <= 2.0,
                fixed(ratio, 2) + "x");
        }
        if (precopy->contains("writer_during_precopy_per_s")) {
          const double ratio =
              (*precopy)["writer_during_precopy_per_s"].get<double>() / (*precopy)["writer_steady_per_s"].get<double>();
          check(targets, "writer throughput during pre-copy >= 70% of steady at " + size(keys) + " keys", ratio >= 0.7,
                fixed(ratio * 100) + "%");
        }
        check(targets, "moltd peak RSS <= 2.0x steady during the " + size(keys) + "-key pre-copy upgrade",
              (*precopy)["peak_over_steady"].get<double>() <= 2.0, fixed((*precopy)["peak_over_steady"].get<double>(), 2) + "x");
      }
    }
    if (const Json* row = find("save (every module's snapshot)", 1000000))
      check(targets, "moltctl save at 1M keys: client stall <= 5 ms", (*row)["client_stall_us"].get<double>() <= 5000,
            duration((*row)["client_stall_us"].get<double>()));
    std::uint64_t lost = 0, errors = 0;
    double slowest_writer = 1e18;
    for (const auto& row : rows) {
      lost += row["writes_lost"].get<std::uint64_t>();
      errors += row["write_errors"].get<std::uint64_t>() + row["ping_errors"].get<std::uint64_t>();
      slowest_writer = std::min(slowest_writer, row["writer_steady_per_s"].get<double>());
    }
    check(targets, "0 lost writes: every acknowledged key has its last value, every row of (e)", lost == 0 && errors == 0,
          std::to_string(lost) + " lost, " + std::to_string(errors) + " errors");
    check(targets, "the writer does >= 10,000 SET/s before each command", slowest_writer >= 10000,
          "slowest " + fixed(slowest_writer) + "/s");
  }
  if (r.contains("hot_restart")) check_hot_restart(targets, r["hot_restart"]["rows"]);
  if (r.contains("handoff"))
    for (const auto& row : r["handoff"]["rows"]) {
      const std::string at = " (" + std::to_string(row["keys"].get<std::uint64_t>()) + " keys)";
      check(targets, "handoff: the writer keeps >= 10000 SET/s" + at, row["set_per_s_min"].get<double>() >= 10000,
            fixed(row["set_per_s_min"].get<double>()) + " SET/s at the slowest");
      check(targets, "handoff: longest stall a client sees <= 50 ms" + at, row["stall_max_us"].get<double>() <= 50000,
            duration(row["stall_max_us"].get<double>()));
      check(targets, "handoff: frozen <= 20 ms" + at, row["frozen_max_us"].get<double>() <= 20000,
            duration(row["frozen_max_us"].get<double>()));
      check(targets, "handoff: 0 lost acknowledged writes, the whole state's digest as expected and equal to the source's "
                     "at the flip, 0 errors" + at,
            row["wrong"] == 0 && row["digest_equal"] == true && row["kv_digest_equal"] == true && row["errors"] == 0,
            std::to_string(row["wrong"].get<std::uint64_t>()) + " wrong, " + std::to_string(row["errors"].get<std::uint64_t>()) +
                " errors, digest " + row["digest"].get<std::string>());
      check(targets, "handoff: bounded pre-copy (rounds <= 16) and source peak RSS <= 2x steady" + at,
            row["rounds_max"].get<std::uint64_t>() <= 16 && row["rss_peak_ratio"].get<double>() <= 2.0,
            std::to_string(row["rounds_max"].get<std::uint64_t>()) + " rounds, " + fixed(row["rss_peak_ratio"].get<double>(), 2) + "x");
    }
  return targets;
}

void check_hot_restart(Json& targets, const Json& rows) {
  std::uint64_t closed = 0, wrong = 0, errors = 0, restarts = 0;
  for (const auto& row : rows) {
    closed += row["closed"].get<std::uint64_t>();
    wrong += row["wrong_replies"].get<std::uint64_t>() + row["lost_writes"].get<std::uint64_t>();
    errors += row["errors"].get<std::uint64_t>() + row["failed"].get<std::uint64_t>();
    restarts += row["restarts"].get<std::uint64_t>() - row["failed"].get<std::uint64_t>();
  }
  check(targets, "hot restarts: 0 connections closed, 0 replies lost, repeated or reordered, 0 errors",
        closed == 0 && wrong == 0 && errors == 0,
        std::to_string(restarts) + " hot restarts, " + std::to_string(closed) + " closed, " + std::to_string(wrong) +
            " wrong, " + std::to_string(errors) + " errors");
  for (const auto& row : rows) {
    const auto keys = row["keys"].get<std::uint64_t>();
    const bool precopy = row["state"] == "pre-copy";
    const double limit_ms = keys <= 10000 ? 20 : precopy ? 50 : 300;
    check(targets,
          "hot restart client stall p99 <= " + fixed(limit_ms) + " ms at " + std::to_string(keys) + " keys (" +
              row["state"].get<std::string>() + ")",
          row["stall_p99_us"].get<double>() <= limit_ms * 1000, duration(row["stall_p99_us"].get<double>()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"molt-bench-kv: kv against redis-server, upgrades under load, pause against state size"};
  Options o;
  app.add_option("--requests", o.requests, "redis-benchmark requests per test in (a)");
  app.add_option("--clients", o.clients, "redis-benchmark connections");
  app.add_option("--io-threads", o.io_threads, "moltd's io_threads");
  app.add_option("--rounds", o.rounds, "rounds of (a), alternating servers; the median is reported")->check(CLI::PositiveNumber);
  app.add_option("--upgrades", o.upgrades, "upgrades and rollbacks in (b)");
  app.add_option("--baseline-seconds", o.baseline_s, "how long (b) measures the load without upgrades first");
  app.add_option("--period-ms", o.period_ms, "time between them");
  app.add_option("--sizes", o.sizes, "state sizes for (c), in keys")->delimiter(',');
  app.add_option("--pause-rounds", o.pause_rounds, "upgrades at 10K keys for the pause distribution in (c)");
  app.add_option("--stall-sizes", o.stall_sizes, "state sizes for (e), in keys")->delimiter(',');
  app.add_option("--sections", o.sections, "which of a, b, c, d, e, f, g to run");
  app.add_option("--restarts", o.restarts, "hot restarts per row of (f)");
  app.add_option("--restart-sizes", o.restart_sizes, "state sizes for (f), in keys")->delimiter(',');
  app.add_option("--resp-clients", o.resp_clients, "(f): RESP connections that must live through the hot restarts");
  app.add_option("--http-clients", o.http_clients, "(f): HTTP keep-alive connections that must too");
  app.add_option("--crowd-rate", o.crowd_rate, "(f): rounds per second on each of them (0: as fast as answered)");
  app.add_option("--handoffs", o.handoffs, "(g): handoffs per state size, alternating between the two moltd")
      ->check(CLI::PositiveNumber);
  app.add_option("--handoff-sizes", o.handoff_sizes, "state sizes for (g), in keys")->delimiter(',');
  app.add_option("--json", o.json_path, "write every figure as JSON to this file");
  app.add_flag("--trace-stalls", o.trace_stalls,
               "(e): print every client round trip over 5 ms with its wall time; (e), (f): keep moltd's logs (at info)");
  app.add_flag("--quick", o.quick, "shortest runs of the micro-benchmarks (a smoke test; use small sizes too)");
  CLI11_PARSE(app, argc, argv);
  ::signal(SIGPIPE, SIG_IGN);
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);  // (f): a hot restart's new moltd becomes our child when the old one exits

  char pattern[] = "/tmp/molt-bench-XXXXXX";
  const fs::path scratch = ::mkdtemp(pattern);
  utsname machine{};
  ::uname(&machine);
  Json results{{"machine", {{"kernel", std::string(machine.release)},
                            {"cpus", std::thread::hardware_concurrency()},
                            {"redis_server", run_process({"redis-server", "--version"}).out}}},
               {"options", {{"requests", o.requests}, {"clients", o.clients}, {"io_threads", o.io_threads},
                            {"upgrades", o.upgrades}, {"period_ms", o.period_ms}}}};
  std::printf("molt-bench-kv on %u CPUs, Linux %s; moltd io_threads = %u\n", std::thread::hardware_concurrency(),
              machine.release, o.io_threads);
  try {
    const auto has = [&](char section) { return o.sections.find(section) != std::string::npos; };
    if (has('a') || has('b')) {
      RedisServer redis(scratch / "redis");
      Moltd moltd(scratch / "moltd", o.io_threads);
      if (has('a')) results["throughput"] = section_a(o, redis.port(), moltd.port());
      if (has('b')) results["under_upgrades"] = section_b(o, moltd);
    }
    if (has('c')) results["pause"] = section_c(o);
    if (has('d')) results["calls"] = section_d(scratch, o.quick);
    if (has('e')) results["client_seen"] = section_e(o, scratch);
    if (has('f')) results["hot_restart"] = section_f(o, scratch);
    if (has('g')) results["handoff"] = section_g(o, scratch);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "molt-bench-kv: %s\n", e.what());
    return 1;
  }
  results["targets"] = check_targets(results);
  if (!o.json_path.empty()) std::ofstream(o.json_path) << results.dump(2) << '\n';
  if (o.trace_stalls)
    std::fprintf(stderr, "molt-bench-kv: kept %s for its logs\n", scratch.c_str());
  else
    fs::remove_all(scratch);
  return 0;
}
