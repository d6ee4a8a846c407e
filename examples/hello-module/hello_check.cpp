// Loads hello-1.so through the installed host library, greets twice, then
// restores the saved state into a fresh instance and checks it remembers;
// given hello-2.so too, upgrades to it and checks that v2 counts on.
#include <cstdlib>
#include <iostream>

#include <spdlog/sinks/stdout_color_sinks.h>

#include <molt/host/loader/loader.hpp>
#include <molt/host/slot/module_slot.hpp>
#include <molt/host/upgrade/transaction.hpp>

namespace {
int fail(const std::string& why) {
  std::cerr << "hello_check: " << why << '\n';
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) return fail("usage: hello_check path/to/hello-1.so [path/to/hello-2.so]");
  char dir[] = "/tmp/hello-check-XXXXXX";
  if (::mkdtemp(dir) == nullptr) return fail("mkdtemp failed");
  molt::host::Loader loader(molt::host::LoaderOptions{std::string(dir) + "/images"});
  auto logger = std::make_shared<spdlog::logger>("hello", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());

  auto start = [&]() -> std::shared_ptr<molt::host::ModuleSlot> {
    auto image = loader.load(argv[1], "hello");
    if (!image) return fail(image.error().to_string()), nullptr;
    auto slot = molt::host::ModuleSlot::start(std::move(image.value()), {logger, {}});
    if (!slot) return fail(slot.error().to_string()), nullptr;
    return std::move(slot.value());
  };
  molt::api::Request greet{"GET", "/hello", "name=Ada", {}, {}};

  auto first = start();
  if (!first) return 1;
  auto answer = first->call(greet);
  if (!answer || answer->body != "Hello, Ada! (1)\n") return fail("unexpected first answer");
  answer = first->call(greet);
  if (!answer || answer->body != "Hello, Ada! (2)\n") return fail("unexpected answer");
  auto state = first->save_state(std::chrono::seconds(5));
  if (!state) return fail(state.error().to_string());

  auto second = start();
  if (!second) return 1;
  const auto report = molt::host::restore(*second, loader, std::move(state.value()));
  if (report.outcome != molt::host::Outcome::Succeeded) return fail(report.summary());
  answer = second->call(greet);
  if (!answer || answer->body != "Hello, Ada! (3)\n") return fail("state did not survive the restore");
  if (argc == 3) {
    const auto upgraded = molt::host::upgrade(*second, loader, argv[2]);
    if (upgraded.outcome != molt::host::Outcome::Succeeded) return fail(upgraded.summary());
    std::cout << "hello_check: " << upgraded.summary() << '\n';
    answer = second->call(greet);
    if (!answer || answer->body != "Hello, Ada! (4)\n") return fail("state did not survive the upgrade to v2");
  }
  std::cout << "hello_check: ok: " << answer->body;
  std::filesystem::remove_all(dir);
  return 0;
}
