// UpgradeHistory: what `moltctl history` and GET /-/history list.
#include <catch2/catch.hpp>

#include "molt/host/upgrade/report.hpp"

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
