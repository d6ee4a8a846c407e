// Files the host opens are what they claim to be, and state archives are
// untrusted input: a real moltd serving kv, given a FIFO where an image or a
// snapshot should be, and snapshots and archives crafted (with valid
// checksums) to declare far more keys than they hold.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>

#include <catch2/catch.hpp>

#include "../../plugins/kv/common/state.hpp"
#include "daemon.hpp"
#include "hostile.hpp"
#include "molt/host/state/buffers.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/state.hpp"
#include "resp_client.hpp"

using namespace molt::test;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

/// moltd serving kv v2 on a free loopback port; no periodic snapshots.
Daemon kv_daemon() {
  return Daemon({{"kv", plugin_path("kv", 2), 2, "listen = \"127.0.0.1:0\"\n"}}, "snapshot_interval_seconds = 0");
}

fs::path make_fifo(const fs::path& path) {
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  return path;
}

/// Whether some process has `fifo` open for reading: a non-blocking writer
/// can open it only then. (Opening it also releases a reader blocked in open.)
bool someone_reads(const fs::path& fifo) {
  const int writer = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (writer < 0) return false;
  ::close(writer);
  return true;
}

/// The entries of `dir` whose name starts with `prefix`.
std::vector<fs::path> entries(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> found;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().filename().string().starts_with(prefix)) found.push_back(it->path());
  return found;
}

/// The run directory and its snapshot directory, made as moltd makes them
/// (owner only), so a file can be put there before moltd first starts.
fs::path snapshot_dir_of(const Daemon& daemon) {
  const fs::path snapshots = daemon.run_dir() / "snapshots";
  fs::create_directories(snapshots);
  fs::permissions(daemon.run_dir(), fs::perms::owner_all, fs::perm_options::replace);
  fs::permissions(snapshots, fs::perms::owner_all, fs::perm_options::replace);
  return snapshots;
}

bool kv_serves(const Daemon& daemon) {
  RespClient client(daemon.stream_port("kv"));
  return client.call({"PING"}) == "+PONG\r\n";
}

std::string dbsize(const Daemon& daemon) { return RespClient(daemon.stream_port("kv")).call({"DBSIZE"}); }

/// A kv schema-2 state archive file (header with valid checksums, then the
/// state) of three keys whose count is replaced by `keys`: what an attacker
/// who can write a snapshot, or hand one to an operator, would make.
std::string crafted_kv_archive(std::uint64_t keys) {
  kv::StateV2 state;
  for (const char* key : {"key-a", "key-b", "key-c"}) {
    kv::Value value = kv::Value::of_type(kv::Type::String);
    value.str = "value-x";
    state.keys.emplace(key, std::move(value));
  }
  molt::host::StringSink sink(1 << 20);
  molt::api::StateWriter(sink).write(state);
  std::string bytes = sink.take();
  const std::uint64_t three = 3;
  const auto at = bytes.find(std::string(reinterpret_cast<const char*>(&three), sizeof three));
  REQUIRE(at != std::string::npos);
  std::memcpy(bytes.data() + at, &keys, sizeof keys);
  return molt::host::encode_state_file(
      {"kv", molt::api::ModuleVersion{2}, molt::api::SchemaVersion{2}, std::move(bytes)});
}

void write(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  fs::permissions(path, fs::perms(0600));
}

/// Slack on top of the bound: allocator arenas and page-cache noise of one boot.
constexpr std::uint64_t kSlack = 64ull << 20;

}  // namespace

TEST_CASE("moltctl reload kv FIFO is refused at once, and releases, save, kv and SIGTERM still work", "[hostile][files]") {
  Daemon daemon = kv_daemon();
  daemon.start();
  RespClient client(daemon.stream_port("kv"));
  REQUIRE(client.call({"SET", "kept", "yes"}) == "+OK\r\n");
  const fs::path fifo = make_fifo(daemon.dir() / "kv-9.so");

  const auto started = Clock::now();
  auto reload = std::async(std::launch::async, [&] { return daemon.ctl({"reload", "kv", fifo.string()}); });
  // Meanwhile (and after): the release lock is not held on the FIFO.
  const auto releases = daemon.ctl({"releases"});
  CHECK(releases.exit_code == 0);
  const auto save = daemon.ctl({"save"});
  CHECK(save.exit_code == 0);
  CHECK(client.call({"GET", "kept"}) == "$3\r\nyes\r\n");

  REQUIRE(reload.wait_for(20s) == std::future_status::ready);
  const auto refused = reload.get();
  const auto took = Clock::now() - started;
  INFO("moltctl reload: exit " << refused.exit_code << ", stdout: " << refused.out << "stderr: " << refused.err);
  CHECK(took < 5s);
  CHECK(refused.exit_code == 1);
  CHECK_THAT(refused.err, Catch::Contains(fifo.string()) && Catch::Contains("is a FIFO, not a regular file"));
  CHECK(std::count(refused.err.begin(), refused.err.end(), '\n') == 1);
  CHECK_FALSE(someone_reads(fifo));  // moltd does not keep it open either

  CHECK(daemon.ctl({"releases"}).exit_code == 0);
  CHECK(daemon.ctl({"save"}).exit_code == 0);
  CHECK(client.call({"GET", "kept"}) == "$3\r\nyes\r\n");
  CHECK(daemon.status()["modules"][0]["version"] == 2);  // still the version it ran
  CHECK(daemon.stop() == 0);                             // SIGTERM stops it as usual
}

TEST_CASE("a FIFO at snapshots/kv.molt is refused at boot without waiting on it, and kv not started until allowed empty",
          "[hostile][files]") {
  Daemon daemon = kv_daemon();
  const fs::path fifo = make_fifo(snapshot_dir_of(daemon) / "kv.molt");
  daemon.spawn({});
  const bool ready = wait_until([&] { return daemon.ctl({"status"}).exit_code == 0 || !daemon.process().running(); }, 20s);
  if (!ready && someone_reads(fifo)) FAIL("moltd waited on the FIFO at boot (released it to end the test)");
  daemon.wait_ready();
  // Something is there that kv v2 cannot read, and no kept state: not
  // started (not started empty), and the FIFO left where it is.
  const auto not_started = daemon.status()["not_started"];
  REQUIRE(not_started.size() == 1);
  CHECK_THAT(not_started[0]["reason"].get<std::string>(),
             Catch::StartsWith("no state v2 can read (kv (" + fifo.string() + "): snapshot: is a FIFO, not a regular file)"));
  CHECK(fs::is_fifo(fs::symlink_status(fifo)));
  CHECK(daemon.stop() == 0);

  // Allowed empty: the FIFO is moved aside, kv starts empty and serves.
  daemon.spawn({}, {}, {}, {"--allow-empty", "kv"});
  const bool again = wait_until([&] { return daemon.ctl({"status"}).exit_code == 0 || !daemon.process().running(); }, 20s);
  if (!again && someone_reads(fifo)) FAIL("moltd waited on the FIFO at boot (released it to end the test)");
  daemon.wait_ready();
  CHECK(kv_serves(daemon));
  CHECK(dbsize(daemon) == ":0\r\n");

  const auto log = daemon.log();
  INFO(log);
  CHECK_THAT(log, Catch::Contains(fifo.string() + "): snapshot: is a FIFO, not a regular file) and none kept in schema 2; "
                                  "the snapshot is kept at " + fifo.string() + ".corrupt-"));
  const auto moved = entries(fifo.parent_path(), "kv.molt.corrupt-");
  REQUIRE(moved.size() == 1);
  CHECK(fs::is_fifo(fs::symlink_status(moved[0])));
  CHECK_FALSE(fs::is_fifo(fs::symlink_status(fifo)));  // gone, or a real snapshot by now
  CHECK(daemon.stop() == 0);
  CHECK(fs::is_regular_file(fs::symlink_status(fifo)));  // the shutdown snapshot took its place
}

TEST_CASE("crafted snapshots declaring 2^27 and 2^31 keys: boot memory stays bounded, no crash loop", "[hostile][files]") {
  Daemon daemon = kv_daemon();
  const fs::path snapshots = snapshot_dir_of(daemon);
  daemon.start();
  const std::uint64_t baseline = peak_rss_bytes(daemon.pid());
  CHECK(daemon.stop() == 0);
  fs::remove(snapshots / "kv.molt");  // the shutdown snapshot: not this test's

  for (const unsigned log2_keys : {27u, 31u}) {
    const std::uint64_t keys = 1ull << log2_keys;
    DYNAMIC_SECTION("a snapshot declaring 2^" << log2_keys << " keys") {
      const std::string file = crafted_kv_archive(keys);
      write(snapshots / "kv.molt", file);
      REQUIRE(molt::host::read_state_file(snapshots / "kv.molt", 1 << 20).ok());  // the checksums are valid

      daemon.start();
      const std::uint64_t peak = peak_rss_bytes(daemon.pid());
      measured("boot with a " + std::to_string(file.size()) + "-byte snapshot declaring 2^" + std::to_string(log2_keys) +
                   " keys: peak RSS",
               std::to_string(peak >> 20) + " MiB (baseline " + std::to_string(baseline >> 20) + " MiB)");
      if (!kSanitized) CHECK(peak < baseline + 2 * file.size() + kSlack);
      // Not restorable, and no kept state: kv is not started, and says why.
      const auto not_started = daemon.status()["not_started"];
      REQUIRE(not_started.size() == 1);
      CHECK_THAT(not_started[0]["reason"].get<std::string>(),
                 Catch::Contains("could not be restored") && Catch::Contains("declares " + std::to_string(keys) + " keys"));
      CHECK(daemon.stop() == 0);

      // The next boot refuses it the same way: no crash loop.
      daemon.start();
      CHECK(daemon.status()["not_started"].size() == 1);
      CHECK(daemon.stop() == 0);

      // Allowed empty, kv serves; the snapshot is set aside, and the boot
      // after reads what that one saved.
      daemon.start({}, {"--allow-empty", "kv"});
      CHECK(kv_serves(daemon));
      CHECK(dbsize(daemon) == ":0\r\n");
      CHECK(entries(snapshots, "kv.molt.unrestorable-").size() == 1);
      CHECK(daemon.stop() == 0);
      daemon.start();
      CHECK(kv_serves(daemon));
      CHECK(daemon.stop() == 0);
    }
  }
}

TEST_CASE("moltctl restore of a crafted archive or a FIFO is refused in one line, and kv keeps its data", "[hostile][files]") {
  Daemon daemon = kv_daemon();
  daemon.start();
  RespClient client(daemon.stream_port("kv"));
  REQUIRE(client.call({"SET", "kept", "yes"}) == "+OK\r\n");

  SECTION("an archive declaring 2^31 keys, its checksums valid") {
    const fs::path archive = daemon.dir() / "crafted.molt";
    write(archive, crafted_kv_archive(1ull << 31));
    const auto refused = daemon.ctl({"restore", "kv", archive.string()});
    INFO("stdout: " << refused.out << "stderr: " << refused.err);
    CHECK(refused.exit_code == 1);
    CHECK_THAT(refused.err, Catch::Contains("declares 2147483648 keys"));
    CHECK(std::count(refused.err.begin(), refused.err.end(), '\n') == 1);
  }
  SECTION("a FIFO") {
    const fs::path fifo = make_fifo(daemon.dir() / "state.molt");
    auto restore = std::async(std::launch::async, [&] { return daemon.ctl({"restore", "kv", fifo.string()}); });
    if (restore.wait_for(20s) != std::future_status::ready && someone_reads(fifo))
      FAIL("moltd waited on the FIFO (released it to end the test)");
    const auto refused = restore.get();
    INFO("stdout: " << refused.out << "stderr: " << refused.err);
    CHECK(refused.exit_code == 1);
    CHECK_THAT(refused.err, Catch::Contains(fifo.string()) && Catch::Contains("is a FIFO, not a regular file"));
    CHECK(std::count(refused.err.begin(), refused.err.end(), '\n') == 1);
  }
  CHECK(client.call({"GET", "kept"}) == "$3\r\nyes\r\n");
  CHECK(dbsize(daemon) == ":1\r\n");
  CHECK(daemon.stop() == 0);
}
