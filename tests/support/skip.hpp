// Tests that cannot run here say so: MOLT_SKIP ends the test case as skipped,
// and ctest shows it as "Skipped", not as passed.
//
// How: ctest runs one test case per process (catch_discover_tests). When every
// test case a process ran was skipped and none failed, its main
// (catch_main.cpp) exits with MOLT_TEST_SKIP_CODE, which tests/CMakeLists.txt
// gives ctest as SKIP_RETURN_CODE. A run of many test cases (the program run by
// hand) exits as Catch2 does, and lists the ones it skipped.
//
// CI runs scripts/test, which sets MOLT_CI=1: as root, with chromium and
// everything else the tests need, so a skip there means the machine lost
// something, and fails the test (SkipInCi::Fails). Only a skip that the build
// itself calls for, such as the sanitizers' need for file descriptors, is
// SkipInCi::Allowed.
#pragma once

#include <string>

namespace molt::test {

/// Whether a skip is acceptable when MOLT_CI is set (to anything but "" or "0").
enum class SkipInCi {
  Fails,    ///< CI has what the test needs: a skip there is a failure
  Allowed,  ///< the build rules the test out, in CI too (e.g. under the sanitizers)
};

/// Whether MOLT_CI is set to anything but "" or "0".
[[nodiscard]] bool running_in_ci();

/// Marks the running test case skipped and prints "SKIPPED: <reason>"; with
/// SkipInCi::Fails under MOLT_CI, fails it instead (and throws, as FAIL does).
/// Use MOLT_SKIP, which also returns from the test case.
void skip_test(const std::string& reason, SkipInCi in_ci);

/// Whether the test case that just ended called skip_test (catch_main.cpp);
/// clears the mark for the next one.
[[nodiscard]] bool take_skip_mark();

}  // namespace molt::test

/// Ends the running test case as skipped (see above). Only in the test case's
/// own body: it returns from the enclosing function.
#define MOLT_SKIP(reason, in_ci)                     \
  do {                                               \
    ::molt::test::skip_test((reason), (in_ci));      \
    return;                                          \
  } while (false)
