// The fixture test itself (host/fixture/fixture_check.cpp) must be able to
// fail: each case edits a copy of tests/fixtures/counter/1-2 and checks that
// the report names what is wrong.
#include <fstream>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "molt/host/fixture/fixture_check.hpp"
#include "test_support.hpp"

using namespace molt;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

/// tests/fixtures/counter/1-2 copied to <temp>/<module>/<pair>, its
/// expect.json changed by `edit`.
fs::path copy_counter_fixture(const test::TempDir& temp, const std::string& pair,
                              const std::function<void(Json&)>& edit = [](Json&) {}) {
  const fs::path dir = temp.path() / "counter" / pair;
  fs::create_directories(dir.parent_path());
  fs::copy(test::fixture_root() / "counter" / "1-2", dir, fs::copy_options::recursive);
  Json expect = Json::parse(std::ifstream(dir / "expect.json"));
  edit(expect);
  std::ofstream(dir / "expect.json", std::ios::trunc) << expect;
  return dir;
}

host::FixtureOptions counter_images() {
  return host::FixtureOptions{{test::plugin_path("counter", 1), test::plugin_path("counter", 2)}, nullptr};
}

/// The failures of `report`, one per line.
std::string failures(const host::FixtureReport& report) {
  std::string out;
  for (const auto& check : report.checks)
    if (!check.failure.empty()) out += check.what + ": " + check.failure + '\n';
  return out;
}

}  // namespace

TEST_CASE("a fixture passes when <to> gives every expected answer, and checks the round trip", "[fixture]") {
  test::TempDir temp;
  const auto report = host::check_fixture(copy_counter_fixture(temp, "1-2"), counter_images());
  INFO(failures(report));
  CHECK(report.passed());
  REQUIRE_FALSE(report.checks.empty());
  CHECK(report.checks.back().what == "roundtrip 1 -> 2 -> 1: identical bytes");
}

TEST_CASE("a fixture fails, naming the key, when an answer differs from expect.json", "[fixture]") {
  test::TempDir temp;
  const auto report = host::check_fixture(
      copy_counter_fixture(temp, "1-2", [](Json& expect) { expect["after"][0]["json"]["total"] = 8; }),
      counter_images());
  CHECK_FALSE(report.passed());
  CHECK(report.failures() == 1);
  CHECK_THAT(failures(report), Catch::Contains("after[0] GET /counter: .total: expected 8, got 7"));
}

TEST_CASE("a misspelt key in expect.json fails the fixture instead of leaving a check out", "[fixture]") {
  test::TempDir temp;
  const auto report = host::check_fixture(copy_counter_fixture(temp, "1-2", [](Json& expect) {
                                            expect["after"][0]["jsno"] = expect["after"][0]["json"];
                                            expect["after"][0].erase("json");
                                          }),
                                          counter_images());
  CHECK_FALSE(report.passed());
  CHECK_THAT(failures(report), Catch::Contains("expect.json: after[0]: unknown key \"jsno\""));
}

TEST_CASE("a fixture whose state another version wrote than its directory says fails before migrating", "[fixture]") {
  test::TempDir temp;
  const auto report = host::check_fixture(copy_counter_fixture(temp, "2-1"), counter_images());
  CHECK_FALSE(report.passed());
  CHECK_THAT(failures(report), Catch::Contains("state.molt holds counter v2 state: it holds counter v1 state"));
  CHECK(report.checks.back().what == "state.molt holds counter v2 state");
}

TEST_CASE("a fixture fails when no image declares one of its versions, listing those given", "[fixture]") {
  test::TempDir temp;
  const auto report = host::check_fixture(copy_counter_fixture(temp, "1-2"),
                                          host::FixtureOptions{{test::plugin_path("counter", 1)}, nullptr});
  CHECK_FALSE(report.passed());
  CHECK_THAT(failures(report),
             Catch::Contains("image of counter v2: no image declares it; given: counter-1.so (counter v1)"));
}

TEST_CASE("a fixture directory must be named <module>/<from>-<to>", "[fixture]") {
  test::TempDir temp;
  const fs::path dir = temp.path() / "counter" / "1to2";
  fs::create_directories(dir);
  const auto report = host::check_fixture(dir, counter_images());
  CHECK_FALSE(report.passed());
  CHECK_THAT(failures(report), Catch::Contains("must be named <module>/<from>-<to>"));
}
