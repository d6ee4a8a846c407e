#include "skip.hpp"

#include <cstdlib>
#include <string_view>
#include <utility>

#include <catch2/catch.hpp>

namespace molt::test {
namespace {

bool skip_mark = false;  // test cases run one at a time, on Catch2's thread

}  // namespace

bool running_in_ci() {
  const char* value = std::getenv("MOLT_CI");
  return value != nullptr && std::string_view(value) != "" && std::string_view(value) != "0";
}

void skip_test(const std::string& reason, SkipInCi in_ci) {
  if (in_ci == SkipInCi::Fails && running_in_ci())
    FAIL("MOLT_CI is set, and CI has what this test needs, yet it would be skipped: " << reason);
  skip_mark = true;
  WARN("SKIPPED: " << reason);
}

bool take_skip_mark() { return std::exchange(skip_mark, false); }

}  // namespace molt::test
