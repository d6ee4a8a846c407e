// The main of the Catch2 test programs: Catch2's own, except that a run whose
// every test case was skipped (MOLT_SKIP, skip.hpp) and none failed exits with
// MOLT_TEST_SKIP_CODE, which ctest shows as "Skipped" (tests/CMakeLists.txt).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <iostream>
#include <string>
#include <vector>

#include "skip.hpp"

namespace {

/// The test cases this run went through, and those of them that were skipped.
struct Ran {
  std::size_t test_cases = 0;
  std::vector<std::string> skipped;
};
Ran ran;

class SkipListener final : public Catch::TestEventListenerBase {
 public:
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    ++ran.test_cases;
    // A skipped test case that also failed counts as failed.
    if (molt::test::take_skip_mark() && stats.totals.assertions.failed == 0) ran.skipped.push_back(stats.testInfo.name);
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(SkipListener)

int main(int argc, char* argv[]) {
  const int result = Catch::Session().run(argc, argv);
  if (ran.test_cases == 0) return result;  // a listing, or nothing matched: as Catch2 says
  for (const auto& name : ran.skipped) std::cout << "skipped: " << name << '\n';
  if (result == MOLT_TEST_SKIP_CODE) return 1;  // that many failures must not read as a skip
  if (result == 0 && ran.test_cases > 0 && ran.skipped.size() == ran.test_cases) return MOLT_TEST_SKIP_CODE;
  return result;
}
