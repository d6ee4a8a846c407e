#include <fstream>

#include <catch2/catch.hpp>

#include "molt/host/config/host_config.hpp"
#include "test_support.hpp"

using namespace molt;

namespace {
host::Result<host::HostConfig> parse(const std::string& text, const host::ConfigOverrides& overrides = {}) {
  static test::TempDir dir;
  const auto path = dir.path() / "moltd.toml";
  std::ofstream(path) << text;
  return host::load_host_config(path, overrides);
}
}  // namespace

TEST_CASE("a full configuration is read, module files resolved in the plugin directory", "[config]") {
  auto config = parse(R"(
[host]
run_dir = "/srv/run"
plugin_dir = "/srv/plugins"
http = "0.0.0.0:9000"
http_threads = 8
quiesce_timeout_ms = 250
[modules.counter]
version = 2
[modules.counter.config]
default_key = "main"
limit = 10
strict = true
[modules.kv]
file = "kv-custom.so"
)");
  REQUIRE(config.ok());
  CHECK(config->run_dir == "/srv/run");
  CHECK(config->http.to_string() == "0.0.0.0:9000");
  CHECK(config->http_threads == 8);
  CHECK(config->quiesce_timeout == std::chrono::milliseconds(250));
  REQUIRE(config->modules.size() == 2);
  CHECK(config->modules[0].name == "counter");
  CHECK(config->modules[0].file == "/srv/plugins/counter-2.so");
  CHECK(config->modules[0].values == api::Values{{"default_key", "main"}, {"limit", "10"}, {"strict", "true"}});
  CHECK(config->modules[1].file == "/srv/plugins/kv-custom.so");
}

TEST_CASE("command-line overrides win over the file", "[config]") {
  auto config = parse("[host]\nhttp = \"127.0.0.1:1\"\n[modules.counter]\nversion = 1\n",
                      host::ConfigOverrides{"/tmp/other-run", "127.0.0.1:0", "debug", "json"});
  REQUIRE(config.ok());
  CHECK(config->run_dir == "/tmp/other-run");
  CHECK(config->http.port == 0);
  CHECK(config->log_level == "debug");
  CHECK(config->log_format == "json");
  const auto wrong = parse("[modules.counter]\nversion = 1\n", host::ConfigOverrides{{}, {}, {}, "xml"});
  REQUIRE_FALSE(wrong.ok());
  CHECK_THAT(wrong.error().to_string(), Catch::Contains("--log-format: must be text or json"));
}

TEST_CASE("configuration errors name the key and the reason", "[config]") {
  const auto [text, expected] = GENERATE(table<std::string, std::string>({
      {"[modules.counter]\nversion = 0\n", "modules.counter.version: must be an integer from 1 to 4294967295"},
      {"[modules.counter]\nversion = 1\nfile = \"x.so\"\n", "modules.counter.file: give version or file, not both"},
      {"[modules.counter]\n", "modules.counter: needs version = N or file = \"...\""},
      {"[modules.Counter]\nversion = 1\n", "modules.Counter: module names are 1 to 63 characters of [a-z0-9_-]"},
      {"[modules.counter]\nversion = 1\nconfig = { nested = { a = 1 } }\n", "modules.counter.config.nested: must be a string, number or boolean"},
      {"[host]\nhttp_threads = 0\n[modules.counter]\nversion = 1\n", "host.http_threads: must be an integer from 1 to 256"},
      {"[host]\nlog_level = \"loud\"\n[modules.counter]\nversion = 1\n", "host.log_level: must be one of"},
      {"[host]\nrun_dir = 5\n[modules.counter]\nversion = 1\n", "host.run_dir: must be a string"},
      {"extra = 1\n[modules.counter]\nversion = 1\n", "extra: unknown key"},
  }));
  auto config = parse(text);
  REQUIRE_FALSE(config.ok());
  CHECK(config.error().phase == host::Phase::Config);
  CHECK_THAT(config.error().to_string(), Catch::Contains("moltd.toml: config: " + expected));
}

TEST_CASE("endpoints parse as HOST:PORT", "[config]") {
  CHECK(host::parse_endpoint("127.0.0.1:8080")->port == 8080);
  CHECK(host::parse_endpoint("[::1]:80")->host == "::1");
  CHECK_FALSE(host::parse_endpoint("localhost").has_value());
  CHECK_FALSE(host::parse_endpoint("x:99999").has_value());
  CHECK_FALSE(host::parse_endpoint(":80").has_value());
}
