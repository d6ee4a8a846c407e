// Upgrade pause and phase timings, measured on the real transaction.
//
//   molt-bench-upgrade [--rounds N] [--keys 1000,100000,1000000] [--json FILE]
//
// Part 1: counter v1 <-> v2 with a small state, alternating up and down.
// Part 2: counter v2 with K keys, reloaded onto v2 (same schema), to show how
// the pause grows with the state it serializes.
// Prints one table; --json writes the same rows as JSON.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/null_sink.h>

#include "../plugins/counter/common/state.hpp"
#include "molt/host/state/buffers.hpp"
#include "molt/host/upgrade/transaction.hpp"

namespace fs = std::filesystem;
using namespace molt;
using std::chrono::microseconds;

namespace {

fs::path plugin(unsigned version) { return fs::path(MOLT_PLUGIN_DIR) / ("counter-" + std::to_string(version) + ".so"); }

struct Row {
  std::string name;
  std::uint64_t state_bytes = 0;
  std::vector<host::UpgradeReport> reports;
};

double percentile(std::vector<std::int64_t> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return static_cast<double>(values[std::min(values.size() - 1, static_cast<std::size_t>(p * values.size()))]);
}

template <class Field>
std::vector<std::int64_t> collect(const Row& row, Field field) {
  std::vector<std::int64_t> out;
  for (const auto& r : row.reports) out.push_back(field(r).count());
  return out;
}

std::shared_ptr<host::ModuleSlot> start(host::Loader& loader, unsigned version) {
  auto image = loader.load(plugin(version), "counter");
  if (!image) throw std::runtime_error(image.error().to_string());
  auto logger = std::make_shared<spdlog::logger>("counter", std::make_shared<spdlog::sinks::null_sink_mt>());
  auto slot = host::ModuleSlot::start(std::move(image.value()), {logger, {}, nullptr, nullptr});
  if (!slot) throw std::runtime_error(slot.error().to_string());
  return std::move(slot.value());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Measure counter upgrade pauses and phase timings"};
  unsigned rounds = 200;
  std::vector<std::uint64_t> key_counts{1000, 100000, 1000000};
  std::string json_path;
  app.add_option("--rounds", rounds, "upgrades per row (part 2 uses a tenth, at least 5)");
  app.add_option("--keys", key_counts, "state sizes for part 2, in keys")->delimiter(',');
  app.add_option("--json", json_path, "also write the rows as JSON to this file");
  CLI11_PARSE(app, argc, argv);

  char dir[] = "/tmp/molt-bench-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return 1;
  host::Loader loader(host::LoaderOptions{fs::path(dir) / "images"});
  std::vector<Row> rows;

  {  // Part 1: small state, v1 <-> v2.
    auto slot = start(loader, 1);
    for (int i = 0; i < 1000; ++i) (void)slot->call({"POST", "/counter/incr", "", {}, {}});
    Row up{"counter 1->2, 1 key", 0, {}}, down{"counter 2->1, 1 key", 0, {}};
    for (unsigned i = 0; i < rounds; ++i) {
      for (Row* row : {&up, &down}) {
        auto report = host::upgrade(*slot, loader, plugin(row == &up ? 2 : 1));
        if (report.outcome != host::Outcome::Succeeded) throw std::runtime_error(report.summary());
        row->state_bytes = report.state_bytes;
        row->reports.push_back(std::move(report));
      }
    }
    rows.push_back(std::move(up));
    rows.push_back(std::move(down));
  }

  for (const std::uint64_t keys : key_counts) {  // Part 2: v2 -> v2 with K keys.
    auto slot = start(loader, 2);
    counter::StateV2 state;
    for (std::uint64_t k = 0; k < keys; ++k) state.counts.emplace("key:" + std::to_string(k), k);
    host::StringSink sink(UINT64_MAX);
    api::StateWriter(sink).write(state);
    state = {};
    auto restored = host::restore(*slot, loader, {"counter", api::ModuleVersion{2}, api::SchemaVersion{2}, sink.take()});
    if (restored.outcome != host::Outcome::Succeeded) throw std::runtime_error(restored.summary());
    Row row{"counter 2->2, " + std::to_string(keys) + " keys", 0, {}};
    for (unsigned i = 0; i < std::max(5u, rounds / 10); ++i) {
      auto report = host::upgrade(*slot, loader, plugin(2));
      if (report.outcome != host::Outcome::Succeeded) throw std::runtime_error(report.summary());
      row.state_bytes = report.state_bytes;
      row.reports.push_back(std::move(report));
    }
    rows.push_back(std::move(row));
  }
  fs::remove_all(dir);

  std::printf("%-26s %6s %12s | %9s %9s %9s %9s %9s | %10s %10s | %9s\n", "upgrade", "n", "state B", "prepare", "quiesce",
              "save", "migrate", "resume", "pause p50", "pause p99", "cleanup");
  std::printf("%s\n", std::string(140, '-').c_str());
  nlohmann::json json = nlohmann::json::array();
  for (const Row& row : rows) {
    auto p50 = [&](auto field) { return percentile(collect(row, field), 0.50); };
    const auto prepare = p50([](const auto& r) { return r.phases.prepare; });
    const auto quiesce = p50([](const auto& r) { return r.phases.quiesce; });
    const auto save = p50([](const auto& r) { return r.phases.save; });
    const auto migrate = p50([](const auto& r) { return r.phases.migrate; });
    const auto resume = p50([](const auto& r) { return r.phases.resume; });
    const auto cleanup = p50([](const auto& r) { return r.phases.cleanup; });
    const auto pauses = collect(row, [](const auto& r) { return r.pause; });
    const double pause50 = percentile(pauses, 0.50), pause99 = percentile(pauses, 0.99);
    std::printf("%-26s %6zu %12llu | %9.0f %9.0f %9.0f %9.0f %9.0f | %10.0f %10.0f | %9.0f\n", row.name.c_str(),
                row.reports.size(), static_cast<unsigned long long>(row.state_bytes), prepare, quiesce, save, migrate,
                resume, pause50, pause99, cleanup);
    json.push_back({{"upgrade", row.name}, {"n", row.reports.size()}, {"state_bytes", row.state_bytes},
                    {"p50_us", {{"prepare", prepare}, {"quiesce", quiesce}, {"save", save}, {"migrate", migrate},
                                {"resume", resume}, {"cleanup", cleanup}, {"pause", pause50}}},
                    {"p99_us", {{"pause", pause99}}}});
  }
  std::printf("(all times in microseconds, median unless marked; pause = quiesce start to resume end)\n");
  if (!json_path.empty()) std::ofstream(json_path) << json.dump(2) << '\n';
  return 0;
}
