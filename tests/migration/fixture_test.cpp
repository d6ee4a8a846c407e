// Version-pair migration fixtures: one test per directory
// tests/fixtures/<module>/<from>-<to>/, discovered at start-up.
//
// Each holds state.molt, captured once from a real instance of <from> by
// molt-capture, and expect.json, written by the module's author:
//   {
//     "extra":     {"default_key": "default"},   // optional: migration arguments
//     "after":     [ {"method": "GET", "target": "/counter", "status": 200,
//                     "json": {"version": 2, "total": 7}},     // what <to> must answer over HTTP,
//                    {"send": ["GET", "k"], "reply": "$1\r\nv\r\n"} ], // or on a connection (RESP)
//     "roundtrip": "identical"                    // optional: <from> -> <to> -> <from> gives the same bytes
//   }
// "json" matches when every key it lists has that value in the answer
// (recursively); keys it does not list are ignored.
//
// The test restores the state into <from>, upgrades (or downgrades) to <to>
// through the real transaction, and checks the answers. It copies the
// fixture to a temporary directory first and never writes to the original.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <deque>
#include <fstream>
#include <regex>

#include <nlohmann/json.hpp>

#include "molt/host/upgrade/transaction.hpp"
#include "test_support.hpp"

namespace fs = std::filesystem;
using namespace molt;
using Json = nlohmann::json;

namespace {

struct Fixture {
  std::string module;
  unsigned from = 0;
  unsigned to = 0;
  fs::path dir;
};

std::vector<Fixture> discover(const fs::path& root) {
  std::vector<Fixture> found;
  const std::regex pair(R"(([0-9]+)-([0-9]+))");
  for (const auto& module : fs::directory_iterator(root)) {
    if (!module.is_directory()) continue;
    for (const auto& dir : fs::directory_iterator(module.path())) {
      std::smatch m;
      const std::string name = dir.path().filename().string();
      if (dir.is_directory() && std::regex_match(name, m, pair))
        found.push_back({module.path().filename().string(), static_cast<unsigned>(std::stoul(m[1])),
                         static_cast<unsigned>(std::stoul(m[2])), dir.path()});
    }
  }
  std::sort(found.begin(), found.end(), [](const Fixture& a, const Fixture& b) { return a.dir < b.dir; });
  return found;
}

/// Empty when `actual` has every key/value of `expected`; else where it differs.
std::string mismatch(const Json& actual, const Json& expected, const std::string& where = "") {
  if (expected.is_object()) {
    if (!actual.is_object()) return where + ": expected an object, got " + actual.dump();
    for (const auto& [key, value] : expected.items()) {
      if (!actual.contains(key)) return where + "." + key + ": missing";
      if (auto why = mismatch(actual[key], value, where + "." + key); !why.empty()) return why;
    }
    return {};
  }
  return actual == expected ? std::string() : where + ": expected " + expected.dump() + ", got " + actual.dump();
}

constexpr api::ConnectionId kConnection = 1;

/// Sends a command (a RESP array of bulk strings) on the fixture's
/// connection and checks the exact reply.
void check_stream_step(host::ModuleSlot& slot, const Json& step) {
  struct Collector final : api::StreamOutput {
    std::string written;
    void write(std::string_view bytes) override { written.append(bytes); }
    void close_after_write() override {}
    bool has_room() const override { return true; }
  } out;
  std::string frame = "*" + std::to_string(step["send"].size()) + "\r\n";
  for (const auto& arg : step["send"]) {
    const std::string text = arg.get<std::string>();
    frame += "$" + std::to_string(text.size()) + "\r\n" + text + "\r\n";
  }
  INFO(step.dump());
  const auto consumed = slot.stream_data(kConnection, frame, out);
  REQUIRE(consumed.ok());
  CHECK(consumed.value() == frame.size());
  CHECK(out.written == step.at("reply").get<std::string>());
}

api::Values values_of(const Json& object) {
  api::Values values;
  for (const auto& [key, value] : object.items()) values[key] = value.get<std::string>();
  return values;
}

/// A <from> instance holding `blob`, then upgraded (or downgraded) to <to>
/// through the real transaction.
std::unique_ptr<host::ModuleSlot> migrated_instance(test::Harness& h, const Fixture& fixture,
                                                    const host::StateBlob& blob, const api::Values& extra) {
  auto slot = h.start(test::plugin_path(fixture.module, fixture.from), fixture.module);
  const auto restored = host::restore(*slot, h.loader, blob);
  INFO(restored.summary());
  REQUIRE(restored.outcome == host::Outcome::Succeeded);
  const auto migrated = host::upgrade(*slot, h.loader, test::plugin_path(fixture.module, fixture.to), extra);
  INFO(migrated.summary());
  REQUIRE(migrated.outcome == host::Outcome::Succeeded);
  CHECK(migrated.direction == (fixture.to > fixture.from ? api::Direction::Up : api::Direction::Down));
  return slot;
}

void run_fixture(const Fixture& fixture) {
  test::TempDir temp;
  const fs::path copy = temp.path() / "fixture";
  fs::copy(fixture.dir, copy, fs::copy_options::recursive);
  const Json expect = Json::parse(std::ifstream(copy / "expect.json"));
  auto blob = host::read_state_file(copy / "state.molt", 256ull << 20);
  if (!blob) FAIL(blob.error().to_string());
  REQUIRE(blob->module == fixture.module);
  REQUIRE(blob->version.value == fixture.from);

  test::Harness h;
  const api::Values extra = values_of(expect.value("extra", Json::object()));
  auto slot = migrated_instance(h, fixture, blob.value(), extra);
  REQUIRE(slot->stream_connect(kConnection).ok());
  for (const auto& step : expect.at("after")) {
    if (step.contains("send")) {
      check_stream_step(*slot, step);
      continue;
    }
    const auto response = slot->call(test::request(step.at("method").get<std::string>(), step.at("target").get<std::string>()));
    INFO(step.dump());
    REQUIRE(response.ok());
    INFO("answer: " << response->status << ' ' << response->body);
    CHECK(response->status == step.value("status", 200));
    if (step.contains("json")) CHECK(mismatch(Json::parse(response->body), step["json"]) == "");
  }

  if (expect.value("roundtrip", "") == "identical") {
    auto round = migrated_instance(h, fixture, blob.value(), extra);
    const auto back = host::upgrade(*round, h.loader, test::plugin_path(fixture.module, fixture.from));
    INFO(back.summary());
    REQUIRE(back.outcome == host::Outcome::Succeeded);
    auto again = round->save_state(std::chrono::seconds(10));
    REQUIRE(again.ok());
    CHECK(again->bytes == blob->bytes);
  }
}

class FixtureInvoker final : public Catch::ITestInvoker {
 public:
  explicit FixtureInvoker(Fixture fixture) : fixture_(std::move(fixture)) {}
  void invoke() const override { run_fixture(fixture_); }

 private:
  Fixture fixture_;
};

}  // namespace

int main(int argc, char** argv) {
  static std::deque<std::string> names;  // Catch keeps references to test names
  static std::deque<Catch::AutoReg> registrations;
  for (const Fixture& fixture : discover(test::fixture_root())) {
    names.push_back("fixture: " + fixture.module + ' ' + std::to_string(fixture.from) + '-' + std::to_string(fixture.to));
    registrations.emplace_back(new FixtureInvoker(fixture), Catch::SourceLineInfo(__FILE__, __LINE__), Catch::StringRef(),
                               Catch::NameAndTags(Catch::StringRef(names.back()), "[fixture]"));
  }
  return Catch::Session().run(argc, argv);
}
