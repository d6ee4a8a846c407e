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
#include "molt/host/release/snapshot_store.hpp"
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

TEST_CASE("valid_utf8 accepts well-formed UTF-8 only, and the rest is shown as \\xNN", "[files]") {
  CHECK(host::valid_utf8("/srv/plugins/kv-2.so"));
  CHECK(host::valid_utf8("/srv/d\xC3\xA9p\xC3\xB4t/\xE2\x82\xAC/\xF0\x9F\x98\x80.so"));  // dépôt/€/😀
  CHECK_FALSE(host::valid_utf8("/tmp/\xFF.so"));
  CHECK_FALSE(host::valid_utf8("\xC3"));                 // cut short
  CHECK_FALSE(host::valid_utf8("\xC0\xAF"));             // overlong '/'
  CHECK_FALSE(host::valid_utf8("\xE0\x80\xAF"));         // overlong, 3 bytes
  CHECK_FALSE(host::valid_utf8("\xED\xA0\x80"));         // a surrogate
  CHECK_FALSE(host::valid_utf8("\xF4\x90\x80\x80"));     // above U+10FFFF
  CHECK_FALSE(host::valid_utf8("\x80"));                 // a lone continuation byte
  CHECK(host::escape_invalid_utf8("/tmp/\xFFx\xC3\xA9\xC3.so") == "/tmp/\\xFFx\xC3\xA9\\xC3.so");
}
