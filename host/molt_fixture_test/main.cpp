// molt-fixture-test: runs one version-pair migration fixture against a
// module's images and prints each check (docs/fixtures.md).
//
//   molt-fixture-test --fixture tests/fixtures/hello/1-2
//                     --image build/plugins/hello-1.so --image build/plugins/hello-2.so
//
// molt_add_fixture_tests() (cmake/MoltFixtureTests.cmake) registers it with
// ctest, once per fixture directory. Exit status: 0 every check held, 1 one
// did not, 2 usage error. The checks are host/fixture/fixture_check.cpp.
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>

#include "molt/host/fixture/fixture_check.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Migrate a fixture's state from <from> to <to> and check the answers (see docs/fixtures.md)"};
  std::filesystem::path fixture;
  molt::host::FixtureOptions options;
  app.add_option("--fixture", fixture, "fixture directory, named <module>/<from>-<to>")
      ->required()
      ->check(CLI::ExistingDirectory);
  app.add_option("--image", options.images,
                 "module image; repeatable: the two the fixture needs are picked by the version each declares")
      ->required()
      ->check(CLI::ExistingFile);
  CLI11_PARSE(app, argc, argv);

  options.log_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  const auto report = molt::host::check_fixture(fixture, options);
  for (const auto& check : report.checks) {
    if (check.failure.empty()) std::cout << "ok    " << check.what << '\n';
    else std::cout << "FAIL  " << check.what << ": " << check.failure << '\n';
  }
  if (report.passed()) {
    std::cout << fixture.string() << ": passed (" << report.checks.size() << " checks)\n";
    return 0;
  }
  std::cout << fixture.string() << ": FAILED (" << report.failures() << " of " << report.checks.size()
            << " checks)\n";
  return 1;
}
