// The plugin ABI's compatibility promise (docs/plugin-api.md, "ABI versions
// and the compatibility promise"): images built for any ABI from kAbiOldest
// to kAbiVersion load, serve and upgrade into each other; others are refused
// with what to do; and the host never calls a hook an image does not have.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "molt/host/loader/abi.hpp"
#include "molt/host/slot/hooks.hpp"
#include "molt/host/upgrade/transaction.hpp"
#include "test_support.hpp"

using namespace molt;
using host::Hook;
using host::Outcome;
using test::call_ok;
using test::test_image_path;
using test::wait_until;
using Json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

/// oldabi-1.so is built against tests/plugins/abi5 (ABI 5), oldabi-2.so against today's headers.
fs::path oldabi_path(unsigned version) { return test_image_path("oldabi-" + std::to_string(version) + ".so"); }

Json show(host::ModuleSlot& slot) { return Json::parse(call_ok(slot, "GET", "/oldabi")); }

struct Collector final : api::StreamOutput {
  std::string written;
  bool close = false;
  void write(std::string_view bytes) override { written.append(bytes); }
  void close_after_write() override { close = true; }
  bool has_room() const override { return true; }
};

/// A module that counts every hook the host enters, for images of made-up ABIs.
struct Recorder final : api::Module {
  mutable int entered = 0;
  void start(api::Context&) override { ++entered; }
  api::Response handle(const api::Request&) override {
    ++entered;
    return api::Response::text("entered");
  }
  void save_state(api::StateWriter&, const api::SaveTarget&) const override { ++entered; }
  void load_state(api::StateReader&, const api::Migration&) override { ++entered; }
  void on_connect(api::ConnectionId) override { ++entered; }
  std::size_t on_data(api::ConnectionId, std::string_view, api::StreamOutput&) override {
    ++entered;
    return 0;
  }
  void on_disconnect(api::ConnectionId) override { ++entered; }
  std::string refusal_reply(api::Refusal) const override {
    ++entered;
    return "entered";
  }
  void on_timer(std::string_view) override { ++entered; }
  void run_job_step(std::string_view, api::JobStep& step) override {
    ++entered;
    step.finished = true;
  }
  std::optional<std::string> health() const override {
    ++entered;
    return "entered";
  }
};

// Module classes for features_of: what MOLT_MODULE writes into MoltModuleInfo::features.
struct Plain : api::Module {
  void start(api::Context&) override {}
  api::Response handle(const api::Request&) override { return {}; }
  void save_state(api::StateWriter&, const api::SaveTarget&) const override {}
  void load_state(api::StateReader&, const api::Migration&) override {}
};
struct Streaming final : Plain {
  void on_disconnect(api::ConnectionId) override {}
  std::optional<std::string> health() const override { return std::nullopt; }
};
struct Hidden final : Plain {
 private:
  void on_timer(std::string_view) override {}  // not visible from outside: must count as an override
};
struct Kept {
  int n = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & n;
  }
};
struct Handing final : api::StatefulModule<Kept> {
  void start(api::Context&) override {}
  api::Response handle(const api::Request&) override { return {}; }
  void save_state(api::StateWriter&, const api::SaveTarget&) const override {}
  void load_state(api::StateReader&, const api::Migration&) override {}
};

constexpr api::Features features(std::initializer_list<api::Feature> list) {
  api::Features set;
  for (auto feature : list) set.add(feature);
  return set;
}

/// The one line the loader refuses `file` with.
std::string refusal(const fs::path& file) {
  test::TempDir images;
  host::Loader loader(host::LoaderOptions{images.path()});
  auto image = loader.load(file, "probe");
  REQUIRE_FALSE(image.ok());
  return image.error().to_string();
}

}  // namespace

TEST_CASE("the loader accepts images of every plugin ABI from kAbiOldest to kAbiVersion", "[abi][loader]") {
  STATIC_REQUIRE(api::kAbiOldest == 5);  // oldabi-1 is built for it; a major bump replaces that test module
  test::Harness h;
  auto old = h.loader.load(oldabi_path(1), "oldabi");
  INFO((old.ok() ? std::string() : old.error().to_string()));
  REQUIRE(old.ok());
  CHECK(old.value()->info().abi == 5);
  // An ABI-5 image cannot say what it implements: everything ABI 5 had.
  CHECK(old.value()->info().features == host::features_implied_by(5));
  CHECK(old.value()->info().features.has(api::Feature::Health));

  auto current = h.loader.load(oldabi_path(2), "oldabi");
  INFO((current.ok() ? std::string() : current.error().to_string()));
  REQUIRE(current.ok());
  CHECK(current.value()->info().abi == api::kAbiVersion);
  // It overrides on_data and on_timer, nothing else optional.
  CHECK(current.value()->info().features == features({api::Feature::Streams, api::Feature::Timers}));
  CHECK(old.value()->info().version.value == 1);
  CHECK(current.value()->info().version.value == 2);
}

TEST_CASE("the loader refuses an older or newer plugin ABI with one line that says what to rebuild or upgrade",
          "[abi][loader]") {
  const std::string oldest = std::to_string(api::kAbiOldest), newest = std::to_string(api::kAbiVersion);
  SECTION("older than kAbiOldest: rebuild the module") {
    // Today: "built for plugin ABI 4, this host loads ABI 5 to 6 (rebuild it against molt ABI 6)"
    const fs::path file = test_image_path("bad-abi-older.so");
    CHECK(refusal(file) == "probe (" + file.string() + "): load: built for plugin ABI " +
                               std::to_string(api::kAbiOldest - 1) + ", this host loads ABI " + oldest + " to " +
                               newest + " (rebuild it against molt ABI " + newest + ")");
  }
  SECTION("newer than kAbiVersion: upgrade the host") {
    // Today: "built for plugin ABI 7, newer than this host's ABI 6 (upgrade moltd)"
    const fs::path file = test_image_path("bad-abi-newer.so");
    CHECK(refusal(file) == "probe (" + file.string() + "): load: built for plugin ABI " +
                               std::to_string(api::kAbiVersion + 1) + ", newer than this host's ABI " + newest +
                               " (upgrade moltd)");
  }
  SECTION("metadata smaller than its ABI's MoltModuleInfo") {
    const fs::path file = test_image_path("bad-abi-short.so");
    CHECK(refusal(file) == "probe (" + file.string() + "): load: malformed molt_module_info: it declares " +
                               std::to_string(sizeof(MoltModuleInfo) - 8) + " bytes, ABI " + newest + "'s is " +
                               std::to_string(sizeof(MoltModuleInfo)));
  }
}

TEST_CASE("the hook table: every hook is in every loadable image's vtable, from the ABI that added it",
          "[abi][hooks]") {
  for (const host::HookSpec& spec : host::kHooks) {
    INFO(spec.name);
    CHECK(spec.first_abi >= 1);
    CHECK(spec.first_abi <= api::kAbiVersion);
    CHECK(host::has_hook(spec.first_abi, host::kKnownFeatures, spec.hook));
    CHECK_FALSE(host::has_hook(spec.first_abi - 1, host::kKnownFeatures, spec.hook));
  }
  CHECK(host::spec_of(Hook::Health).first_abi == 3);
  CHECK(host::spec_of(Hook::RunJobStep).first_abi == 4);
  CHECK(host::spec_of(Hook::RefusalReply).first_abi == 5);
  // Required hooks do not depend on what an image declares.
  CHECK(host::has_hook(api::kAbiVersion, api::Features{}, Hook::Handle));
  CHECK_FALSE(host::has_hook(api::kAbiVersion, api::Features{}, Hook::OnData));
}

TEST_CASE("a hook newer than the image's ABI is not entered: the host gives Module's default", "[abi][hooks]") {
  Recorder module;
  // A made-up ABI-2 image: it had streams and timers, not health (3), jobs (4) or refusal_reply (5).
  const host::Hooks abi2(module, 2, host::features_implied_by(2));
  CHECK(abi2.health() == std::nullopt);
  CHECK(abi2.refusal_reply(api::Refusal::TooManyClients).empty());
  api::JobStep step;
  CHECK_THROWS_WITH(abi2.run_job_step("nightly", step), "module has no job 'nightly'");
  CHECK(module.entered == 0);
  Collector out;
  CHECK(abi2.on_data(1, "abc", out) == 0);  // streams are ABI 2's: entered
  CHECK(module.entered == 1);

  const host::Hooks abi5(module, 5, host::features_implied_by(5));
  CHECK(abi5.health() == "entered");
  CHECK(abi5.refusal_reply(api::Refusal::TooManyClients) == "entered");
  abi5.run_job_step("nightly", step);
  CHECK(step.finished);
  CHECK(module.entered == 4);
}

TEST_CASE("an optional hook the image does not implement is not entered: the host gives Module's default",
          "[abi][hooks]") {
  Recorder module;
  const host::Hooks none(module, api::kAbiVersion, api::Features{});
  Collector out;
  CHECK(none.on_data(1, "abc", out) == 3);  // the default consumes everything
  none.on_connect(1);
  none.on_disconnect(1);
  none.on_timer("tick");
  CHECK(none.health() == std::nullopt);
  CHECK(none.refusal_reply(api::Refusal::TooManyClients).empty());
  CHECK(none.detach_state() == nullptr);
  CHECK(module.entered == 0);
  CHECK(none.handle(test::request("GET", "/x")).body == "entered");  // required: always entered
  CHECK(module.entered == 1);

  const host::Hooks some(module, api::kAbiVersion, features({api::Feature::Timers}));
  some.on_timer("tick");
  CHECK(some.health() == std::nullopt);
  CHECK(module.entered == 2);
}

TEST_CASE("MOLT_MODULE declares the features a module class implements", "[abi][hooks]") {
  STATIC_REQUIRE(api::detail::features_of<Plain>() == api::Features{});
  STATIC_REQUIRE(api::detail::features_of<Streaming>() == features({api::Feature::Streams, api::Feature::Health}));
  STATIC_REQUIRE(api::detail::features_of<Hidden>() == features({api::Feature::Timers}));
  STATIC_REQUIRE(api::detail::features_of<Handing>() == features({api::Feature::StateInMemory}));
}

TEST_CASE("a module built for ABI 5 serves, upgrades to its ABI-6 build and back, keeping its state",
          "[abi][upgrade]") {
  test::Harness h;
  auto slot = h.start(oldabi_path(1), "oldabi", {{"tick_ms", "2"}});
  CHECK(slot->running().info.abi == 5);
  call_ok(*slot, "POST", "/oldabi/add?item=alpha");
  REQUIRE(slot->stream_connect(9).ok());
  Collector out;
  auto consumed = slot->stream_data(9, "ADD beta\nLIST\nADD gam", out);
  REQUIRE(consumed.ok());
  CHECK(out.written == "OK 2\nv1 abi5 alpha,beta\n");
  CHECK(consumed.value() == std::string_view("ADD beta\nLIST\n").size());  // "ADD gam" waits for its line
  REQUIRE(wait_until([&] { return show(*slot)["ticks"] >= 3; }));
  CHECK(slot->health() == std::nullopt);  // asked: an ABI-5 image cannot say it has no health()

  const auto up = host::upgrade(*slot, h.loader, oldabi_path(2));
  INFO(up.summary());
  REQUIRE(up.outcome == Outcome::Succeeded);
  CHECK(up.state_bytes > 0);
  CHECK(slot->running().info.abi == api::kAbiVersion);
  Json shown = show(*slot);
  CHECK(shown["version"] == 2);
  CHECK(shown["abi"] == api::kAbiVersion);
  CHECK(shown["items"] == Json{"alpha", "beta"});
  const auto ticks = shown["ticks"].get<int>();
  CHECK(ticks >= 3);
  REQUIRE(wait_until([&] { return show(*slot)["ticks"] >= ticks + 3; }));  // the timer fires into v2 now
  out.written.clear();
  consumed = slot->stream_data(9, "ADD gamma\nLIST\n", out);  // the rest of the line, after the upgrade
  REQUIRE(consumed.ok());
  CHECK(out.written == "OK 3\nv2 abi" + std::to_string(api::kAbiVersion) + " alpha,beta,gamma\n");
  CHECK(slot->health() == std::nullopt);  // answered by the host: v2 declares no health()

  const auto down = host::upgrade(*slot, h.loader, oldabi_path(1));
  INFO(down.summary());
  REQUIRE(down.outcome == Outcome::Succeeded);
  CHECK(down.direction == api::Direction::Down);
  CHECK(slot->running().info.abi == 5);
  shown = show(*slot);
  CHECK(shown["version"] == 1);
  CHECK(shown["abi"] == 5);
  CHECK(shown["items"] == Json{"alpha", "beta", "gamma"});
  CHECK(shown["ticks"] >= ticks + 3);
  out.written.clear();
  REQUIRE(slot->stream_data(9, "QUIT\n", out).ok());
  CHECK(out.written == "BYE\n");
  CHECK(out.close);
  slot->stream_disconnect(9);
}
