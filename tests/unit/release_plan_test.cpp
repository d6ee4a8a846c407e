// Planning a release: a pure function of a script and what runs, tested
// without moltd, sockets or images.
#include <catch2/catch.hpp>

#include "molt/host/release/release_plan.hpp"

namespace molt {
namespace {

using host::release_step::Add;
using host::release_step::Remove;
using host::release_step::Upgrade;

host::UpgradeScript script(const std::string& steps) {
  auto parsed = host::parse_upgrade_script("release = \"r2\"\n" + steps, "r2.toml");
  INFO((parsed ? std::string() : parsed.error().to_string()));
  REQUIRE(parsed);
  return parsed.value();
}

host::ReleaseModule running(std::string name, std::uint32_t version) {
  return host::ReleaseModule{std::move(name), api::ModuleVersion{version}, {}, {}, {}, {}};
}

host::PlanContext runs(std::vector<host::ReleaseModule> modules) {
  return host::PlanContext{std::move(modules), "/plugins", {}};
}

std::vector<std::string> order_of(const host::ReleasePlan& plan) {
  std::vector<std::string> order;
  for (const auto& step : plan.steps) order.push_back(host::module_of(step));
  return order;
}

std::string refusal(const host::UpgradeScript& s, const host::PlanContext& context) {
  auto plan = host::plan_release(s, context);
  REQUIRE_FALSE(plan);
  return plan.error().to_string();
}

}  // namespace

TEST_CASE("a plan pauses a module before the modules it depends on, and otherwise keeps the script's order", "[plan]") {
  const auto s = script(R"(
[[step]]
module = "kv"
from = 1
to = 2
[[step]]
module = "counter"
from = 1
to = 2
depends_on = ["kv"]
[[step]]
module = "batch"
from = 1
to = 2
)");
  auto plan = host::plan_release(s, runs({running("kv", 1), running("counter", 1), running("batch", 1)}));
  REQUIRE(plan);
  CHECK(order_of(plan.value()) == std::vector<std::string>{"counter", "kv", "batch"});
  const auto& kv = std::get<Upgrade>(plan->steps[1]);
  CHECK(kv.file == "/plugins/kv-2.so");  // the default file name, in the plugin directory
  CHECK(kv.from == api::ModuleVersion{1});
  CHECK(kv.to == api::ModuleVersion{2});
  CHECK(host::origin_of(plan->steps[1]).number == 1);
  CHECK(plan->release == "r2");
}

TEST_CASE("a plan refuses a dependency cycle, naming it and the step that closes it", "[plan]") {
  const auto s = script(R"(
[[step]]
module = "kv"
from = 1
to = 2
depends_on = ["counter"]
[[step]]
module = "counter"
from = 1
to = 2
depends_on = ["kv"]
)");
  CHECK(refusal(s, runs({running("kv", 1), running("counter", 1)})) ==
        "r2.toml: script: step 1 (kv): dependency cycle: kv -> counter -> kv");
}

TEST_CASE("a plan refuses a step on a module that does not run, or runs another version than its from", "[plan]") {
  const auto s = script(R"(
[[step]]
module = "kv"
from = 1
to = 2
)");
  CHECK(refusal(s, runs({})) == "r2.toml: script: step 1 (kv): kv is not running");
  CHECK(refusal(s, runs({running("kv", 3)})) == "r2.toml: script: step 1 (kv): from = 1 but kv runs v3");
}

TEST_CASE("a plan refuses adding a module that runs, and a dependency that is neither running nor in the script", "[plan]") {
  const auto add = script(R"(
[[step]]
action = "add"
module = "kv"
to = 1
)");
  CHECK(refusal(add, runs({running("kv", 1)})) == "r2.toml: script: step 1 (kv): kv is already running (v1)");
  const auto depends = script(R"(
[[step]]
module = "counter"
from = 1
to = 2
depends_on = ["auth"]
)");
  CHECK(refusal(depends, runs({running("counter", 1)})) ==
        "r2.toml: script: step 1 (counter): depends on 'auth', which is neither running nor in the script");
}

TEST_CASE("an added module that names no listeners or configuration gets those it had in a recorded release", "[plan]") {
  const auto s = script(R"(
[[step]]
action = "add"
module = "kv"
to = 1
file = "/elsewhere/kv-1.so"
[[step]]
action = "remove"
module = "counter"
from = 2
)");
  host::PlanContext context = runs({running("counter", 2)});
  host::ReleaseModule known = running("kv", 1);
  known.listen = {host::Endpoint{"127.0.0.1", 6390}};
  known.config = {{"max_keys", "10"}};
  context.known.push_back(known);
  auto plan = host::plan_release(s, context);
  REQUIRE(plan);
  const auto& kv = std::get<Add>(plan->steps[0]);
  CHECK(kv.module.file == "/elsewhere/kv-1.so");  // an absolute file stays as it is
  REQUIRE(kv.module.listen.size() == 1);
  CHECK(kv.module.listen[0].port == 6390);
  CHECK(kv.module.values.at("max_keys") == "10");
  CHECK_FALSE(kv.state);  // the release handler gives it its snapshot, not planning
  const auto& counter = std::get<Remove>(plan->steps[1]);
  CHECK(counter.from == api::ModuleVersion{2});
}

TEST_CASE("the script between two releases removes, changes back and adds exactly what differs, each image pinned", "[plan]") {
  host::Release now{"r2", {}, 0, std::nullopt};
  host::Release before{"r1", {}, 0, std::nullopt};
  const auto module = [](std::string name, std::uint32_t version, std::string sha) {
    return host::ReleaseModule{name, api::ModuleVersion{version}, "/p/" + name + "-" + std::to_string(version) + ".so",
                               std::move(sha), {}, {}};
  };
  now.modules = {module("kv", 2, "b"), module("counter", 1, "c"), module("batch", 1, "d")};
  before.modules = {module("kv", 1, "a"), module("counter", 1, "c"), module("hello", 1, "e")};
  const host::UpgradeScript back = host::script_between(now, before);
  CHECK(back.release == "r1");
  CHECK(back.source == "rollback of r2");
  REQUIRE(back.steps.size() == 3);
  CHECK(back.steps[0].module == "kv");  // counter is the same image: no step
  CHECK(back.steps[0].action == host::StepAction::Upgrade);
  CHECK(back.steps[0].to == api::ModuleVersion{1});
  CHECK(back.steps[0].file == "/p/kv-1.so");
  CHECK(back.steps[0].sha256 == "a");
  CHECK(back.steps[1].module == "batch");
  CHECK(back.steps[1].action == host::StepAction::Remove);
  CHECK(back.steps[2].module == "hello");
  CHECK(back.steps[2].action == host::StepAction::Add);
  CHECK(back.steps[2].sha256 == "e");
  for (std::size_t i = 0; i < back.steps.size(); ++i) CHECK(back.steps[i].number == i + 1);
}

}  // namespace molt
