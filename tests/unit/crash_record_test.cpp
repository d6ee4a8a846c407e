// A crash is named and recorded: ModuleCodeScope marks module code on a
// thread, the crash handler writes what it marks into the run directory, and
// the next boot reads it back as one line.
//
// The handler ends the process, so each crash runs in a forked child that
// installs it; the parent reads the record the child left.
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <functional>
#include <thread>

#include <catch2/catch.hpp>

#include "molt/host/common/crash_record.hpp"
#include "molt/host/common/module_site.hpp"
#include "molt/host/daemon/crash_handler.hpp"
#include "test_support.hpp"

using namespace molt;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
namespace hook = host::module_hook;

namespace {

constexpr std::string_view kSha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
constexpr std::string_view kFile = "/srv/molt/plugins/notes-4.so";
constexpr std::string_view kNotesLine = "the previous run crashed in notes v4 (notes-4.so, sha256 0123456789ab…) in ";

std::int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

/// A store through a null pointer the compiler cannot see: a real SIGSEGV at
/// address 0, also under the sanitizers (their null check would end the
/// process its own way first).
__attribute__((noinline, no_sanitize("address", "undefined"))) void write_through_null() {
  // From an integer the compiler cannot know, and a volatile store: a null
  // pointer it could see would let it drop the store (points-to analysis).
  volatile std::uintptr_t null = 0;
  *reinterpret_cast<volatile int*>(null) = 1;
}

/// Recurses until the stack runs out (the volatile frame keeps it a real
/// recursion; `depth` keeps the compiler from proving it endless).
__attribute__((noinline, no_sanitize("address"))) int overflow_stack(int depth) {
  volatile char frame[1024];
  frame[0] = static_cast<char>(depth);
  if (depth == -1) return frame[0];
  return overflow_stack(depth + 1) + frame[0];
}

/// What a child ended as, and its pid.
struct Ended {
  pid_t pid = 0;
  int status = 0;
};

/// Forks a child that installs the crash handler for `run_dir` and runs
/// `body`, which is to end it. The child dumps no core (the crashes are on
/// purpose) and exits 100 if the handler could not be installed, 101 if
/// `body` returned.
pid_t start_child(const fs::path& run_dir, const std::function<void()>& body) {
  // A child that exit()s flushes its copy of unwritten output: none, then.
  std::cout.flush();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::prctl(PR_SET_DUMPABLE, 0);
    if (!host::install_crash_handler(run_dir).ok()) ::_exit(100);
    body();
    ::_exit(101);
  }
  return pid;
}

/// How the child `pid` ended.
Ended wait_for_child(pid_t pid) {
  int status = 0;
  const bool ended = test::wait_until([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 60s);
  if (!ended) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL("the child did not end within 60 s");
  }
  return {pid, status};
}

Ended run_in_child(const fs::path& run_dir, const std::function<void()>& body) {
  return wait_for_child(start_child(run_dir, body));
}

host::CrashRecord read_record(const fs::path& run_dir) {
  auto record = host::read_crash_record(host::crash_record_path(run_dir));
  if (!record) FAIL(record.error().to_string());
  REQUIRE(record.value().has_value());
  return *record.value();
}

void check_notes_site(const host::CrashRecord& record, std::string_view hook_name) {
  REQUIRE(record.module);
  CHECK(record.module->module == "notes");
  CHECK(record.module->version.value == 4);
  CHECK(record.module->file == kFile);
  CHECK(record.module->sha256 == kSha);
  CHECK(record.module->hook == hook_name);
}

std::string describe(int status) {
  if (WIFEXITED(status)) return "exited " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("died of SIG") + ::sigabbrev_np(WTERMSIG(status));
  return "status " + std::to_string(status);
}

}  // namespace

TEST_CASE("a ModuleCodeScope nests, restores the outer one on exit, and is per thread", "[crash]") {
  const host::ModuleSite notes("notes", {4}, kFile, kSha);
  const host::ModuleSite kv("kv", {2}, "/srv/molt/plugins/kv-2.so", kSha);
  CHECK(host::module_code_on_this_thread().site == nullptr);
  {
    const host::ModuleCodeScope outer(notes, hook::kStart);
    CHECK(host::module_code_on_this_thread().site == &notes);
    CHECK(host::module_code_on_this_thread().hook == hook::kStart);
    {
      const host::ModuleCodeScope inner(kv, hook::kRunJobStep);
      CHECK(host::module_code_on_this_thread().site == &kv);
      CHECK(host::module_code_on_this_thread().hook == hook::kRunJobStep);
      std::thread([] { CHECK(host::module_code_on_this_thread().site == nullptr); }).join();
    }
    CHECK(host::module_code_on_this_thread().site == &notes);
    try {
      const host::ModuleCodeScope throwing(kv, hook::kHandle);
      throw std::runtime_error("module failed");
    } catch (const std::runtime_error&) {
    }
    CHECK(host::module_code_on_this_thread().site == &notes);
    CHECK(host::module_code_on_this_thread().hook == hook::kStart);
  }
  CHECK(host::module_code_on_this_thread().site == nullptr);
  CHECK(host::module_code_on_this_thread().hook == nullptr);
}

TEST_CASE("a ModuleSite formats the record's lines at construction, escaped", "[crash]") {
  const host::ModuleSite site("notes", {4}, kFile, kSha);
  CHECK(site.record_lines() == "module notes\nversion 4\nfile /srv/molt/plugins/notes-4.so\nsha256 " + std::string(kSha) + "\n");
  CHECK(site.label() == "notes v4 (notes-4.so)");

  // A newline in a name cannot make a line of its own in the record.
  const host::ModuleSite evil("evil\nin host", {1}, "/tmp/a\\b\n\x01.so", "ab\rcd");
  CHECK(evil.record_lines() == "module evil\\nin host\nversion 1\nfile /tmp/a\\\\b\\n\\x01.so\nsha256 ab\\rcd\n");
}

TEST_CASE("a ModuleSite cuts long fields, keeping a file's base name", "[crash]") {
  const std::string long_dir = "/" + std::string(2000, 'd');
  const std::string long_name(1000, 'n');
  const host::ModuleSite site(long_name, {7}, long_dir + "/notes-7.so", std::string(500, 'f'));
  const std::string lines(site.record_lines());
  CHECK(lines.size() < 1000);
  CHECK(lines.starts_with("module " + std::string(host::ModuleSite::kMaxModule, 'n') + "…\n"));
  CHECK(lines.find("\nfile …" + std::string(host::ModuleSite::kMaxFile - 11, 'd') + "/notes-7.so\n") != std::string::npos);
  CHECK(lines.ends_with("\nsha256 " + std::string(host::ModuleSite::kMaxSha256, 'f') + "…\n"));
  CHECK(std::string(site.label()).ends_with(" v7 (notes-7.so)"));

  // A cut never splits a UTF-8 character: "é" is two bytes.
  std::string accented;
  for (int i = 0; i < 100; ++i) accented += "é";
  const host::ModuleSite utf8(accented, {1}, "/x.so", kSha);
  CHECK(std::string(utf8.record_lines()).starts_with("module " + accented.substr(0, 128) + "…\n"));
}

TEST_CASE("a SIGSEGV in module code is recorded with the site, hook, signal and address, and the process dies of it",
          "[crash]") {
  test::TempDir dir;
  const auto before = wall_ms();
  const Ended ended = run_in_child(dir.path(), [] {
    const host::ModuleSite site("notes", {4}, kFile, kSha);
    const host::ModuleCodeScope scope(site, hook::kLoadState);
    write_through_null();
  });
  const auto after = wall_ms();
  INFO("the child " << describe(ended.status));
  REQUIRE(WIFSIGNALED(ended.status));
  CHECK(WTERMSIG(ended.status) == SIGSEGV);

  const host::CrashRecord record = read_record(dir.path());
  CHECK(record.time_ms >= before);
  CHECK(record.time_ms <= after);
  CHECK(record.pid == ended.pid);
  CHECK(record.tid == ended.pid);  // the main thread
  CHECK(record.cause == host::CrashCause::Signal);
  CHECK(record.signal == SIGSEGV);
  CHECK(record.signal_name == "SIGSEGV");
  CHECK(record.code == SEGV_MAPERR);
  CHECK(record.address == std::optional<std::uint64_t>(0));
  CHECK_FALSE(record.sender);
  check_notes_site(record, "load_state");
  CHECK_FALSE(record.backtrace.empty());
  CHECK(host::crash_line(record) == std::string(kNotesLine) + "load_state: SIGSEGV");

  struct stat st {};
  REQUIRE(::stat(host::crash_record_path(dir.path()).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
}

TEST_CASE("abort() in module code is recorded as SIGABRT, and the process dies of it", "[crash]") {
  test::TempDir dir;
  const Ended ended = run_in_child(dir.path(), [] {
    const host::ModuleSite site("notes", {4}, kFile, kSha);
    const host::ModuleCodeScope scope(site, hook::kHandle);
    std::abort();
  });
  INFO("the child " << describe(ended.status));
  REQUIRE(WIFSIGNALED(ended.status));
  CHECK(WTERMSIG(ended.status) == SIGABRT);

  const host::CrashRecord record = read_record(dir.path());
  CHECK(record.pid == ended.pid);
  CHECK(record.cause == host::CrashCause::Signal);
  CHECK(record.signal == SIGABRT);
  CHECK(record.signal_name == "SIGABRT");
  CHECK(record.code == SI_TKILL);
  CHECK_FALSE(record.address);
  CHECK(record.sender == std::optional<std::int64_t>(ended.pid));  // raised by itself: its own fault
  CHECK_FALSE(record.sent_by_another_process());
  check_notes_site(record, "handle");
  CHECK_FALSE(record.backtrace.empty());
  CHECK(host::crash_line(record) == std::string(kNotesLine) + "handle: SIGABRT");
}

TEST_CASE("exit() from module code is recorded with its status, and the process exits with it", "[crash]") {
  test::TempDir dir;
  const Ended ended = run_in_child(dir.path(), [] {
    const host::ModuleSite site("notes", {4}, kFile, kSha);
    const host::ModuleCodeScope scope(site, hook::kStaticInit);
    std::exit(3);
  });
  INFO("the child " << describe(ended.status));
  REQUIRE(WIFEXITED(ended.status));
  CHECK(WEXITSTATUS(ended.status) == 3);

  const host::CrashRecord record = read_record(dir.path());
  CHECK(record.pid == ended.pid);
  CHECK(record.tid == ended.pid);
  CHECK(record.cause == host::CrashCause::Exit);
  CHECK(record.exit_status == 3);
  CHECK(record.signal == 0);
  check_notes_site(record, "static initialisation");
  CHECK_FALSE(record.backtrace.empty());
  CHECK(host::crash_line(record) == std::string(kNotesLine) + "static initialisation: exit(3)");
}

TEST_CASE("exit() from host code leaves no crash record, and the handler installs once", "[crash]") {
  test::TempDir dir;
  const Ended ended = run_in_child(dir.path(), [&] {
    if (host::install_crash_handler(dir.path()).ok()) ::_exit(104);  // a second time: refused
    {
      const host::ModuleSite site("notes", {4}, kFile, kSha);
      const host::ModuleCodeScope scope(site, hook::kHandle);
    }
    std::exit(0);
  });
  INFO("the child " << describe(ended.status));
  REQUIRE(WIFEXITED(ended.status));
  CHECK(WEXITSTATUS(ended.status) == 0);
  CHECK_FALSE(fs::exists(host::crash_record_path(dir.path())));
}

TEST_CASE("a SIGSEGV in host code is recorded as the host's, with its address", "[crash]") {
  test::TempDir dir;
  const Ended ended = run_in_child(dir.path(), [] { write_through_null(); });
  INFO("the child " << describe(ended.status));
  REQUIRE(WIFSIGNALED(ended.status));
  CHECK(WTERMSIG(ended.status) == SIGSEGV);

  const host::CrashRecord record = read_record(dir.path());
  CHECK(record.pid == ended.pid);
  CHECK(record.signal == SIGSEGV);
  CHECK(record.address == std::optional<std::uint64_t>(0));
  CHECK_FALSE(record.module);
  CHECK_FALSE(record.backtrace.empty());
  CHECK(host::crash_line(record) ==
        "the previous run crashed in the host (no module code on the crashing thread): SIGSEGV at 0x0");
}

TEST_CASE("a crash names the crashing thread's module code, not another thread's", "[crash]") {
  test::TempDir dir;
  const Ended ended = run_in_child(dir.path(), [] {
    const host::ModuleSite kv("kv", {2}, "/srv/molt/plugins/kv-2.so", std::string(64, 'e'));
    const host::ModuleCodeScope main_scope(kv, hook::kHandle);
    std::thread([] {
      if (!host::prepare_thread_for_crash_reports().ok()) ::_exit(102);
      const host::ModuleSite notes("notes", {4}, kFile, kSha);
      const host::ModuleCodeScope scope(notes, hook::kOnData);
      write_through_null();
    }).join();
  });
  INFO("the child " << describe(ended.status));
  REQUIRE(WIFSIGNALED(ended.status));
  CHECK(WTERMSIG(ended.status) == SIGSEGV);

  const host::CrashRecord record = read_record(dir.path());
  CHECK(record.pid == ended.pid);
  CHECK(record.tid != ended.pid);
  check_notes_site(record, "on_data");
  CHECK(host::crash_line(record) == std::string(kNotesLine) + "on_data: SIGSEGV");
}

TEST_CASE("a stack overflow in module code is recorded: the handler runs on its own stack", "[crash]") {
  test::TempDir dir;
  const Ended ended = run_in_child(dir.path(), [] {
    const host::ModuleSite site("notes", {4}, kFile, kSha);
    const host::ModuleCodeScope scope(site, hook::kSaveState);
    (void)overflow_stack(0);
  });
  INFO("the child " << describe(ended.status));
  REQUIRE(WIFSIGNALED(ended.status));
  CHECK(WTERMSIG(ended.status) == SIGSEGV);

  const host::CrashRecord record = read_record(dir.path());
  check_notes_site(record, "save_state");
  CHECK(record.signal == SIGSEGV);
  CHECK(host::crash_line(record) == std::string(kNotesLine) + "save_state: SIGSEGV");
}

TEST_CASE("a crash in a static initialiser during dlopen is recorded, with the loader's lock held", "[crash]") {
  test::TempDir dir;
  const fs::path image = test::test_image_path("crash-at-load.so");
  auto load_crashing = [&](const char* how) {
    return [how, image] {
      ::setenv("MOLT_CRASH_AT_LOAD", how, 1);
      const host::ModuleSite site("notes", {4}, kFile, kSha);
      const host::ModuleCodeScope scope(site, hook::kStaticInit);
      (void)::dlopen(image.c_str(), RTLD_NOW | RTLD_LOCAL);
    };
  };
  SECTION("SIGSEGV") {
    const Ended ended = run_in_child(dir.path(), load_crashing("segv"));
    INFO("the child " << describe(ended.status));
    REQUIRE(WIFSIGNALED(ended.status));
    CHECK(WTERMSIG(ended.status) == SIGSEGV);
    const host::CrashRecord record = read_record(dir.path());
    check_notes_site(record, "static initialisation");
    CHECK(record.address == std::optional<std::uint64_t>(0));
    CHECK_FALSE(record.backtrace.empty());
    CHECK(host::crash_line(record) == std::string(kNotesLine) + "static initialisation: SIGSEGV");
  }
  SECTION("exit()") {
    const Ended ended = run_in_child(dir.path(), load_crashing("exit"));
    INFO("the child " << describe(ended.status));
    REQUIRE(WIFEXITED(ended.status));
    CHECK(WEXITSTATUS(ended.status) == 4);
    const host::CrashRecord record = read_record(dir.path());
    check_notes_site(record, "static initialisation");
    CHECK(host::crash_line(record) == std::string(kNotesLine) + "static initialisation: exit(4)");
  }
  SECTION("without a crash it loads, and the child reaches its end") {
    const Ended ended = run_in_child(dir.path(), [image] {
      if (::dlopen(image.c_str(), RTLD_NOW | RTLD_LOCAL) == nullptr) ::_exit(103);
    });
    CHECK(describe(ended.status) == "exited 101");
    CHECK_FALSE(fs::exists(host::crash_record_path(dir.path())));
  }
}

TEST_CASE("a fatal signal another process sent is recorded with its sender, and does not blame the module",
          "[crash]") {
  test::TempDir dir;
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  const pid_t pid = start_child(dir.path(), [&] {
    const host::ModuleSite site("notes", {4}, kFile, kSha);
    const host::ModuleCodeScope scope(site, hook::kOnTimer);
    (void)!::write(ready[1], "r", 1);  // in the scope: the parent may send it now
    for (;;) ::pause();
  });
  ::close(ready[1]);
  char byte = 0;
  const bool child_ready = ::read(ready[0], &byte, 1) == 1;  // blocks until the child is in its scope
  ::close(ready[0]);
  if (child_ready) ::kill(pid, SIGSEGV);
  const Ended ended = wait_for_child(pid);
  REQUIRE(child_ready);
  INFO("the child " << describe(ended.status));
  REQUIRE(WIFSIGNALED(ended.status));
  CHECK(WTERMSIG(ended.status) == SIGSEGV);

  const host::CrashRecord record = read_record(dir.path());
  CHECK(record.code == SI_USER);
  CHECK_FALSE(record.address);
  CHECK(record.sender == std::optional<std::int64_t>(::getpid()));
  CHECK(record.sent_by_another_process());
  check_notes_site(record, "on_timer");
  CHECK(host::crash_line(record) ==
        std::string(kNotesLine) + "on_timer: SIGSEGV (sent by pid " + std::to_string(::getpid()) + ")");
}

namespace {

/// Writes `text` as the crash record of `run_dir`.
void write_record_text(const fs::path& run_dir, std::string_view text) {
  std::ofstream(host::crash_record_path(run_dir), std::ios::binary) << text;
}

std::string record_text(std::string_view site_lines, std::string_view hook_line = "hook load_state\n") {
  return std::string(host::kCrashRecordFormat) +
         "\ntime_ms 1700000000123\npid 42\ntid 43\ncause signal\nsignal 7 SIGBUS\ncode 2\naddress 0x7f00dead0000\n"
         "in module\n" + std::string(site_lines) + std::string(hook_line) + "backtrace\nframe one\nframe two\n";
}

}  // namespace

TEST_CASE("read_crash_record reads back what the site wrote, unescaped", "[crash]") {
  test::TempDir dir;
  const host::ModuleSite evil("evil\nin host", {9}, "/srv/a\\b/odd\n\x01name.so", kSha);
  write_record_text(dir.path(), record_text(evil.record_lines(), "hook handle\n"));
  const host::CrashRecord record = read_record(dir.path());
  CHECK(record.time_ms == 1700000000123);
  CHECK(record.pid == 42);
  CHECK(record.tid == 43);
  CHECK(record.signal == SIGBUS);
  CHECK(record.signal_name == "SIGBUS");
  CHECK(record.code == 2);
  CHECK(record.address == std::optional<std::uint64_t>(0x7f00dead0000));
  REQUIRE(record.module);
  CHECK(record.module->module == "evil\nin host");
  CHECK(record.module->version.value == 9);
  CHECK(record.module->file == "/srv/a\\b/odd\n\x01name.so");
  CHECK(record.backtrace == std::vector<std::string>{"frame one", "frame two"});
  CHECK(host::crash_line(record) ==
        "the previous run crashed in evil\nin host v9 (odd\n\x01name.so, sha256 0123456789ab…) in handle: SIGBUS");
}

TEST_CASE("crash_line shows a short sha256 whole and the host's faults with their address", "[crash]") {
  host::CrashRecord record;
  record.cause = host::CrashCause::Signal;
  record.signal = SIGFPE;
  record.signal_name = "SIGFPE";
  record.address = 0x55aa;
  CHECK(host::crash_line(record) ==
        "the previous run crashed in the host (no module code on the crashing thread): SIGFPE at 0x55aa");
  record.module = host::CrashedModule{"kv", {2}, "kv-2.so", "abc", "run_job_step"};
  CHECK(host::crash_line(record) == "the previous run crashed in kv v2 (kv-2.so, sha256 abc) in run_job_step: SIGFPE");
  record.cause = host::CrashCause::Exit;
  record.exit_status = 1;
  CHECK(host::crash_line(record) == "the previous run crashed in kv v2 (kv-2.so, sha256 abc) in run_job_step: exit(1)");
}

TEST_CASE("read_crash_record: no record is nothing, and a link, a FIFO, another format or a cut record an error",
          "[crash]") {
  test::TempDir dir;
  const fs::path path = host::crash_record_path(dir.path());
  auto missing = host::read_crash_record(path);
  REQUIRE(missing.ok());
  CHECK_FALSE(missing.value().has_value());

  auto error_of = [&] {
    auto record = host::read_crash_record(path);
    REQUIRE_FALSE(record.ok());
    return record.error().to_string();
  };
  SECTION("a symbolic link") {
    write_record_text(dir.path(), "");
    fs::rename(path, dir.path() / "elsewhere");
    fs::create_symlink(dir.path() / "elsewhere", path);
    CHECK(error_of() == path.string() +
                            ": start: crash record: is a symbolic link, not a regular file (links are not followed here)");
  }
  SECTION("a FIFO, refused without blocking") {
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    CHECK(error_of() == path.string() + ": start: crash record: is a FIFO, not a regular file");
  }
  SECTION("another format") {
    write_record_text(dir.path(), "molt-crash 2\ntime_ms 1\n");
    CHECK(error_of() == path.string() + ": start: crash record: format 'molt-crash 2' unknown, this moltd reads 'molt-crash 1'");
  }
  SECTION("cut short") {
    write_record_text(dir.path(), std::string(host::kCrashRecordFormat) + "\ntime_ms 1700000000123\npid 42\ntid 4");
    CHECK(error_of() == path.string() + ": start: crash record: no valid 'cause' line (cut short by a second crash?)");
  }
  SECTION("in module without its lines") {
    write_record_text(dir.path(), record_text(""));
    CHECK(error_of() == path.string() + ": start: crash record: no valid 'module' line (cut short by a second crash?)");
  }
}

TEST_CASE("move_crash_record_aside keeps the last 20 records, and two of the same time both", "[crash]") {
  test::TempDir dir;
  const host::ModuleSite site("notes", {4}, kFile, kSha);
  for (std::int64_t time = 1000; time < 1025; ++time) {
    write_record_text(dir.path(), record_text(site.record_lines()));
    auto moved = host::move_crash_record_aside(dir.path(), time);
    if (!moved) FAIL(moved.error().to_string());
    CHECK(moved.value() == host::crash_archive_dir(dir.path()) / ("crash-" + std::to_string(time) + ".record"));
    CHECK_FALSE(fs::exists(host::crash_record_path(dir.path())));
  }
  write_record_text(dir.path(), record_text(site.record_lines()));
  auto again = host::move_crash_record_aside(dir.path(), 1024);
  REQUIRE(again.ok());
  CHECK(again.value().filename() == "crash-1024-2.record");

  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(host::crash_archive_dir(dir.path())))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  REQUIRE(names.size() == host::kKeptCrashRecords);
  CHECK(names.front() == "crash-1006.record");  // 1000..1005 went, the oldest
  CHECK(names.back() == "crash-1024.record");
  CHECK(std::find(names.begin(), names.end(), "crash-1024-2.record") != names.end());
  struct stat st {};
  REQUIRE(::stat(host::crash_archive_dir(dir.path()).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0700);
}
