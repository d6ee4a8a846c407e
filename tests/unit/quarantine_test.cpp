// A crash is never repeated by the host itself: the image to blame is
// quarantined, across restarts, until the operator clears it; a crash loop is
// counted in the crash log.
#include <sys/stat.h>

#include <chrono>
#include <fstream>

#include <catch2/catch.hpp>

#include "molt/host/release/crash_log.hpp"
#include "molt/host/release/quarantine.hpp"
#include "test_support.hpp"

using namespace molt;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

const std::string kShaA = "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111";
const std::string kShaB = "bbbbbbbbbbbb2222222222222222222222222222222222222222222222222222";
const std::string kShaB2 = "bbbbbbbbbbbb3333333333333333333333333333333333333333333333333333";

host::QuarantineEntry entry(const std::string& sha, std::string file, std::string reason = "crashed", std::int64_t since = 1000) {
  return host::QuarantineEntry{std::move(file), sha, "notes", {4}, std::move(reason), since};
}

std::unique_ptr<host::Quarantine> open_quarantine(const fs::path& dir) {
  auto quarantine = host::Quarantine::open(host::quarantine_path(dir));
  if (!quarantine) FAIL(quarantine.error().to_string());
  return std::move(quarantine).value();
}

std::unique_ptr<host::CrashLog> open_log(const fs::path& dir) {
  auto log = host::CrashLog::open(host::crash_log_path(dir));
  if (!log) FAIL(log.error().to_string());
  return std::move(log).value();
}

host::CrashRecord crash_of(const std::string& sha, std::int64_t at_ms, std::string hook = "handle") {
  host::CrashRecord record;
  record.time_ms = at_ms;
  record.pid = 100;
  record.tid = 101;
  record.cause = host::CrashCause::Signal;
  record.signal = 11;
  record.signal_name = "SIGSEGV";
  record.code = 1;
  record.address = 0;
  record.module = host::CrashedModule{"notes", {4}, "/srv/plugins/notes-4.so", sha, std::move(hook)};
  return record;
}

std::string sha_list(const std::vector<host::QuarantineEntry>& entries) {
  std::string out;
  for (const auto& e : entries) out += e.sha256.substr(0, 12) + " ";
  return out;
}

}  // namespace

TEST_CASE("quarantine: add, find by sha256, list, and clear by file", "[quarantine]") {
  test::TempDir dir;
  auto quarantine = open_quarantine(dir.path());
  CHECK(quarantine->list().empty());
  CHECK_FALSE(quarantine->find_sha256(kShaA));

  REQUIRE(quarantine->add(entry(kShaA, "/srv/plugins/notes-4.so", "crashed in load_state")).ok());
  REQUIRE(quarantine->add(entry(kShaB, "/srv/plugins/notes-5.so")).ok());
  const auto found = quarantine->find_sha256(kShaA);
  REQUIRE(found);
  CHECK(found->file == "/srv/plugins/notes-4.so");
  CHECK(found->module == "notes");
  CHECK(found->version.value == 4);
  CHECK(found->reason == "crashed in load_state");
  CHECK(found->since_ms == 1000);
  CHECK(sha_list(quarantine->list()) == "aaaaaaaaaaaa bbbbbbbbbbbb ");

  auto cleared = quarantine->clear("/srv/plugins/notes-4.so");
  REQUIRE(cleared.ok());
  REQUIRE(cleared.value().size() == 1);
  CHECK(cleared.value()[0].sha256 == kShaA);
  CHECK_FALSE(quarantine->find_sha256(kShaA));
  CHECK(sha_list(quarantine->list()) == "bbbbbbbbbbbb ");
}

TEST_CASE("quarantine: adding an image again keeps one entry, its first time and its newest reason", "[quarantine]") {
  test::TempDir dir;
  auto quarantine = open_quarantine(dir.path());
  REQUIRE(quarantine->add(entry(kShaA, "/p/notes-4.so", "crashed on probation", 1000)).ok());
  REQUIRE(quarantine->add(entry(kShaA, "/p/notes-4.so", "crashed 3 times", 5000)).ok());
  REQUIRE(quarantine->list().size() == 1);
  CHECK(quarantine->list()[0].reason == "crashed 3 times");
  CHECK(quarantine->list()[0].since_ms == 1000);
}

TEST_CASE("quarantine: clear takes a sha256 or its start as the crash line shows it", "[quarantine]") {
  test::TempDir dir;
  auto quarantine = open_quarantine(dir.path());
  REQUIRE(quarantine->add(entry(kShaA, "/p/notes-4.so")).ok());
  REQUIRE(quarantine->add(entry(kShaB, "/p/notes-5.so")).ok());
  REQUIRE(quarantine->add(entry(kShaB2, "/p/notes-6.so")).ok());

  SECTION("the whole sha256") {
    REQUIRE(quarantine->clear(kShaA).ok());
    CHECK(sha_list(quarantine->list()) == "bbbbbbbbbbbb bbbbbbbbbbbb ");
  }
  SECTION("its first 12 digits and the ellipsis, in capitals") {
    auto cleared = quarantine->clear("AAAAAAAAAAAA…");
    REQUIRE(cleared.ok());
    CHECK(cleared.value().size() == 1);
    CHECK(sha_list(quarantine->list()) == "bbbbbbbbbbbb bbbbbbbbbbbb ");
  }
  SECTION("a start two images share is refused, and nothing is cleared") {
    auto cleared = quarantine->clear("bbbbbbbbbbbb");
    REQUIRE_FALSE(cleared.ok());
    CHECK(cleared.error().reason ==
          "'bbbbbbbbbbbb' is the start of the sha256 of 2 quarantined images; give more of it (moltctl quarantine lists them)");
    CHECK(quarantine->list().size() == 3);
    REQUIRE(quarantine->clear("bbbbbbbbbbbb3").ok());
    CHECK(sha_list(quarantine->list()) == "aaaaaaaaaaaa bbbbbbbbbbbb ");
  }
  SECTION("a start shorter than 12 digits names nothing") {
    auto cleared = quarantine->clear("aaaaaaaaaaa");
    REQUIRE_FALSE(cleared.ok());
    CHECK(cleared.error().reason == "no quarantined image matches 'aaaaaaaaaaa' (moltctl quarantine lists them)");
  }
}

TEST_CASE("quarantine: clearing what is not quarantined says so and changes nothing", "[quarantine]") {
  test::TempDir dir;
  auto quarantine = open_quarantine(dir.path());
  REQUIRE(quarantine->add(entry(kShaA, "/p/notes-4.so")).ok());
  auto cleared = quarantine->clear("/p/notes-5.so");
  REQUIRE_FALSE(cleared.ok());
  CHECK(cleared.error().reason == "no quarantined image matches '/p/notes-5.so' (moltctl quarantine lists them)");
  CHECK(quarantine->list().size() == 1);
}

TEST_CASE("quarantine: entries survive a restart, and clearing does too", "[quarantine]") {
  test::TempDir dir;
  {
    auto quarantine = open_quarantine(dir.path());
    REQUIRE(quarantine->add(entry(kShaA, "/p/notes-4.so", "crashed moltd in load_state (SIGSEGV)", 1234)).ok());
    REQUIRE(quarantine->add(entry(kShaB, "/p/notes-\xff.so")).ok());  // not UTF-8: json_text escapes it
  }
  struct stat st {};
  REQUIRE(::stat(host::quarantine_path(dir.path()).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  {
    auto quarantine = open_quarantine(dir.path());
    REQUIRE(quarantine->list().size() == 2);
    const auto found = quarantine->find_sha256(kShaA);
    REQUIRE(found);
    CHECK(found->file == "/p/notes-4.so");
    CHECK(found->module == "notes");
    CHECK(found->version.value == 4);
    CHECK(found->reason == "crashed moltd in load_state (SIGSEGV)");
    CHECK(found->since_ms == 1234);
    CHECK(quarantine->find_sha256(kShaB)->file == "/p/notes-\\xff.so");
    REQUIRE(quarantine->clear(kShaA).ok());
  }
  CHECK(sha_list(open_quarantine(dir.path())->list()) == "bbbbbbbbbbbb ");
}

TEST_CASE("quarantine: a link, a FIFO or a file that is not the quarantine is refused", "[quarantine]") {
  test::TempDir dir;
  const fs::path path = host::quarantine_path(dir.path());
  auto error_of = [&] {
    auto quarantine = host::Quarantine::open(path);
    REQUIRE_FALSE(quarantine.ok());
    return quarantine.error().to_string();
  };
  SECTION("a symbolic link, even to a valid quarantine") {
    {
      auto elsewhere = host::Quarantine::open(dir.path() / "elsewhere.json");
      REQUIRE(elsewhere.ok());
      REQUIRE(elsewhere.value()->add(entry(kShaA, "/p/notes-4.so")).ok());
    }
    fs::create_symlink(dir.path() / "elsewhere.json", path);
    CHECK(error_of() == path.string() +
                            ": start: quarantine: is a symbolic link, not a regular file (links are not followed here)");
  }
  SECTION("a dangling symbolic link") {
    fs::create_symlink(dir.path() / "nowhere.json", path);
    CHECK(error_of() == path.string() +
                            ": start: quarantine: is a symbolic link, not a regular file (links are not followed here)");
  }
  SECTION("a FIFO, refused without blocking") {
    REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
    CHECK(error_of() == path.string() + ": start: quarantine: is a FIFO, not a regular file");
  }
  SECTION("not JSON") {
    std::ofstream(path) << "{";
    CHECK(error_of() == path.string() + ": start: quarantine: not valid JSON");
  }
  SECTION("another format") {
    std::ofstream(path) << R"({"format": "molt-quarantine/2", "images": []})";
    CHECK(error_of() == path.string() +
                            ": start: quarantine: format \"molt-quarantine/2\" unknown, this moltd reads \"molt-quarantine/1\"");
  }
}

TEST_CASE("crash log: count_recent counts one image's crashes within the window", "[quarantine][crash]") {
  test::TempDir dir;
  auto log = open_log(dir.path());
  const std::int64_t now = 10'000'000;
  for (std::int64_t at : {now - 11 * 60'000, now - 10 * 60'000, now - 9 * 60'000, now - 1, now, now + 1})
    REQUIRE(log->append(host::crash_log_entry(crash_of(kShaA, at))).ok());
  REQUIRE(log->append(host::crash_log_entry(crash_of(kShaB, now))).ok());
  // (now - 10 min, now]: the crash exactly 10 minutes ago is out, the one after now too.
  CHECK(log->count_recent(kShaA, 10min, now) == 3);
  CHECK(log->count_recent(kShaA, 20min, now) == 5);
  CHECK(log->count_recent(kShaB, 10min, now) == 1);
  CHECK(log->count_recent("cccc", 10min, now) == 0);
  CHECK(log->count_recent("", 10min, now) == 0);

  auto reopened = open_log(dir.path());
  CHECK(reopened->count_recent(kShaA, 10min, now) == 3);
  const auto entries = reopened->entries();
  REQUIRE(entries.size() == 7);
  CHECK(entries[0].module == "notes");
  CHECK(entries[0].version.value == 4);
  CHECK(entries[0].file == "/srv/plugins/notes-4.so");
  CHECK(entries[0].hook == "handle");
  CHECK(entries[0].cause == "SIGSEGV");
  CHECK_FALSE(entries[0].sender);
}

TEST_CASE("crash log: keeps the last 100 crashes", "[quarantine][crash]") {
  test::TempDir dir;
  {
    auto log = open_log(dir.path());
    for (std::int64_t at = 1; at <= 105; ++at) REQUIRE(log->append(host::crash_log_entry(crash_of(kShaA, at))).ok());
    CHECK(log->entries().size() == host::kMaxCrashLogEntries);
  }
  const auto entries = open_log(dir.path())->entries();
  REQUIRE(entries.size() == host::kMaxCrashLogEntries);
  CHECK(entries.front().at_ms == 6);
  CHECK(entries.back().at_ms == 105);
}

TEST_CASE("crash log: a link or a FIFO is refused", "[quarantine][crash]") {
  test::TempDir dir;
  const fs::path path = host::crash_log_path(dir.path());
  SECTION("a symbolic link") { fs::create_symlink(dir.path() / "elsewhere.json", path); }
  SECTION("a FIFO") { REQUIRE(::mkfifo(path.c_str(), 0600) == 0); }
  auto log = host::CrashLog::open(path);
  REQUIRE_FALSE(log.ok());
  CHECK(log.error().reason.find("not a regular file") != std::string::npos);
}

TEST_CASE("quarantine_reason: a crash on probation, or the third in ten minutes, quarantines the image",
          "[quarantine][crash]") {
  test::TempDir dir;
  auto log = open_log(dir.path());
  const host::CrashLoopPolicy policy;  // 3 in 10 minutes
  const std::int64_t now = 50'000'000;

  const auto first = crash_of(kShaA, now - 5 * 60'000, "load_state");
  REQUIRE(log->append(host::crash_log_entry(first)).ok());
  CHECK(host::quarantine_reason(first, host::ReleaseStatus::OnProbation, *log, policy, now) ==
        "crashed moltd in load_state (SIGSEGV) before it was ever permanent");
  CHECK_FALSE(host::quarantine_reason(first, host::ReleaseStatus::Permanent, *log, policy, now));

  const auto second = crash_of(kShaA, now - 60'000);
  REQUIRE(log->append(host::crash_log_entry(second)).ok());
  CHECK_FALSE(host::quarantine_reason(second, host::ReleaseStatus::Permanent, *log, policy, now));

  auto third = crash_of(kShaA, now);
  third.cause = host::CrashCause::Exit;
  third.exit_status = 1;
  REQUIRE(log->append(host::crash_log_entry(third)).ok());
  CHECK(host::quarantine_reason(third, host::ReleaseStatus::Permanent, *log, policy, now) ==
        "crashed moltd 3 times within 10 minutes (the last in handle, exit(1))");

  const auto entry_made = host::quarantine_entry(third, "a reason", now);
  CHECK(entry_made.file == "/srv/plugins/notes-4.so");
  CHECK(entry_made.sha256 == kShaA);
  CHECK(entry_made.module == "notes");
  CHECK(entry_made.version.value == 4);
  CHECK(entry_made.reason == "a reason");
  CHECK(entry_made.since_ms == now);

  // A crash in host code, or a signal another process sent, blames no image.
  auto in_host = crash_of(kShaA, now);
  in_host.module.reset();
  CHECK_FALSE(host::quarantine_reason(in_host, host::ReleaseStatus::OnProbation, *log, policy, now));
  auto killed = crash_of(kShaB, now);
  killed.code = 0;  // SI_USER
  killed.sender = 4321;
  for (int i = 0; i < 3; ++i) REQUIRE(log->append(host::crash_log_entry(killed)).ok());
  CHECK(log->entries().back().sender == std::optional<std::int64_t>(4321));
  CHECK(log->count_recent(kShaB, 10min, now) == 0);
  CHECK_FALSE(host::quarantine_reason(killed, host::ReleaseStatus::OnProbation, *log, policy, now));
}
