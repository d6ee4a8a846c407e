// The rehearsal (host/upgrade/rehearsal.hpp): the built molt-rehearse runs
// the faulty corpus (tests/plugins/faulty.cpp), and each fault it can reach
// refuses the image with one exact line, within its deadline plus a second.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <future>
#include <thread>

#include <catch2/catch.hpp>

#include "molt/host/state/state_blob.hpp"
#include "molt/host/upgrade/rehearsal.hpp"
#include "skip.hpp"
#include "test_support.hpp"

using namespace molt;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using host::RehearsalOutcome;
using host::RehearsalResult;
using test::call_ok;

namespace {

#ifdef MOLT_SANITIZED
/// How long a hang may last before the rehearsal gives up on it: long
/// enough for a sanitized Debug child to reach the step that hangs.
constexpr std::chrono::milliseconds kHangDeadline{5000};

/// The child, sanitized like this process, would turn a SIGSEGV into
/// AddressSanitizer's report and exit(1), and check for leaks at exit():
/// its signals and exits are the module's, as in a normal build.
[[maybe_unused]] const bool sanitizers_let_signals_through = [] {
  const char* given = std::getenv("ASAN_OPTIONS");
  std::string options = given != nullptr ? given : "";
  options += ":handle_segv=0:handle_sigbus=0:handle_sigill=0:handle_sigfpe=0:handle_abort=0:detect_leaks=0";
  ::setenv("ASAN_OPTIONS", options.c_str(), 1);
  return true;
}();
#else
/// How long a hang may last before the rehearsal gives up on it.
constexpr std::chrono::milliseconds kHangDeadline{2000};
#endif
/// Every other rehearsal ends on its own well before this.
constexpr std::chrono::milliseconds kDeadline{20000};

/// "did not finish <step> within <kHangDeadline> ms"
std::string hang_in(std::string_view step) {
  return "rehearsal of faulty v2: did not finish " + std::string(step) + " within " +
         std::to_string(kHangDeadline.count()) + " ms";
}

fs::path faulty(std::string_view variant) {
  return test::test_image_path(variant.empty() ? "faulty-2.so" : "faulty-2-" + std::string(variant) + ".so");
}

/// v1's state, from a real v1 instance holding "alpha" and "beta", written
/// as a state archive into `dir`; its blob in `blob` if asked.
fs::path v1_state(test::Harness& h, host::StateBlob* blob = nullptr) {
  auto slot = h.start(test::test_image_path("faulty-1.so"), "faulty");
  call_ok(*slot, "POST", "/faulty/add?item=alpha");
  call_ok(*slot, "POST", "/faulty/add?item=beta");
  auto saved = slot->save_state(5s);
  if (!saved) FAIL(saved.error().to_string());
  const fs::path file = h.dir.path() / "faulty-1.molt";
  if (auto written = host::write_state_file(file, saved.value()); !written) FAIL(written.error().to_string());
  if (blob != nullptr) *blob = saved.value();
  return file;
}

/// An upgrade from v1 to `image`, rehearsed: v1's state in, saved back
/// into v1's schema.
host::RehearsalRequest upgrade_from_v1(const fs::path& image, const fs::path& state,
                                       std::chrono::milliseconds deadline = kDeadline) {
  host::RehearsalRequest request;
  request.helper = MOLT_REHEARSE;
  request.image = image;
  request.module = "faulty";
  request.state = state;
  request.save_schema = api::SchemaVersion{1};
  request.deadline = deadline;
  return request;
}

/// Runs `request`, checking that it returned within its deadline plus a second.
RehearsalResult rehearse_timed(const host::RehearsalRequest& request) {
  const auto started = std::chrono::steady_clock::now();
  RehearsalResult result = host::rehearse(request);
  const auto took = std::chrono::steady_clock::now() - started;
  INFO("log: " << result.log);
  CHECK(took < request.deadline + 1s);
  CHECK(result.took <= std::chrono::duration_cast<std::chrono::milliseconds>(took));
  return result;
}

/// Rehearses fault variant `variant` as an upgrade from v1 and expects it
/// refused with exactly `reason`, in `step`.
void expect_refused(std::string_view variant, std::string_view step, std::string_view reason,
                    std::chrono::milliseconds deadline = kDeadline) {
  test::Harness h;
  const RehearsalResult result = rehearse_timed(upgrade_from_v1(faulty(variant), v1_state(h), deadline));
  INFO("log: " << result.log);
  CHECK(result.outcome == RehearsalOutcome::Failed);
  CHECK_FALSE(result.passed());
  CHECK(result.step == step);
  CHECK(result.reason == reason);
}

}  // namespace

TEST_CASE("rehearsal: a healthy v2 migrates v1's state and saves it back into schema 1", "[rehearsal]") {
  test::Harness h;
  host::StateBlob v1;
  const auto state = v1_state(h, &v1);
  const RehearsalResult result = rehearse_timed(upgrade_from_v1(faulty(""), state));
  INFO(result.reason);
  REQUIRE(result.passed());
  CHECK(result.reason.empty());
  CHECK(result.step.empty());
  REQUIRE(result.version.has_value());
  CHECK(result.version->value == 2);
  // Back in schema 1 the items are v1's own: the same bytes v1 wrote.
  CHECK(result.saved_bytes > 0);
  CHECK(result.saved_bytes == v1.bytes.size());
}

TEST_CASE("rehearsal: without a state file the image starts from its initial state", "[rehearsal]") {
  host::RehearsalRequest request;
  request.helper = MOLT_REHEARSE;
  request.image = faulty("");
  request.module = "faulty";
  request.config = {{"greeting", "hello"}};
  const RehearsalResult result = rehearse_timed(request);
  INFO(result.reason);
  CHECK(result.passed());
  CHECK(result.saved_bytes > 0);  // an empty vector in schema 2 is still an archive
}

TEST_CASE("rehearsal: the image is checked as the loader checks it: pin and module name", "[rehearsal]") {
  test::Harness h;
  auto request = upgrade_from_v1(faulty(""), v1_state(h));
  SECTION("a pin it does not match") {
    request.sha256 = std::string(64, '0');
    const RehearsalResult result = rehearse_timed(request);
    CHECK(result.outcome == RehearsalOutcome::Failed);
    CHECK(result.step == "check");
    CHECK_THAT(result.reason, Catch::StartsWith("rehearsal of faulty: differs from the pinned sha256 (expected "));
  }
  SECTION("another module's image") {
    request.image = test::probe_path(1);
    const RehearsalResult result = rehearse_timed(request);
    CHECK(result.outcome == RehearsalOutcome::Failed);
    CHECK(result.step == "check");
    CHECK(result.reason == "rehearsal of faulty: module is 'probe', expected 'faulty'");
  }
}

// --- faults the rehearsal reaches, hook by hook ------------------------------

TEST_CASE("rehearsal: a SIGSEGV in a static constructor is named", "[rehearsal][fault]") {
  expect_refused("segv-static_init", "static initialisation",
                 "rehearsal of faulty v2: SIGSEGV in static initialisation");
}

TEST_CASE("rehearsal: exit(1) in a static constructor is named", "[rehearsal][fault]") {
  expect_refused("exit-static_init", "static initialisation",
                 "rehearsal of faulty v2: exit(1) in static initialisation");
}

TEST_CASE("rehearsal: a throw from a static constructor terminates in static initialisation", "[rehearsal][fault]") {
  // The C++ rule for a namespace-scope object whose constructor throws:
  // std::terminate, which the live process would not have survived either.
  expect_refused("throw-static_init", "static initialisation",
                 "rehearsal of faulty v2: SIGABRT in static initialisation");
}

TEST_CASE("rehearsal: a constructor that throws is refused with what it threw", "[rehearsal][fault]") {
  expect_refused("throw-construct", "construct",
                 "rehearsal of faulty v2: constructor threw: faulty: throw in construct, on purpose");
}

TEST_CASE("rehearsal: start that throws is refused with what it threw", "[rehearsal][fault]") {
  expect_refused("throw-start", "start", "rehearsal of faulty v2: start threw: faulty: throw in start, on purpose");
}

TEST_CASE("rehearsal: a SIGSEGV in start is named", "[rehearsal][fault]") {
  expect_refused("segv-start", "start", "rehearsal of faulty v2: SIGSEGV in start");
}

TEST_CASE("rehearsal: a SIGSEGV in load_state is named", "[rehearsal][fault]") {
  expect_refused("segv-load_state", "load_state", "rehearsal of faulty v2: SIGSEGV in load_state");
}

TEST_CASE("rehearsal: load_state that throws is refused with what it threw", "[rehearsal][fault]") {
  expect_refused("throw-load_state", "load_state",
                 "rehearsal of faulty v2: load_state threw: faulty: throw in load_state, on purpose");
}

TEST_CASE("rehearsal: std::bad_alloc from load_state is refused with what it threw", "[rehearsal][fault]") {
  expect_refused("bad_alloc-load_state", "load_state", "rehearsal of faulty v2: load_state threw: std::bad_alloc");
}

TEST_CASE("rehearsal: exit(1) in load_state is named", "[rehearsal][fault]") {
  expect_refused("exit-load_state", "load_state", "rehearsal of faulty v2: exit(1) in load_state");
}

TEST_CASE("rehearsal: a load_state that hangs is killed at the deadline", "[rehearsal][fault][hang]") {
  expect_refused("hang-load_state", "load_state", hang_in("load_state"), kHangDeadline);
}

TEST_CASE("rehearsal: health that throws is refused with what it threw", "[rehearsal][fault]") {
  expect_refused("throw-health", "health", "rehearsal of faulty v2: health threw: faulty: throw in health, on purpose");
}

TEST_CASE("rehearsal: a health check that hangs is killed at the deadline", "[rehearsal][fault][hang]") {
  expect_refused("hang-health", "health", hang_in("health"), kHangDeadline);
}

TEST_CASE("rehearsal: a SIGSEGV in save_state is named", "[rehearsal][fault]") {
  expect_refused("segv-save_state", "save_state", "rehearsal of faulty v2: SIGSEGV in save_state");
}

TEST_CASE("rehearsal: save_state that throws is refused with what it threw", "[rehearsal][fault]") {
  expect_refused("throw-save_state", "save_state",
                 "rehearsal of faulty v2: save_state threw: faulty: throw in save_state, on purpose");
}

TEST_CASE("rehearsal: a save_state that hangs is killed at the deadline", "[rehearsal][fault][hang]") {
  expect_refused("hang-save_state", "save_state", hang_in("save_state"), kHangDeadline);
}

TEST_CASE("rehearsal: a SIGSEGV in stop is named", "[rehearsal][fault]") {
  expect_refused("segv-stop", "stop", "rehearsal of faulty v2: SIGSEGV in stop");
}

TEST_CASE("rehearsal: a stop that hangs is killed at the deadline", "[rehearsal][fault][hang]") {
  expect_refused("hang-stop", "stop", hang_in("stop"), kHangDeadline);
}

TEST_CASE("rehearsal: abort in the destructor is named", "[rehearsal][fault]") {
  expect_refused("abort-destroy", "destroy", "rehearsal of faulty v2: SIGABRT in destroy");
}

TEST_CASE("rehearsal: a thread started in start and never joined aborts in destroy", "[rehearsal][fault][thread]") {
  expect_refused("thread_joinable-start", "destroy", "rehearsal of faulty v2: SIGABRT in destroy");
}

TEST_CASE("rehearsal: a detached thread still running after stop is refused", "[rehearsal][fault][thread]") {
  expect_refused("thread_detached-start", "threads", "rehearsal of faulty v2: left 1 thread(s) running after stop");
}

// --- what the rehearsal does not reach ---------------------------------------

TEST_CASE("rehearsal: faults in calls it does not make (requests, streams, jobs, timers) pass it", "[rehearsal]") {
  // The rehearsal runs the hooks of an upgrade, not the module's traffic:
  // these faults are for the live process's own defences.
  const std::string variant = GENERATE("hang-handle", "abort-handle", "segv-on_data", "segv-job_step", "segv-timer");
  INFO(variant);
  test::Harness h;
  const RehearsalResult result = rehearse_timed(upgrade_from_v1(faulty(variant), v1_state(h)));
  INFO(result.reason);
  CHECK(result.passed());
}

// --- the child and its process -------------------------------------------------

TEST_CASE("rehearsal: a crashed rehearsal leaves no image copy behind", "[rehearsal]") {
  test::Harness h;
  const auto state = v1_state(h);
  const test::TempDir temp;  // the child's temporary directory, through TMPDIR
  const char* saved = std::getenv("TMPDIR");
  const std::string saved_value = saved != nullptr ? saved : "";
  ::setenv("TMPDIR", temp.path().c_str(), 1);
  const RehearsalResult result = host::rehearse(upgrade_from_v1(faulty("segv-load_state"), state));
  saved != nullptr ? ::setenv("TMPDIR", saved_value.c_str(), 1) : ::unsetenv("TMPDIR");
  CHECK(result.reason == "rehearsal of faulty v2: SIGSEGV in load_state");
  CHECK(fs::is_empty(temp.path()));
}

TEST_CASE("rehearsal: the child's signals are its own, whatever the calling thread blocks or ignores", "[rehearsal]") {
  // moltd blocks SIGHUP, SIGTERM and SIGINT in every thread and ignores
  // SIGPIPE; a rehearsal run from such a thread still passes, and a hang in
  // it is still killed at the deadline.
  test::Harness h;
  const auto state = v1_state(h);
  auto run = [&](std::string_view variant, std::chrono::milliseconds deadline) {
    return std::async(std::launch::async, [&, variant, deadline] {
             sigset_t handled;
             sigemptyset(&handled);
             sigaddset(&handled, SIGHUP);
             sigaddset(&handled, SIGTERM);
             sigaddset(&handled, SIGINT);
             pthread_sigmask(SIG_BLOCK, &handled, nullptr);
             return host::rehearse(upgrade_from_v1(faulty(variant), state, deadline));
           }).get();
  };
  struct sigaction ignore {}, previous{};
  ignore.sa_handler = SIG_IGN;
  ::sigaction(SIGPIPE, &ignore, &previous);
  const RehearsalResult healthy = run("", kDeadline);
  const RehearsalResult hang = run("hang-health", kHangDeadline);
  ::sigaction(SIGPIPE, &previous, nullptr);
  INFO(healthy.reason);
  CHECK(healthy.passed());
  CHECK(hang.reason == hang_in("health"));
}

TEST_CASE("rehearsal: several run at once from different threads, each with its own result", "[rehearsal]") {
  test::Harness h;
  const auto state = v1_state(h);
  auto healthy = std::async(std::launch::async, [&] { return host::rehearse(upgrade_from_v1(faulty(""), state)); });
  auto crash = std::async(std::launch::async,
                          [&] { return host::rehearse(upgrade_from_v1(faulty("segv-load_state"), state)); });
  auto hang = std::async(std::launch::async, [&] {
    return host::rehearse(upgrade_from_v1(faulty("hang-save_state"), state, kHangDeadline));
  });
  const RehearsalResult healthy_result = healthy.get();
  INFO(healthy_result.reason);
  CHECK(healthy_result.passed());
  CHECK(crash.get().reason == "rehearsal of faulty v2: SIGSEGV in load_state");
  CHECK(hang.get().reason == hang_in("save_state"));
}

TEST_CASE("rehearsal: an address-space limit the module fits in changes nothing", "[rehearsal]") {
#ifdef MOLT_SANITIZED
  MOLT_SKIP("the sanitizers reserve more address space than any limit", test::SkipInCi::Allowed);
#else
  test::Harness h;
  auto request = upgrade_from_v1(faulty(""), v1_state(h));
  request.max_address_space = 4ull << 30;
  const RehearsalResult result = rehearse_timed(request);
  INFO(result.reason);
  CHECK(result.passed());
#endif
}

TEST_CASE("rehearsal: the helper is looked for beside the running program", "[rehearsal]") {
  // moltd and molt-rehearse share a directory, built (bin/) and installed.
  const fs::path helper = host::rehearsal_helper_beside_this_program();
  CHECK(helper.filename() == "molt-rehearse");
  CHECK(fs::equivalent(helper.parent_path(), fs::read_symlink("/proc/self/exe").parent_path()));
  CHECK(fs::path(MOLT_REHEARSE).parent_path().filename() == "bin");
}

TEST_CASE("rehearsal: a helper that cannot run says nothing of the module", "[rehearsal]") {
  test::Harness h;
  auto request = upgrade_from_v1(faulty(""), v1_state(h));
  SECTION("missing") {
    request.helper = h.dir.path() / "no-such-helper";
    const RehearsalResult result = host::rehearse(request);
    CHECK(result.outcome == RehearsalOutcome::NotRun);
    CHECK_THAT(result.reason, Catch::StartsWith("rehearsal of faulty: cannot run " + request.helper.string() + ": "));
  }
  SECTION("ends before its first step") {
    request.helper = "/bin/false";
    const RehearsalResult result = host::rehearse(request);
    CHECK(result.outcome == RehearsalOutcome::NotRun);
    CHECK(result.step.empty());
    CHECK(result.reason == "rehearsal of faulty: molt-rehearse exited with 1");
  }
}
