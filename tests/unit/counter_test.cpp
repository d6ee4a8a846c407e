#include <limits>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "../../plugins/counter/common/state.hpp"
#include "molt/host/state/buffers.hpp"
#include "molt/host/upgrade/transaction.hpp"
#include "test_support.hpp"

using namespace molt;
using test::call_ok;
using test::plugin_path;
using Json = nlohmann::json;

TEST_CASE("counter v1 counts, and answers unknown routes and methods with errors", "[counter]") {
  test::Harness h;
  auto slot = h.start(plugin_path("counter", 1), "counter");
  CHECK(Json::parse(call_ok(*slot, "GET", "/counter")) == Json{{"module", "counter"}, {"version", 1}, {"total", 0}});
  CHECK(Json::parse(call_ok(*slot, "POST", "/counter/incr"))["total"] == 1);
  CHECK(slot->call(test::request("GET", "/counter/incr"))->status == 405);
  CHECK(slot->call(test::request("POST", "/counter"))->status == 405);
  CHECK(slot->call(test::request("GET", "/counter/nope"))->status == 404);
}

TEST_CASE("counter v2 counts per key", "[counter]") {
  test::Harness h;
  auto slot = h.start(plugin_path("counter", 2), "counter", {{"default_key", "main"}});
  call_ok(*slot, "POST", "/counter/incr");
  call_ok(*slot, "POST", "/counter/incr?key=a%20b");
  const auto shown = Json::parse(call_ok(*slot, "GET", "/counter?key=a%20b"));
  CHECK(shown["total"] == 2);
  CHECK(shown["counts"] == Json{{"a b", 1}, {"main", 1}});
  CHECK(shown["key"] == "a b");
  CHECK(shown["count"] == 1);
  CHECK(slot->call(test::request("POST", "/counter/incr?key="))->status == 400);
  CHECK(slot->call(test::request("POST", "/counter/incr?key=" + std::string(201, 'k')))->status == 400);
}

TEST_CASE("counter v2 refuses a downgrade whose sum does not fit v1's total", "[counter][rollback]") {
  test::Harness h;
  auto slot = h.start(plugin_path("counter", 2), "counter");
  counter::StateV2 huge;
  huge.counts = {{"a", std::numeric_limits<std::uint64_t>::max()}, {"b", 1}};
  host::StringSink sink(1 << 20);
  api::StateWriter(sink).write(huge);
  REQUIRE(host::restore(*slot, h.loader, host::StateBlob{"counter", api::ModuleVersion{2}, api::SchemaVersion{2}, sink.take()})
              .outcome == host::Outcome::Succeeded);

  const auto report = host::upgrade(*slot, h.loader, plugin_path("counter", 1));
  CHECK(report.outcome == host::Outcome::RolledBack);
  CHECK(report.error->phase == host::Phase::Save);
  CHECK_THAT(report.error->to_string(), Catch::Contains("refused: the sum of all counts does not fit v1's 64-bit total"));
  CHECK(Json::parse(call_ok(*slot, "GET", "/counter"))["version"] == 2);
}
