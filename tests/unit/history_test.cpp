// UpgradeHistory: what `moltctl history` and GET /-/history list.
#include <fstream>

#include <catch2/catch.hpp>

#include "molt/host/runtime/history_log.hpp"
#include "molt/host/upgrade/report.hpp"
#include "test_support.hpp"

using namespace molt::host;

namespace {

UpgradeReport report(std::string module, std::uint32_t to) {
  UpgradeReport r;
  r.module = std::move(module);
  r.to = molt::api::ModuleVersion{to};
  return r;
}

std::vector<std::uint32_t> versions(const std::vector<UpgradeReport>& reports) {
  std::vector<std::uint32_t> out;
  for (const auto& r : reports) out.push_back(r.to.value);
  return out;
}

}  // namespace

TEST_CASE("history lists the most recent reports asked for, of one module or of all, oldest first", "[history]") {
  UpgradeHistory history(5);
  for (std::uint32_t i = 1; i <= 7; ++i) history.record(report(i % 2 ? "counter" : "kv", i));

  using V = std::vector<std::uint32_t>;
  CHECK(versions(history.list()) == V{3, 4, 5, 6, 7});  // capacity 5: the two oldest are gone
  CHECK(versions(history.list({}, 2)) == V{6, 7});
  CHECK(versions(history.list({}, 100)) == V{3, 4, 5, 6, 7});
  CHECK(versions(history.list("counter")) == V{3, 5, 7});
  CHECK(versions(history.list("counter", 2)) == V{5, 7});
  CHECK(history.list("kv", 0).empty());
  CHECK(history.list("batch").empty());
}

TEST_CASE("the history is kept across restarts, bounded, and survives a line cut short by a crash", "[history]") {
  molt::test::TempDir dir;
  const auto file = dir.path() / "history.jsonl";
  {
    molt::host::HistoryLog log(file, 3);
    for (int i = 0; i < 2; ++i) REQUIRE_FALSE(log.append({{"module", "kv"}, {"n", i}}));
    REQUIRE_FALSE(log.append({{"kind", "crash"}, {"module", "notes"}, {"line", "SIGSEGV"}}));
  }
  {  // a crash cut the last write short
    std::ofstream out(file, std::ios::app);
    out << "{\"module\":\"kv\",\"n\":";
  }
  molt::host::HistoryLog again(file, 3);
  CHECK_FALSE(again.load_problem());
  auto entries = again.entries();
  REQUIRE(entries.size() == 3);
  CHECK(entries[0]["n"] == 0);
  CHECK(entries[2]["kind"] == "crash");
  CHECK(again.entries("kv").size() == 2);
  CHECK(again.entries("kv", 1).front()["n"] == 1);
  // Past twice the bound the file is rewritten with only what is kept.
  for (int i = 2; i < 10; ++i) REQUIRE_FALSE(again.append({{"module", "kv"}, {"n", i}}));
  molt::host::HistoryLog third(file, 3);
  entries = third.entries();
  REQUIRE(entries.size() == 3);
  CHECK(entries.back()["n"] == 9);
  std::ifstream in(file);
  std::size_t lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  CHECK(lines <= 6);
}
