// GET /-/metrics from a real moltd after real traffic (curl, a RESP client)
// and real upgrades: the values, not only the names, and promtool's verdict.
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "resp_client.hpp"

using namespace molt::test;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

/// The samples of a text-format scrape: `name{label="value",...} value` per
/// line, comments skipped. Anything else fails the test.
std::vector<Sample> parse_metrics(const std::string& text) {
  std::vector<Sample> samples;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line.starts_with('#')) continue;
    INFO("line: " << line);
    Sample sample;
    std::size_t i = line.find_first_of("{ ");
    REQUIRE(i != std::string::npos);
    sample.name = line.substr(0, i);
    if (line[i] == '{') {
      ++i;
      while (line.at(i) != '}') {
        const auto eq = line.find("=\"", i);
        REQUIRE(eq != std::string::npos);
        const std::string label = line.substr(i, eq - i);
        std::string value;
        for (i = eq + 2; line.at(i) != '"'; ++i) {
          if (line[i] == '\\') {
            const char escaped = line.at(++i);
            value += escaped == 'n' ? '\n' : escaped;
          } else {
            value += line[i];
          }
        }
        sample.labels[label] = value;
        ++i;  // the closing quote
        if (line.at(i) == ',') ++i;
      }
      ++i;  // '}'
    }
    REQUIRE(line.at(i) == ' ');
    const std::string number = line.substr(i + 1);
    sample.value = number == "+Inf" ? HUGE_VAL : std::stod(number);
    samples.push_back(std::move(sample));
  }
  return samples;
}

/// The value of the one sample with exactly these labels, or nothing.
std::optional<double> find(const std::vector<Sample>& samples, const std::string& name,
                           const std::map<std::string, std::string>& labels = {}) {
  std::optional<double> found;
  for (const auto& sample : samples)
    if (sample.name == name && sample.labels == labels) {
      REQUIRE_FALSE(found);  // one sample per name and labels
      found = sample.value;
    }
  return found;
}

/// find(), failing the test when there is no such sample.
double value(const std::vector<Sample>& samples, const std::string& name,
             const std::map<std::string, std::string>& labels = {}) {
  const auto found = find(samples, name, labels);
  INFO(name << " with " << Json(labels).dump());
  REQUIRE(found);
  return *found;
}

struct Scrape {
  std::string text;
  std::vector<Sample> samples;
};

Scrape scrape(const Daemon& d) {
  const auto result = d.curl({"-w", "\n%{http_code} %{content_type}", "/-/metrics"});
  REQUIRE(result.exit_code == 0);
  const auto last = result.out.rfind('\n');
  REQUIRE(result.out.substr(last + 1) == "200 text/plain; version=0.0.4; charset=utf-8");
  Scrape out{result.out.substr(0, last), {}};
  out.samples = parse_metrics(out.text);
  return out;
}

}  // namespace

TEST_CASE("GET /-/metrics counts real calls, connections and upgrades, and promtool accepts it", "[moltd][metrics]") {
  Daemon d({{"counter", plugin_path("counter", 1), 1},
            {"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\""},
            {"probe", probe_path(1), 1}});
  d.start();
  const auto started = std::chrono::system_clock::now();

  // counter: 7 increments and a 404 it answers itself, on v1.
  for (int i = 0; i < 7; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");
  REQUIRE(d.http_code("GET", "/counter/nowhere") == "404");
  REQUIRE(d.http_code("GET", "/nomodule") == "404");  // no module called: counted nowhere
  // probe: one call that throws, one that takes 30 ms.
  REQUIRE(d.http_code("POST", "/probe/throw") == "500");
  REQUIRE(d.http_code("POST", "/probe/sleep?ms=30") == "200");
  // kv: 5 commands on two connections; one of them stays open.
  const std::uint16_t port = d.stream_port("kv");
  RespClient kept(port);
  {
    RespClient gone(port);
    REQUIRE(kept.call({"SET", "k", "1"}) == "+OK\r\n");
    REQUIRE(gone.call({"INCR", "k"}) == ":2\r\n");
    REQUIRE(gone.call({"GET", "k"}) == "$1\r\n2\r\n");
  }
  REQUIRE(kept.call({"DEL", "k"}) == ":1\r\n");
  REQUIRE(kept.call({"PING"}) == "+PONG\r\n");

  // counter v1 -> v2, then a file that is not a module, refused.
  d.install(plugin_path("counter", 2), "counter-2.so");
  REQUIRE(d.ctl({"reload", "counter"}).exit_code == 0);
  {
    std::ofstream(d.plugin_dir() / "counter-3.so") << "junk\n";
  }
  fs::permissions(d.plugin_dir() / "counter-3.so", fs::perms::owner_read | fs::perms::owner_write |
                                                       fs::perms::group_read | fs::perms::others_read);
  REQUIRE(d.ctl({"reload", "counter"}).exit_code == 1);
  // Two more increments, on v2: 10 counter calls in all.
  for (int i = 0; i < 2; ++i) REQUIRE(d.http_code("POST", "/counter/incr") == "200");

  // The server notices the closed kv connection on its own time, and the new
  // release's snapshot is written on its own time too: the scrape and the
  // status below must not straddle it (state_bytes changes with it).
  Scrape s;
  REQUIRE(wait_until([&] {
    if (!d.snapshots_written()) return false;
    s = scrape(d);
    return find(s.samples, "molt_listener_connections", {{"module", "kv"}, {"listener", "127.0.0.1:" + std::to_string(port)}}) == 1.0;
  }));
  INFO("scrape:\n" << s.text);
  const auto& m = s.samples;
  const Json status = d.status();
  const Json history = Json::parse(d.ctl({"history", "counter", "--json"}).out)["reports"];
  REQUIRE(history.size() == 2);
  REQUIRE(history[0]["outcome"] == "succeeded");
  REQUIRE(history[1]["outcome"] == "refused");

  {  // the host
    CHECK(value(m, "molt_build_info", {{"version", status["host"]["version"].get<std::string>()}}) == 1);
    const double start = value(m, "molt_start_time_seconds");
    CHECK(start <= std::chrono::duration<double>(started.time_since_epoch()).count());
    CHECK(start > std::chrono::duration<double>(started.time_since_epoch()).count() - 60);
    CHECK(value(m, "molt_uptime_seconds") > 0);
    CHECK(value(m, "molt_loaded_images") == 3);  // counter v2, kv v1, probe v1: v1 of counter is gone
    CHECK(value(m, "molt_http_connections", {{"listener", d.http()}}) >= 1);  // this scrape's
    const std::map<std::string, std::string> kv_listener{{"module", "kv"}, {"listener", "127.0.0.1:" + std::to_string(port)}};
    CHECK(value(m, "molt_listener_connections", kv_listener) == 1);
    CHECK(value(m, "molt_listener_accepted_connections_total", kv_listener) == 2);
  }

  {  // calls
    CHECK(value(m, "molt_module_calls_total", {{"module", "counter"}}) == 10);
    CHECK(value(m, "molt_module_call_errors_total", {{"module", "counter"}}) == 0);
    CHECK(value(m, "molt_module_calls_total", {{"module", "probe"}}) == 2);
    CHECK(value(m, "molt_module_call_errors_total", {{"module", "probe"}}) == 1);
    CHECK(value(m, "molt_module_calls_total", {{"module", "kv"}}) == 5);  // one read per command: each waited for its reply
    CHECK(value(m, "molt_module_call_errors_total", {{"module", "kv"}}) == 0);
    for (const std::string module : {"counter", "probe", "kv"}) {
      INFO(module);
      const double calls = value(m, "molt_module_calls_total", {{"module", module}});
      CHECK(value(m, "molt_module_call_duration_seconds_count", {{"module", module}}) == calls);
      CHECK(value(m, "molt_module_call_duration_seconds_bucket", {{"module", module}, {"le", "+Inf"}}) == calls);
      CHECK(value(m, "molt_module_calls_in_flight", {{"module", module}}) == 0);
      CHECK(value(m, "molt_module_calls_waiting", {{"module", module}}) == 0);
      // Cumulative: never fewer at a larger bound.
      double previous = 0;
      for (const auto& sample : m)
        if (sample.name == "molt_module_call_duration_seconds_bucket" && sample.labels.at("module") == module) {
          CHECK(sample.value >= previous);
          previous = sample.value;
        }
    }
    // The 30 ms call is above the 25 ms bound, and in the sum.
    CHECK(value(m, "molt_module_call_duration_seconds_bucket", {{"module", "probe"}, {"le", "0.025"}}) <= 1);
    CHECK(value(m, "molt_module_call_duration_seconds_bucket", {{"module", "probe"}, {"le", "10"}}) == 2);
    CHECK(value(m, "molt_module_call_duration_seconds_sum", {{"module", "probe"}}) >= 0.030);
  }

  {  // modules and upgrades
    const Json& counter = status["modules"][0];
    REQUIRE(counter["name"] == "counter");
    CHECK(value(m, "molt_module_info", {{"module", "counter"}, {"version", "2"}, {"schema", "2"},
                                         {"file_sha256", counter["sha256"].get<std::string>()}}) == 1);
    CHECK_FALSE(find(m, "molt_module_info", {{"module", "counter"}, {"version", "1"}, {"schema", "1"},
                                             {"file_sha256", history[0]["to_sha256"].get<std::string>()}}));
    // The size at its last save: by the upgrade (v1's state), then by the snapshot the new release takes (v2's).
    REQUIRE(counter["state_bytes"].is_number());
    CHECK(value(m, "molt_module_state_bytes", {{"module", "counter"}}) == counter["state_bytes"].get<double>());
    CHECK_FALSE(find(m, "molt_module_state_bytes", {{"module", "kv"}}));  // never saved yet: unknown, not 0

    CHECK(value(m, "molt_upgrades_total", {{"module", "counter"}, {"outcome", "succeeded"}}) == 1);
    CHECK(value(m, "molt_upgrades_total", {{"module", "counter"}, {"outcome", "refused"}}) == 1);
    CHECK(value(m, "molt_upgrades_total", {{"module", "counter"}, {"outcome", "rolled back"}}) == 0);
    CHECK(value(m, "molt_upgrades_total", {{"module", "kv"}, {"outcome", "succeeded"}}) == 0);  // there from the start
    // Only the upgrade that paused counter: the refused one never did.
    CHECK(value(m, "molt_upgrade_pause_seconds_count", {{"module", "counter"}}) == 1);
    CHECK(value(m, "molt_upgrade_pause_seconds_bucket", {{"module", "counter"}, {"le", "+Inf"}}) == 1);
    CHECK(value(m, "molt_upgrade_pause_seconds_sum", {{"module", "counter"}}) ==
          Approx(history[0]["pause_us"].get<double>() / 1e6).margin(1e-9));
    CHECK(value(m, "molt_upgrade_queued_calls_total", {{"module", "counter"}}) ==
          history[0]["queued_calls"].get<double>() + history[1]["queued_calls"].get<double>());
    CHECK(value(m, "molt_upgrade_pause_seconds_count", {{"module", "kv"}}) == 0);
  }

  {  // promtool check metrics accepts it, without a lint warning
    const fs::path file = d.dir() / "metrics.txt";
    {
      std::ofstream(file) << s.text;
    }
    const auto checked = run_process({"sh", "-c", "promtool check metrics < \"$1\"", "sh", file.string()});
    INFO("promtool: " << checked.out << checked.err);
    CHECK(checked.exit_code == 0);
    CHECK(checked.out.empty());
    CHECK(checked.err.empty());
  }
}
