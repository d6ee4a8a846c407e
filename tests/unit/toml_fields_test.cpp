// The checks shared by the host configuration's and the upgrade scripts'
// parsers (host/config/toml_fields.hpp); config_test and upgrade_script_test
// pin the messages each parser builds from them.
#include <catch2/catch.hpp>

#include <toml++/toml.h>

#include "config/toml_fields.hpp"

using namespace molt;

TEST_CASE("check_only_keys names the first key not allowed, after where it is", "[config][toml]") {
  const toml::table table = toml::parse("b = 1\nzz = 2\na = 3\nyy = 4\n");
  CHECK_FALSE(host::check_only_keys(table, {"a", "b", "yy", "zz"}).has_value());
  CHECK_FALSE(host::check_only_keys(table, {"zz", "yy", "b", "a", "unused"}).has_value());
  CHECK(host::check_only_keys(table, {"a", "b"}) == "yy: unknown key");  // keys in sorted order
  CHECK(host::check_only_keys(table, {"a", "b", "yy"}, "modules.kv.") == "modules.kv.zz: unknown key");
  CHECK(host::check_only_keys(table, {}, "host.") == "host.a: unknown key");
  CHECK_FALSE(host::check_only_keys(toml::table{}, {}).has_value());
}

TEST_CASE("parse_listen_address reads HOST:PORT or a list of them", "[config][toml]") {
  const toml::table table = toml::parse(R"(
one = "127.0.0.1:6379"
two = ["127.0.0.1:1", "[::1]:2"]
none = []
)");
  const auto one = host::parse_listen_address(*table.get("one"));
  REQUIRE(one.has_value());
  REQUIRE(one->size() == 1);
  CHECK(one->at(0).host == "127.0.0.1");
  CHECK(one->at(0).port == 6379);
  const auto two = host::parse_listen_address(*table.get("two"));
  REQUIRE(two.has_value());
  REQUIRE(two->size() == 2);
  CHECK(two->at(0).to_string() == "127.0.0.1:1");
  CHECK(two->at(1).host == "::1");
  CHECK(two->at(1).port == 2);
  const auto none = host::parse_listen_address(*table.get("none"));
  REQUIRE(none.has_value());
  CHECK(none->empty());
}

TEST_CASE("parse_listen_address refuses anything but HOST:PORT strings", "[config][toml]") {
  const toml::table table = toml::parse(R"(
no_port = "localhost"
bad_port = "127.0.0.1:70000"
number = 6379
one_bad = ["127.0.0.1:1", 2]
table = { host = "127.0.0.1" }
)");
  for (const char* key : {"no_port", "bad_port", "number", "one_bad", "table"}) {
    INFO(key);
    CHECK_FALSE(host::parse_listen_address(*table.get(key)).has_value());
  }
}
