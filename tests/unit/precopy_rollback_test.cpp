// Pre-copy that fails (slot/precopy.hpp, upgrade/transaction.cpp), with the
// faulty corpus (tests/plugins/faulty.cpp): the new version's receive_part
// made to throw at each part of a transfer in turn, every round and the
// final part, and the old version's transfer_chunk, transfer_delta and
// transfer_final. Whatever fails, the old version keeps serving the state
// it had, byte for byte, with every item it acknowledged meanwhile, no
// transfer is left running, and the next upgrade moves everything.
//
// The parts are the same in every run: the budget is counted in bytes only
// (its time bound is never reached), no round is short enough to end the
// rounds (pause_target 0), and items are added from the upgrade's own
// progress reports, which come between parts on the upgrade's thread.
// A run with the healthy faulty-2 says how many parts there are and in
// which round each falls.
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "molt/host/upgrade/progress.hpp"
#include "molt/host/upgrade/transaction.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;
using host::Outcome;
using test::call_ok;
using test::test_image_path;
using Json = nlohmann::json;

namespace {

constexpr int kItems = 400;

struct Capture final : api::StreamOutput {
  std::string bytes;
  void write(std::string_view data) override { bytes.append(data); }
  void close_after_write() override {}
  bool has_room() const override { return true; }
};

std::filesystem::path faulty(std::string_view variant) {
  return test_image_path(variant.empty() ? "faulty-2.so" : "faulty-2-" + std::string(variant) + ".so");
}

/// item-0000 ... item-0399: about 16 of them per part with small_parts().
std::vector<std::string> initial_items() {
  std::vector<std::string> items;
  for (int i = 0; i < kItems; ++i) {
    std::string n = std::to_string(i);
    items.push_back("item-" + std::string(4 - n.size(), '0') + n);
  }
  return items;
}

/// Appends `items` through faulty's stream interface, one line each.
void add(host::ModuleSlot& slot, const std::vector<std::string>& items) {
  std::string lines;
  for (const auto& item : items) lines += item + "\n";
  Capture out;
  const auto consumed = slot.stream_data(1, lines, out);
  REQUIRE(consumed);
  REQUIRE(consumed.value() == lines.size());
  REQUIRE(test::occurrences(out.bytes, "+OK\r\n") == items.size());
}

std::vector<std::string> items_of(host::ModuleSlot& slot) {
  return Json::parse(call_ok(slot, "GET", "/faulty"))["items"].get<std::vector<std::string>>();
}

bool transfer_running(host::ModuleSlot& slot) {
  return Json::parse(call_ok(slot, "GET", "/faulty/transfer"))["running"].get<bool>();
}

/// The state as a snapshot saves it (by pre-copy into a second instance
/// when the slot's options allow it).
std::string state_of(host::ModuleSlot& slot) {
  auto blob = slot.save_state(5s);
  if (!blob) FAIL(blob.error().to_string());
  return blob->bytes;
}

/// A slot whose snapshots pause the module and call save_state: its state
/// read without the transfer hooks (those of faulty's variants throw).
std::shared_ptr<host::ModuleSlot> start_saving_paused(test::Harness& h, const std::filesystem::path& image) {
  auto loaded = h.loader.load(image, "faulty");
  if (!loaded) FAIL(loaded.error().to_string());
  host::SlotOptions options{test::test_logger("faulty"), {}, nullptr, nullptr};
  options.precopy.enabled = false;
  auto slot = host::ModuleSlot::start(std::move(loaded.value()), std::move(options));
  if (!slot) FAIL(slot.error().to_string());
  return std::move(slot.value());
}

/// Small parts, the same ones every run (see the top of this file).
host::UpgradeOptions small_parts() {
  host::UpgradeOptions options;
  options.precopy.budget = api::TransferBudget{256, 60'000'000'000};
  options.precopy.pause_target = 0ms;
  return options;
}

/// Adds items while an upgrade runs, from its progress reports: one after
/// each part of rounds 0 and 1 (so rounds 1 and 2 have changes, and round 3
/// none, which ends the rounds), and two just before the pause (the final
/// part's). Remembers the items faulty acknowledged, in order.
class Writes {
 public:
  explicit Writes(host::ModuleSlot& slot)
      : slot_(slot), scope_([this](const host::UpgradeProgress& progress) { on(progress); }) {}
  [[nodiscard]] const std::vector<std::string>& acknowledged() const { return acknowledged_; }

 private:
  void on(const host::UpgradeProgress& progress) {
    if (progress.phase == "precopy" && progress.saved > 0 && progress.round <= 1) add_one();  // after a part
    if (progress.phase == "quiesce") {
      add_one();
      add_one();
    }
  }
  void add_one() {
    const std::string item = "w-" + std::to_string(written_++);
    const auto response = slot_.call(test::request("POST", "/faulty/add?item=" + item));
    if (response && response->status == 200) acknowledged_.push_back(item);
  }

  host::ModuleSlot& slot_;
  int written_ = 0;
  std::vector<std::string> acknowledged_;
  host::ProgressScope scope_;
};

/// One part of a transfer, as receive_part counts them (from 1).
struct Part {
  std::uint64_t number;
  std::string where;  ///< "round R, part P of N" or "the final part"
  bool final;
};

/// Every part of the transfer `report` describes, in order.
std::vector<Part> parts_of(const host::UpgradeReport& report) {
  std::vector<Part> parts;
  std::uint64_t number = 0;
  for (std::size_t r = 0; r < report.precopy->rounds.size(); ++r) {
    const auto count = report.precopy->rounds[r].parts;
    for (std::uint64_t p = 1; p <= count; ++p)
      parts.push_back(Part{++number,
                           "round " + std::to_string(r) + ", part " + std::to_string(p) + " of " + std::to_string(count),
                           false});
  }
  parts.push_back(Part{++number, "the final part", true});
  return parts;
}

/// The one line a receive_part that throws at a part gives.
std::string receive_part_error() {
  return "faulty v2 (" + faulty("throw-receive_part").string() +
         "): migrate: receive_part threw: faulty: throw in receive_part, on purpose";
}

/// Checks what a failed upgrade whose receive_part threw at `part` reports:
/// before the pause it is refused, nothing having paused; at the final
/// part, in the pause, it is rolled back.
void check_failed_at(const host::UpgradeReport& report, const Part& part) {
  INFO(report.summary());
  CHECK(report.outcome == (part.final ? Outcome::RolledBack : Outcome::Refused));
  REQUIRE(report.error.has_value());
  CHECK(report.error->phase == host::Phase::Migrate);
  CHECK(report.error->to_string() == receive_part_error());
}

}  // namespace

TEST_CASE("a receive_part that throws at any part of a pre-copy, in any round or the final one, leaves v1 serving "
          "byte-identical state with no transfer running, and the next upgrade succeeds",
          "[precopy][rollback]") {
  test::Harness h;
  const auto options = small_parts();
  // Without writes: round 0 in parts, round 1 with nothing changed, the final part.
  auto reference = h.start(test_image_path("faulty-1.so"), "faulty");
  add(*reference, initial_items());
  const auto healthy = host::upgrade(*reference, h.loader, faulty(""), {}, options);
  INFO(healthy.summary());
  REQUIRE(healthy.outcome == Outcome::Succeeded);
  REQUIRE(healthy.precopy);
  REQUIRE(healthy.precopy->rounds.size() == 2);
  CHECK(healthy.precopy->ended == "nothing changed");
  CHECK(healthy.precopy->rounds[0].parts > 20);
  CHECK(healthy.precopy->rounds[0].entries == kItems);
  CHECK(items_of(*reference) == initial_items());
  const auto parts = parts_of(healthy);

  auto slot = h.start(test_image_path("faulty-1.so"), "faulty");
  add(*slot, initial_items());
  const std::string before = state_of(*slot);
  const std::string image = slot->running().image;
  for (const Part& part : parts) {
    INFO("receive_part throws at part " << part.number << ": " << part.where);
    const auto report = host::upgrade(*slot, h.loader, faulty("throw-receive_part"),
                                      {{"fail_part", std::to_string(part.number)}}, options);
    check_failed_at(report, part);
    CHECK(slot->running().info.version.value == 1);
    CHECK(slot->running().image == image);
    CHECK_FALSE(transfer_running(*slot));
    CHECK(state_of(*slot) == before);
  }
  // A rollback left nothing behind: the same upgrade to the healthy v2, at once.
  const auto upgraded = host::upgrade(*slot, h.loader, faulty(""), {}, options);
  INFO(upgraded.summary());
  REQUIRE(upgraded.outcome == Outcome::Succeeded);
  CHECK(upgraded.precopy->rounds.size() == 2);
  CHECK(slot->running().info.version.value == 2);
  CHECK(items_of(*slot) == initial_items());
}

TEST_CASE("a receive_part that throws at any part of a pre-copy while items are added keeps every acknowledged item "
          "in v1, in order, and the next upgrade moves them all",
          "[precopy][rollback]") {
  test::Harness h;
  const auto options = small_parts();
  // The healthy run, under the same writes: rounds 0 to 3 (3: nothing
  // changed), then the final part with the two items added before the pause.
  auto reference = h.start(test_image_path("faulty-1.so"), "faulty");
  add(*reference, initial_items());
  host::UpgradeReport healthy;
  std::vector<std::string> expected = initial_items();
  {
    const Writes writes(*reference);
    healthy = host::upgrade(*reference, h.loader, faulty(""), {}, options);
    expected.insert(expected.end(), writes.acknowledged().begin(), writes.acknowledged().end());
  }
  INFO(healthy.summary());
  REQUIRE(healthy.outcome == Outcome::Succeeded);
  REQUIRE(healthy.precopy);
  const auto& rounds = healthy.precopy->rounds;
  REQUIRE(rounds.size() == 4);
  CHECK(rounds[0].parts > 20);
  CHECK(rounds[1].entries == rounds[0].parts);  // one item after each part of round 0
  CHECK(rounds[2].entries == rounds[1].parts);
  CHECK(rounds[3].entries == 0);
  CHECK(healthy.precopy->ended == "nothing changed");
  CHECK(healthy.precopy->final.entries == 2);
  CHECK(items_of(*reference) == expected);  // faulty's own pre-copy moved every item, in order
  const auto parts = parts_of(healthy);

  for (const Part& part : parts) {
    INFO("receive_part throws at part " << part.number << ": " << part.where);
    auto slot = h.start(test_image_path("faulty-1.so"), "faulty");
    add(*slot, initial_items());
    const std::string image = slot->running().image;
    host::UpgradeReport report;
    std::vector<std::string> kept = initial_items();
    {
      const Writes writes(*slot);
      report = host::upgrade(*slot, h.loader, faulty("throw-receive_part"),
                             {{"fail_part", std::to_string(part.number)}}, options);
      CHECK_FALSE(writes.acknowledged().empty());
      kept.insert(kept.end(), writes.acknowledged().begin(), writes.acknowledged().end());
    }
    check_failed_at(report, part);
    CHECK(slot->running().info.version.value == 1);
    CHECK(slot->running().image == image);
    CHECK_FALSE(transfer_running(*slot));
    CHECK(items_of(*slot) == kept);
    // Byte for byte the state of a v1 that was given the same items, and nothing else.
    auto twin = h.start(test_image_path("faulty-1.so"), "faulty");
    add(*twin, kept);
    CHECK(state_of(*slot) == state_of(*twin));

    const auto upgraded = host::upgrade(*slot, h.loader, faulty(""), {}, options);
    INFO(upgraded.summary());
    CHECK(upgraded.outcome == Outcome::Succeeded);
    CHECK(slot->running().info.version.value == 2);
    CHECK(items_of(*slot) == kept);
  }
}

TEST_CASE("a pre-copy whose old version throws in transfer_chunk, transfer_delta or transfer_final fails with one "
          "line naming it, and the old version keeps byte-identical state with no transfer running",
          "[precopy][rollback]") {
  struct Case {
    const char* hook;
    Outcome outcome;  ///< refused: before the pause; rolled back: in it
  };
  const Case cases[] = {
      {"transfer_chunk", Outcome::Refused},
      {"transfer_delta", Outcome::Refused},
      {"transfer_final", Outcome::RolledBack},
  };
  for (const Case& c : cases) {
    INFO(c.hook);
    test::Harness h;
    // The old version runs the faulty code: v2's variant, downgraded to v1.
    const auto variant = faulty(std::string("throw-") + c.hook);
    auto slot = start_saving_paused(h, variant);
    add(*slot, initial_items());
    const std::string before = state_of(*slot);
    const auto report = host::upgrade(*slot, h.loader, test_image_path("faulty-1.so"), {}, small_parts());
    INFO(report.summary());
    CHECK(report.direction == api::Direction::Down);
    CHECK(report.outcome == c.outcome);
    REQUIRE(report.error.has_value());
    CHECK(report.error->phase == host::Phase::Save);
    CHECK(report.error->to_string() == "faulty v2 (" + variant.string() + "): save: " + c.hook +
                                           " threw: faulty: throw in " + c.hook + ", on purpose");
    CHECK(slot->running().info.version.value == 2);
    CHECK_FALSE(transfer_running(*slot));
    CHECK(state_of(*slot) == before);
    CHECK(items_of(*slot) == initial_items());
    // Without pre-copy the same downgrade goes through.
    auto stop_and_copy = small_parts();
    stop_and_copy.precopy.enabled = false;
    const auto down = host::upgrade(*slot, h.loader, test_image_path("faulty-1.so"), {}, stop_and_copy);
    INFO(down.summary());
    CHECK(down.outcome == Outcome::Succeeded);
    CHECK(items_of(*slot) == initial_items());
  }
}
