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
install_snapshot_delay_ms = 0
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
  CHECK(config->install_snapshot_delay == std::chrono::milliseconds(0));
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
      {"[modules.counter]\n", "modules.counter: needs version = N or file = \"...\" (or accept_handoff = true"},
      {"[modules.kv]\naccept_handoff = true\n", "accept_handoff: needs host.peer_secret_file"},
      {"[modules.kv]\naccept_handoff = \"yes\"\n", "modules.kv.accept_handoff: must be true or false"},
      {"[host]\npeer = \"127.0.0.1:0\"\n[modules.kv]\nversion = 1\n", "host.peer: must look like 10.0.0.1:7400"},
      {"[host]\npeer = \"127.0.0.1:7400\"\n[modules.kv]\nversion = 1\n", "host.peer: needs host.peer_secret_file"},
      {"[host]\nhandoff_http = \"307\"\n[modules.kv]\nversion = 1\n", "host.handoff_http: must be \"forward\" or \"redirect\""},
      {"[host]\nhandoff_new_connections = \"drop\"\n[modules.kv]\nversion = 1\n",
       "host.handoff_new_connections: must be \"moved\" or \"forward\""},
      {"[host]\npeer_secret_file = \"/nonexistent/secret\"\n[modules.kv]\nversion = 1\n",
       "host.peer_secret_file: /nonexistent/secret: No such file or directory"},
      {"[modules.Counter]\nversion = 1\n", "modules.Counter: module names are 1 to 63 characters of [a-z0-9_-]"},
      {"[modules.counter]\nversion = 1\nconfig = { nested = { a = 1 } }\n", "modules.counter.config.nested: must be a string, number or boolean"},
      {"[host]\nhttp_threads = 0\n[modules.counter]\nversion = 1\n", "host.http_threads: must be an integer from 1 to 256"},
      {"[host]\nlog_level = \"loud\"\n[modules.counter]\nversion = 1\n", "host.log_level: must be one of"},
      {"[host]\ninstall_snapshot_delay_ms = -1\n[modules.counter]\nversion = 1\n",
       "host.install_snapshot_delay_ms: must be an integer from 0 to 3600000"},
      {"[host]\nrun_dir = 5\n[modules.counter]\nversion = 1\n", "host.run_dir: must be a string"},
      {"extra = 1\n[modules.counter]\nversion = 1\n", "extra: unknown key"},
      {"[host]\nhttp_treads = 2\n[modules.counter]\nversion = 1\n", "host.http_treads: unknown key"},
      {"[modules.counter]\nversion = 1\nlisen = \"127.0.0.1:1\"\n", "modules.counter.lisen: unknown key"},
      {"[modules.kv]\nversion = 1\nlisten = \"localhost\"\n", "modules.kv.listen: must be \"HOST:PORT\" or a list of them"},
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

TEST_CASE("client limits have Redis's defaults", "[config][limits]") {
  auto config = parse("[modules.kv]\nversion = 1\n");
  REQUIRE(config.ok());
  CHECK(config->clients.maxclients == 10000);
  CHECK(config->clients.timeout == std::chrono::seconds(0));
  CHECK(config->client_query_buffer_limit == 1ull << 30);
  CHECK(config->client_output_buffer_soft_limit == 1u << 20);
  CHECK(config->client_output_buffer_hard_limit == 0);
  CHECK(config->max_connection_memory == 2ull << 30);
  CHECK(config->module_clients.empty());
  CHECK(config->clients_of("kv").maxclients == 10000);
  CHECK(config->warnings.empty());
}

TEST_CASE("client limits are read, sizes in bytes or with Redis's units", "[config][limits]") {
  auto config = parse(R"(
[host]
maxclients = 500
timeout = 300
client_query_buffer_limit = "512mb"
client_output_buffer_soft_limit = 65536
client_output_buffer_hard_limit = "8M"
max_connection_memory = "1GB"
[modules.kv]
version = 1
maxclients = 50
[modules.counter]
version = 1
timeout = 5
[modules.other]
version = 1
)");
  REQUIRE(config.ok());
  CHECK(config->clients.maxclients == 500);
  CHECK(config->clients.timeout == std::chrono::seconds(300));
  CHECK(config->client_query_buffer_limit == 512ull << 20);
  CHECK(config->client_output_buffer_soft_limit == 65536);
  CHECK(config->client_output_buffer_hard_limit == 8'000'000);
  CHECK(config->max_connection_memory == 1ull << 30);
  // A module's own values override the host's; the rest it inherits.
  CHECK(config->clients_of("kv").maxclients == 50);
  CHECK(config->clients_of("kv").timeout == std::chrono::seconds(300));
  CHECK(config->clients_of("counter").maxclients == 500);
  CHECK(config->clients_of("counter").timeout == std::chrono::seconds(5));
  CHECK(config->clients_of("other").maxclients == 500);
  CHECK(config->module_clients.size() == 2);
}

TEST_CASE("sizes parse as Redis reads them", "[config][limits]") {
  CHECK(host::parse_size("0") == 0u);
  CHECK(host::parse_size("100") == 100u);
  CHECK(host::parse_size("100b") == 100u);
  CHECK(host::parse_size("1k") == 1000u);
  CHECK(host::parse_size("1kb") == 1024u);
  CHECK(host::parse_size("64mb") == 64ull << 20);
  CHECK(host::parse_size("64m") == 64'000'000u);
  CHECK(host::parse_size("2gb") == 2ull << 30);
  CHECK(host::parse_size("2G") == 2'000'000'000u);
  CHECK(host::parse_size("1Gb") == 1ull << 30);
  CHECK_FALSE(host::parse_size("").has_value());
  CHECK_FALSE(host::parse_size("mb").has_value());
  CHECK_FALSE(host::parse_size("-1mb").has_value());
  CHECK_FALSE(host::parse_size("1.5gb").has_value());
  CHECK_FALSE(host::parse_size("1 gb").has_value());
  CHECK_FALSE(host::parse_size("1tb").has_value());
  CHECK_FALSE(host::parse_size("20000000000gb").has_value());  // past UINT64_MAX
}

TEST_CASE("bad client limits are refused with one line naming the key", "[config][limits]") {
  const auto [text, expected] = GENERATE(table<std::string, std::string>({
      {"[host]\nmaxclients = 0\n", "host.maxclients: must be an integer from 1 to 1048576"},
      {"[host]\nmaxclients = \"many\"\n", "host.maxclients: must be an integer from 1 to 1048576"},
      {"[host]\ntimeout = -1\n", "host.timeout: must be an integer from 0 to 2147483647"},
      {"[host]\nclient_query_buffer_limit = \"lots\"\n",
       "host.client_query_buffer_limit: must be a size from 4kb to 1tb: bytes, or a string such as \"512kb\", "
       "\"64mb\", \"1gb\""},
      {"[host]\nclient_query_buffer_limit = 100\n", "host.client_query_buffer_limit: must be a size from 4kb to 1tb"},
      {"[host]\nclient_query_buffer_limit = -5\n", "host.client_query_buffer_limit: must be a size from 4kb to 1tb"},
      {"[host]\nclient_output_buffer_soft_limit = 0\n", "host.client_output_buffer_soft_limit: must be a size from 1kb to 1tb"},
      {"[host]\nclient_output_buffer_hard_limit = \"1.5mb\"\n",
       "host.client_output_buffer_hard_limit: must be a size from 1kb to 1tb, or 0 for none"},
      {"[host]\nclient_output_buffer_soft_limit = \"2mb\"\nclient_output_buffer_hard_limit = \"1mb\"\n",
       "host.client_output_buffer_hard_limit: must be 0 (none) or at least client_output_buffer_soft_limit (2mb)"},
      {"[host]\nmax_connection_memory = \"512kb\"\n",
       "host.max_connection_memory: must be a size from 1mb to 1tb, or 0 for no budget"},
      {"[host]\nmax_stream_buffer_bytes = 1024\n", "host.max_stream_buffer_bytes: must be an integer from 4096 to"},
      {"[host]\nmax_stream_buffer_bytes = 8192\nclient_query_buffer_limit = \"1mb\"\n",
       "host.max_stream_buffer_bytes: is the old name of client_query_buffer_limit: give only one"},
      {"[host]\n[modules.kv]\nversion = 1\nmaxclients = 0\n", "modules.kv.maxclients: must be an integer from 1 to 1048576"},
      {"[host]\n[modules.kv]\nversion = 1\ntimeout = \"1s\"\n", "modules.kv.timeout: must be an integer from 0 to 2147483647"},
  }));
  auto config = parse(text + (text.find("[modules") == std::string::npos ? "[modules.kv]\nversion = 1\n" : ""));
  REQUIRE_FALSE(config.ok());
  CHECK(config.error().phase == host::Phase::Config);
  CHECK_THAT(config.error().to_string(), Catch::Contains("moltd.toml: config: " + expected));
}

TEST_CASE("max_stream_buffer_bytes still works, as a deprecated name of client_query_buffer_limit", "[config][limits]") {
  auto config = parse("[host]\nmax_stream_buffer_bytes = 1048576\n[modules.kv]\nversion = 1\n");
  REQUIRE(config.ok());
  CHECK(config->client_query_buffer_limit == 1u << 20);
  REQUIRE(config->warnings.size() == 1);
  CHECK_THAT(config->warnings[0], Catch::Contains("host.max_stream_buffer_bytes is deprecated") &&
                                      Catch::Contains("client_query_buffer_limit"));
}

TEST_CASE("0 turns the output hard limit and the connection memory budget off", "[config][limits]") {
  auto config = parse("[host]\nclient_output_buffer_hard_limit = 0\nmax_connection_memory = \"0\"\n"
                      "[modules.kv]\nversion = 1\n");
  REQUIRE(config.ok());
  CHECK(config->client_output_buffer_hard_limit == 0);
  CHECK(config->max_connection_memory == 0);
}
