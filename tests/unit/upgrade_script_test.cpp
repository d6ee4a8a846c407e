#include <catch2/catch.hpp>

#include "molt/host/release/upgrade_script.hpp"

using namespace molt;
using host::StepAction;

TEST_CASE("an upgrade script reads upgrades, adds and removes, with defaults for file names", "[script]") {
  auto script = host::parse_upgrade_script(R"(
release = "2026.11.1"
[[step]]
module = "counter"
from = 1
to = 2
file = "counter-2.so"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
extra = { default_key = "main" }
depends_on = ["kv"]
[[step]]
action = "add"
module = "hello"
to = 1
listen = "127.0.0.1:7000"
config = { greeting = "hi" }
[[step]]
action = "remove"
module = "old"
from = 3
)", "test.toml");
  REQUIRE(script.ok());
  CHECK(script->release == "2026.11.1");
  REQUIRE(script->steps.size() == 3);
  const auto& up = script->steps[0];
  CHECK(up.action == StepAction::Upgrade);
  CHECK(up.from->value == 1);
  CHECK(up.to->value == 2);
  CHECK(up.from_file == "counter-1.so");
  CHECK(up.extra == api::Values{{"default_key", "main"}});
  CHECK(up.depends_on == std::vector<std::string>{"kv"});
  CHECK(script->steps[1].file == "hello-1.so");
  CHECK(script->steps[1].listen.at(0).port == 7000);
  CHECK(script->steps[2].from_file == "old-3.so");
}

TEST_CASE("a script's mistakes are one line naming the script and the step", "[script]") {
  const auto [text, expected] = GENERATE(table<std::string, std::string>({
      {"[[step]]\nmodule = \"a\"\nfrom = 1\nto = 2\n", "test.toml: script: release: needs a name"},
      {"release = \"r\"\n", "test.toml: script: no [[step]]: nothing to do"},
      {"release = \"r\"\n[[step]]\nmodule = \"a\"\nfrom = 1\n", "step 1 (a): an upgrade needs from and to"},
      {"release = \"r\"\n[[step]]\nmodule = \"a\"\nfrom = 1\nto = 2\n[[step]]\nmodule = \"b\"\nfrom = 0\nto = 1\n",
       "step 2 (b): from: must be a positive integer"},
      {"release = \"r\"\n[[step]]\nmodule = \"a\"\nfrom = 1\nto = 2\nsha256 = \"abc\"\n", "step 1 (a): sha256: must be 64 lowercase hex digits"},
      {"release = \"r\"\n[[step]]\nmodule = \"a\"\nfrom = 1\nto = 2\nfrum = 3\n", "step 1 (a): frum: unknown key"},
      {"release = \"r\"\nsteps = []\n[[step]]\nmodule = \"a\"\nfrom = 1\nto = 2\n", "test.toml: script: steps: unknown key"},
      {"release = \"r\"\n[[step]]\naction = \"add\"\nmodule = \"a\"\nto = 1\nlisten = [\"127.0.0.1:1\", 7000]\n",
       "step 1 (a): listen: must be \"HOST:PORT\" or a list of them"},
      {"release = \"r\"\n[[step]]\naction = \"upgrade-ish\"\nmodule = \"a\"\n", "step 1 (a): action: must be"},
      {"release = \"r\"\n[[step]]\nmodule = \"a\"\nfrom = 1\nto = 2\n[[step]]\nmodule = \"a\"\nfrom = 2\nto = 3\n",
       "step 2 (a): the module already has step 1"},
      {"release = \"r\"\n[[step]\n", "test.toml: script: line 2"},
  }));
  auto script = host::parse_upgrade_script(text, "test.toml");
  REQUIRE_FALSE(script.ok());
  CHECK_THAT(script.error().to_string(), Catch::Contains(expected));
  CHECK(script.error().to_string().find('\n') == std::string::npos);
}

TEST_CASE("a script run down undoes it, last step first", "[script]") {
  auto script = host::parse_upgrade_script(R"(
release = "r"
[[step]]
module = "counter"
from = 1
to = 2
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
[[step]]
action = "add"
module = "hello"
to = 1
)", "r.toml");
  REQUIRE(script.ok());
  const auto down = host::reversed(script.value());
  REQUIRE(down.steps.size() == 2);
  CHECK(down.steps[0].module == "hello");
  CHECK(down.steps[0].action == StepAction::Remove);
  CHECK(down.steps[0].from->value == 1);
  CHECK(down.steps[1].from->value == 2);
  CHECK(down.steps[1].to->value == 1);
  CHECK(down.steps[1].file == "counter-1.so");
  CHECK(down.steps[1].from_sha256 == script->steps[0].sha256);
  CHECK_FALSE(down.steps[1].sha256.has_value());
}
