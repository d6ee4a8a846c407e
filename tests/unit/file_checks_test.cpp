// Files the host opens are what they claim to be: regular files, opened
// without blocking; and who may write the files it trusts.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <map>

#include <catch2/catch.hpp>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/file_checks.hpp"
#include "molt/host/state/snapshot_store.hpp"
#include "molt/host/state/state_blob.hpp"
#include "test_support.hpp"

using namespace molt;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

/// Runs `read` (which must not block) on another thread. Should it block on
/// the FIFO at `fifo` anyway, a writer is opened to release it, and the
/// test fails instead of hanging.
template <class Read>
auto without_blocking(const fs::path& fifo, Read read) {
  const auto started = std::chrono::steady_clock::now();
  auto result = std::async(std::launch::async, read);
  if (result.wait_for(10s) != std::future_status::ready) {
    const int writer = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);
    if (writer >= 0) ::close(writer);
    FAIL("the read blocked on the FIFO " << fifo);
  }
  CHECK(std::chrono::steady_clock::now() - started < 2s);
  return result.get();
}

fs::path make_fifo(const fs::path& path) {
  REQUIRE(::mkfifo(path.c_str(), 0600) == 0);
  return path;
}

/// A bound Unix socket at `path`; closed with the returned descriptor.
host::FileDescriptor make_socket(const fs::path& path) {
  host::FileDescriptor fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(fd.valid());
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  REQUIRE(path.native().size() < sizeof address.sun_path);
  std::strcpy(address.sun_path, path.c_str());
  REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
  return fd;
}

std::optional<std::string> read(const fs::path& path, host::Symlinks symlinks = host::Symlinks::Follow) {
  std::string contents;
  return host::read_file(path, 1 << 20, contents, symlinks);
}

}  // namespace

TEST_CASE("read_file refuses a FIFO at once, saying what it is", "[files]") {
  test::TempDir dir;
  const fs::path fifo = make_fifo(dir.path() / "archive.molt");
  const auto why = without_blocking(fifo, [&] { return read(fifo); });
  REQUIRE(why);
  CHECK(*why == "is a FIFO, not a regular file");
}

TEST_CASE("read_file refuses a directory, a socket and a device", "[files]") {
  test::TempDir dir;
  fs::create_directory(dir.path() / "a-directory");
  CHECK(read(dir.path() / "a-directory") == "is a directory, not a regular file");
  const auto socket = make_socket(dir.path() / "sock");
  CHECK(read(dir.path() / "sock") == "is a socket, not a regular file");
  CHECK(read("/dev/null") == "is a character device, not a regular file");
  CHECK(read(dir.path() / "missing") == "cannot open: No such file or directory");
}

TEST_CASE("read_file follows a symbolic link unless told to refuse it", "[files]") {
  test::TempDir dir;
  std::ofstream(dir.path() / "real") << "contents";
  fs::create_symlink(dir.path() / "real", dir.path() / "link");
  fs::create_symlink(dir.path() / "nowhere", dir.path() / "dangling");
  std::string contents;
  CHECK_FALSE(host::read_file(dir.path() / "link", 100, contents, host::Symlinks::Follow));
  CHECK(contents == "contents");
  CHECK(read(dir.path() / "link", host::Symlinks::Refuse) ==
        "is a symbolic link, not a regular file (links are not followed here)");
  CHECK(read(dir.path() / "dangling", host::Symlinks::Refuse) ==
        "is a symbolic link, not a regular file (links are not followed here)");
  CHECK(read(dir.path() / "dangling", host::Symlinks::Follow) == "cannot open: No such file or directory");
  // A link to a FIFO is refused for what it leads to, still without blocking.
  const fs::path fifo = make_fifo(dir.path() / "fifo");
  fs::create_symlink(fifo, dir.path() / "to-fifo");
  CHECK(without_blocking(fifo, [&] { return read(dir.path() / "to-fifo"); }) == "is a FIFO, not a regular file");
}

TEST_CASE("a state file that is a FIFO is refused at once, with one line naming it", "[files][state]") {
  test::TempDir dir;
  const fs::path fifo = make_fifo(dir.path() / "kv.molt");
  auto blob = without_blocking(fifo, [&] { return host::read_state_file(fifo, 1 << 20); });
  REQUIRE_FALSE(blob.ok());
  CHECK(blob.error().to_string() == fifo.string() + ": snapshot: is a FIFO, not a regular file");
}

TEST_CASE("a snapshot that is a FIFO or a link is refused, and can be moved aside", "[files][snapshot]") {
  test::TempDir dir;
  host::SnapshotStore store(dir.path(), 1 << 20);
  SECTION("a FIFO") {
    const fs::path fifo = make_fifo(store.path_of("kv"));
    auto loaded = without_blocking(fifo, [&] { return store.load("kv"); });
    REQUIRE_FALSE(loaded.ok());
    CHECK(loaded.error().to_string() == "kv (" + fifo.string() + "): snapshot: is a FIFO, not a regular file");
  }
  SECTION("a link to a good snapshot: the host does not follow links in its own directory") {
    const fs::path elsewhere = dir.path() / "elsewhere.molt";
    REQUIRE(host::write_state_file(elsewhere, {"kv", api::ModuleVersion{2}, api::SchemaVersion{2}, "state"}).ok());
    fs::create_symlink(elsewhere, store.path_of("kv"));
    auto loaded = store.load("kv");
    REQUIRE_FALSE(loaded.ok());
    CHECK_THAT(loaded.error().to_string(), Catch::Contains("is a symbolic link, not a regular file"));
  }
  SECTION("a dangling link is not taken for no snapshot") {
    fs::create_symlink(dir.path() / "nowhere", store.path_of("kv"));
    CHECK_FALSE(store.load("kv").ok());
  }
  auto moved = store.move_aside("kv", "corrupt");
  REQUIRE(moved.ok());
  CHECK_FALSE(fs::exists(fs::symlink_status(store.path_of("kv"))));
  CHECK(fs::exists(fs::symlink_status(moved.value())));
  auto again = store.load("kv");  // nothing there now: the module starts empty
  REQUIRE(again.ok());
  CHECK_FALSE(again.value().has_value());
}

// --- who may write a trusted file ------------------------------------------

namespace {

/// User and group databases made up for a test.
class FakeAccounts final : public host::AccountDirectory {
 public:
  std::map<uid_t, User> users;
  std::map<gid_t, std::vector<std::string>> listed;   ///< gr_mem
  std::map<gid_t, std::vector<std::string>> primary;  ///< users whose primary group it is
  bool scan_complete = true;

  std::optional<User> user(uid_t uid) const override {
    const auto it = users.find(uid);
    return it == users.end() ? std::nullopt : std::optional<User>(it->second);
  }
  std::optional<std::vector<std::string>> listed_members(gid_t gid) const override {
    const auto it = listed.find(gid);
    return it == listed.end() ? std::nullopt : std::optional(it->second);
  }
  std::optional<std::vector<std::string>> primary_members(gid_t gid) const override {
    if (!scan_complete) return std::nullopt;
    const auto it = primary.find(gid);
    return it == primary.end() ? std::vector<std::string>{} : it->second;
  }
};

struct stat file_of(uid_t uid, gid_t gid, mode_t mode) {
  struct stat st {};
  st.st_uid = uid;
  st.st_gid = gid;
  st.st_mode = S_IFREG | mode;
  return st;
}

}  // namespace

TEST_CASE("a group-writable file is safe only when its group holds nobody but the owner", "[files][permissions]") {
  const uid_t me = ::geteuid();
  constexpr gid_t kGroup = 4242;
  FakeAccounts accounts;
  accounts.users[me] = {"alice", kGroup};
  accounts.listed[kGroup] = {};
  accounts.primary[kGroup] = {"alice"};
  const auto unsafe = [&](mode_t mode) { return host::unsafe_permissions(file_of(me, kGroup, mode), "the file", accounts); };

  SECTION("only the owner: private") {
    CHECK_FALSE(unsafe(0664));
    accounts.listed[kGroup] = {"alice"};  // listing the owner changes nothing
    CHECK_FALSE(unsafe(0664));
  }
  SECTION("a supplementary member") {
    accounts.listed[kGroup] = {"alice", "bob"};
    CHECK(unsafe(0664) == "the file is writable by other users (mode 0664); run chmod go-w on it");
    CHECK_FALSE(unsafe(0644));  // without group write, members do not matter
  }
  SECTION("a user whose primary group it is, listed nowhere in the group file") {
    accounts.primary[kGroup] = {"alice", "carol"};
    CHECK(unsafe(0664) == "the file is writable by other users (mode 0664); run chmod go-w on it");
    CHECK(host::unsafe_permissions(file_of(me, kGroup, 0775 | S_IFDIR), "its directory /srv", accounts) ==
          "its directory /srv is writable by other users (mode 0775); run chmod go-w on it");
  }
  SECTION("the users could not all be scanned") {
    accounts.scan_complete = false;
    CHECK(unsafe(0664));
  }
  SECTION("an unknown group or owner, or a group that is not the owner's own") {
    accounts.listed.erase(kGroup);
    CHECK(unsafe(0664));
    accounts.listed[kGroup] = {};
    accounts.users[me].primary_group = kGroup + 1;
    CHECK(unsafe(0664));
    accounts.users.erase(me);
    CHECK(unsafe(0664));
  }
  SECTION("writable by others, or owned by someone else, whatever the group") {
    CHECK(unsafe(0646));
    if (me != 12345) {
      CHECK_THAT(*host::unsafe_permissions(file_of(12345, kGroup, 0644), "the file", accounts),
                 Catch::Contains("is owned by uid 12345"));
    }
  }
}

TEST_CASE("the system's databases: root's group holds only root here, and primary members are found", "[files][permissions]") {
  const host::AccountDirectory& system = host::system_accounts();
  const auto root = system.user(0);
  REQUIRE(root);
  CHECK(root->name == "root");
  // On this machine (and most) nobody else is in root's group: a root-owned,
  // group-writable file of group root is private, through the real lookups.
  const auto primary = system.primary_members(root->primary_group);
  REQUIRE(primary);
  const auto listed = system.listed_members(root->primary_group);
  REQUIRE(listed);
  INFO("primary members of gid " << root->primary_group << ": " << primary->size() << ", listed: " << listed->size());
  const bool only_root = std::all_of(primary->begin(), primary->end(), [](const std::string& n) { return n == "root"; }) &&
                         std::all_of(listed->begin(), listed->end(), [](const std::string& n) { return n == "root"; });
  const auto why = host::unsafe_permissions(file_of(0, root->primary_group, 0664), "the file");
  CHECK(why.has_value() == !only_root);
  CHECK(std::find(primary->begin(), primary->end(), "root") != primary->end());

  // A group others have as their primary group, which the group file does
  // not list: the scan finds them (Debian's nobody is in nogroup this way).
  if (const passwd* nobody = ::getpwnam("nobody"); nobody != nullptr) {
    const auto members = system.primary_members(nobody->pw_gid);
    REQUIRE(members);
    CHECK(std::find(members->begin(), members->end(), "nobody") != members->end());
  }
}

TEST_CASE("a snapshot is written only if a boot can read it back: the same max_state_bytes both ways",
          "[files][snapshot]") {
  test::TempDir dir;
  host::SnapshotStore store(dir.path(), 1024);
  const host::StateBlob fits{"kv", api::ModuleVersion{1}, api::SchemaVersion{1}, std::string(1024, 'a')};
  REQUIRE(store.save(fits).ok());
  auto loaded = store.load("kv");
  REQUIRE(loaded.ok());
  REQUIRE(loaded.value().has_value());
  CHECK(loaded.value()->bytes == fits.bytes);

  const host::StateBlob larger{"kv", api::ModuleVersion{1}, api::SchemaVersion{1}, std::string(1025, 'b')};
  auto refused = store.save(larger);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().to_string() ==
        "kv v1 (" + store.path_of("kv").string() +
            "): snapshot: state of 1025 bytes is larger than host.max_state_bytes (1024), which a boot could not read "
            "back: not written, the previous snapshot stands; raise host.max_state_bytes");
  // The previous snapshot stands, readable.
  loaded = store.load("kv");
  REQUIRE(loaded.ok());
  CHECK(loaded.value()->bytes == fits.bytes);
}
