#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <set>

#include <elf.h>
#include <grp.h>

#include <catch2/catch.hpp>

#include "molt/host/common/sha256.hpp"
#include "molt/host/loader/elf_file.hpp"
#include "molt/host/loader/loader.hpp"
#include "skip.hpp"
#include "test_support.hpp"

using namespace molt;
using test::plugin_path;
using test::test_image_path;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_file(const fs::path& path, std::string_view bytes, fs::perms mode = fs::perms(0644)) {
  std::ofstream(path, std::ios::binary) << bytes;
  fs::permissions(path, mode);
}

std::size_t files_in(const fs::path& dir) {
  if (!fs::exists(dir)) return 0;
  return static_cast<std::size_t>(std::distance(fs::directory_iterator(dir), fs::directory_iterator()));
}

/// Loads `file` expecting a refusal whose one-line message names the file
/// and contains `reason`; and checks that no image copy was left behind.
void expect_refusal(const fs::path& file, std::string_view expected_module, std::string_view reason,
                    host::LoaderOptions options = {}, std::string shown_as = {}) {
  test::TempDir images;
  options.image_dir = images.path() / "images";
  host::Loader loader(options);
  auto image = loader.load(file, expected_module);
  REQUIRE_FALSE(image.ok());
  const std::string line = image.error().to_string();
  INFO(line);
  CHECK(image.error().phase == host::Phase::Load);
  CHECK_THAT(line, Catch::Contains(shown_as.empty() ? file.string() : shown_as));
  CHECK_THAT(line, Catch::Contains(std::string(reason)));
  CHECK(line.find('\n') == std::string::npos);
  CHECK(files_in(options.image_dir) == 0);
}

/// Loads `file` (module `module`), expecting it to load.
void expect_loaded(const fs::path& file, std::string_view module) {
  test::TempDir images;
  host::Loader loader(host::LoaderOptions{images.path() / "images"});
  auto image = loader.load(file, module);
  INFO((image.ok() ? std::string() : image.error().to_string()));
  CHECK(image.ok());
}

}  // namespace

TEST_CASE("an image is loaded from a private copy, and its metadata read", "[loader]") {
  test::Harness h;
  auto image = h.loader.load(plugin_path("counter", 2), "counter");
  REQUIRE(image.ok());
  const auto& info = image.value()->info();
  CHECK(info.name == "counter");
  CHECK(info.version.value == 2);
  CHECK(info.schema.value == 2);
  CHECK(info.call_mode == api::CallMode::Serial);
  CHECK(image.value()->sha256() == host::sha256_hex(slurp(plugin_path("counter", 2))));
  CHECK(image.value()->mapped_path().parent_path() == h.dir.path() / "images");
  CHECK(test::is_mapped(image.value()->mapped_path()));
  CHECK_FALSE(test::is_mapped(plugin_path("counter", 2)));
}

TEST_CASE("loading one file twice gives two images at two paths", "[loader]") {
  test::Harness h;
  auto first = h.loader.load(plugin_path("counter", 1), "counter");
  auto second = h.loader.load(plugin_path("counter", 1), "counter");
  REQUIRE(first.ok());
  REQUIRE(second.ok());
  CHECK(first.value()->mapped_path() != second.value()->mapped_path());
  CHECK(test::is_mapped(first.value()->mapped_path()));
  CHECK(test::is_mapped(second.value()->mapped_path()));
}

TEST_CASE("an image is unmapped and its copy removed once its last instance is gone", "[loader]") {
  test::Harness h;
  auto image = h.loader.load(plugin_path("counter", 2), "counter");
  REQUIRE(image.ok());
  const fs::path copy = image.value()->mapped_path();
  auto instance = image.value()->instantiate();
  REQUIRE(instance.ok());
  image.value().reset();
  CHECK(test::is_mapped(copy));  // the instance keeps its image loaded
  instance.value().reset();
  CHECK_FALSE(test::is_mapped(copy));
  CHECK_FALSE(fs::exists(copy));
}

TEST_CASE("module images export only their three entry points and no unique symbols", "[loader][build]") {
  // Hidden visibility, the version script and -fno-gnu-unique, as set by
  // molt_add_plugin: without them two versions bind to each other's code,
  // and an image with STB_GNU_UNIQUE symbols is never unloaded.
  for (const fs::path& file : {plugin_path("counter", 1), plugin_path("counter", 2), test::probe_path(1)}) {
    INFO(file);
    const std::string bytes = slurp(file);
    auto elf = host::ElfFile::parse(bytes);
    REQUIRE(elf.ok());
    std::set<std::string> exported;
    for (const auto& symbol : elf->dynamic_symbols()) {
      if (symbol.exported()) exported.insert(symbol.name);
      CHECK(symbol.binding != STB_GNU_UNIQUE);
    }
    CHECK(exported == std::set<std::string>{"molt_module_info", "molt_module_create", "molt_module_destroy"});
  }
}

TEST_CASE("the loader refuses bad images with one line naming the file and the reason", "[loader]") {
  test::TempDir dir;
  const fs::path counter1 = plugin_path("counter", 1);

  SECTION("a file that is not a library") {
    write_file(dir.path() / "counter-9.so", "#!/bin/sh\necho not a library\n");
    expect_refusal(dir.path() / "counter-9.so", "counter", "not a shared library");
  }
  SECTION("an empty file") {
    write_file(dir.path() / "counter-9.so", "");
    expect_refusal(dir.path() / "counter-9.so", "counter", "empty file");
  }
  SECTION("a truncated file") {
    const std::string bytes = slurp(counter1);
    write_file(dir.path() / "counter-1.so", std::string_view(bytes).substr(0, bytes.size() / 2));
    expect_refusal(dir.path() / "counter-1.so", "counter", "truncated");
  }
  SECTION("a file cut inside its ELF header") {
    write_file(dir.path() / "counter-1.so", std::string_view(slurp(counter1)).substr(0, 30));
    expect_refusal(dir.path() / "counter-1.so", "counter", "truncated: the ELF header");
  }
  SECTION("a library without entry points") {
    expect_refusal(test_image_path("no-entry.so"), "counter", "missing entry point molt_module_info");
  }
  SECTION("an image built for a plugin ABI this host does not load (more in abi_test.cpp)") {
    expect_refusal(test_image_path("bad-abi.so"), "probe",
                   "built for plugin ABI 999, newer than this host's ABI " + std::to_string(api::kAbiVersion));
  }
  SECTION("an image of another module") {
    expect_refusal(counter1, "kv", "module is 'counter', expected 'kv'");
  }
  SECTION("an image that dlopen cannot load") {
    expect_refusal(test_image_path("undefined-symbol.so"), "probe",
                   "not loadable: undefined symbol: molt_test_symbol_defined_nowhere");
  }
  SECTION("a missing file") {
    expect_refusal(dir.path() / "counter-3.so", "counter", "cannot open: No such file or directory");
  }
  SECTION("a directory") {
    fs::create_directory(dir.path() / "counter-3.so");
    expect_refusal(dir.path() / "counter-3.so", "counter", "is a directory, not a regular file");
  }
  SECTION("a FIFO: refused at once, not waited on for a writer") {
    const fs::path fifo = dir.path() / "counter-3.so";
    REQUIRE(::mkfifo(fifo.c_str(), 0644) == 0);
    const auto started = std::chrono::steady_clock::now();
    host::Loader loader(host::LoaderOptions{dir.path() / "images"});
    auto refused = std::async(std::launch::async, [&] { return loader.check(fifo, "counter"); });
    if (refused.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
      const int writer = ::open(fifo.c_str(), O_WRONLY | O_NONBLOCK);  // releases a blocked open
      if (writer >= 0) ::close(writer);
      FAIL("the loader blocked in open() on a FIFO");
    }
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(2));
    const auto checked = refused.get();
    REQUIRE_FALSE(checked.ok());
    CHECK(checked.error().to_string() == "counter (" + fifo.string() + "): load: is a FIFO, not a regular file");
    expect_refusal(fifo, "counter", "is a FIFO, not a regular file");  // and load() the same way
  }
  SECTION("a socket") {
    const fs::path socket_path = dir.path() / "counter-3.so";
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket_path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    expect_refusal(socket_path, "counter", "is a socket, not a regular file");
    ::close(fd);
  }
  SECTION("a character device") {
    expect_refusal("/dev/zero", "counter", "is a character device, not a regular file");
  }
  SECTION("a path that is not valid UTF-8, shown with \\xNN for the bad bytes") {
    const fs::path odd = dir.path() / "caf\xE9-\xFF" / "counter-1.so";
    fs::create_directory(odd.parent_path());
    write_file(odd, slurp(counter1));
    expect_refusal(odd, "counter", "the path is not valid UTF-8", {}, dir.path().string() + "/caf\\xe9-\\xff/counter-1.so");
  }
  SECTION("a file larger than the limit") {
    expect_refusal(counter1, "counter", "more than the limit of 1000",
                   host::LoaderOptions{{}, /*max_image_bytes=*/1000});
  }
  SECTION("a file writable by other users") {
    write_file(dir.path() / "counter-1.so", slurp(counter1), fs::perms(0646));
    expect_refusal(dir.path() / "counter-1.so", "counter", "the file is writable by other users (mode 0646)");
  }
  SECTION("a file in a directory writable by other users") {
    const fs::path shared = dir.path() / "shared";
    fs::create_directory(shared);
    write_file(shared / "counter-1.so", slurp(counter1));
    fs::permissions(shared, fs::perms(0777));
    expect_refusal(shared / "counter-1.so", "counter", "its directory " + shared.string() + " is writable by other users");
  }
}

TEST_CASE("the loader refuses a group-writable file whose group has other members", "[loader]") {
  if (::geteuid() != 0) MOLT_SKIP("needs root to give a file another group", test::SkipInCi::Fails);
  test::TempDir dir;
  const group* nogroup = ::getgrnam("nogroup");
  REQUIRE(nogroup != nullptr);
  write_file(dir.path() / "counter-1.so", slurp(plugin_path("counter", 1)), fs::perms(0664));
  REQUIRE(::chown((dir.path() / "counter-1.so").c_str(), 0, nogroup->gr_gid) == 0);
  expect_refusal(dir.path() / "counter-1.so", "counter", "writable by other users (mode 0664)");
}

TEST_CASE("an image named through a symbolic link is loaded (operators name images)", "[loader]") {
  test::TempDir dir;
  write_file(dir.path() / "counter-1.so", slurp(plugin_path("counter", 1)));
  fs::create_symlink(dir.path() / "counter-1.so", dir.path() / "counter-current.so");
  expect_loaded(dir.path() / "counter-current.so", "counter");
}

TEST_CASE("a group-writable file of the owner's private group is accepted", "[loader]") {
  test::TempDir dir;
  write_file(dir.path() / "counter-1.so", slurp(plugin_path("counter", 1)), fs::perms(0664));
  expect_loaded(dir.path() / "counter-1.so", "counter");
}

TEST_CASE("a module whose constructor throws cannot be instantiated", "[loader]") {
  test::Harness h;
  auto image = h.loader.load(test::probe_path(4), "probe");
  REQUIRE(image.ok());
  auto instance = image.value()->instantiate();
  REQUIRE_FALSE(instance.ok());
  CHECK(instance.error().phase == host::Phase::Start);
  CHECK_THAT(instance.error().to_string(), Catch::Contains("constructor threw: probe constructor fails on purpose"));
}

TEST_CASE("check() reads an image without loading it", "[loader]") {
  test::Harness h;
  auto checked = h.loader.check(plugin_path("counter", 2), "");
  REQUIRE(checked.ok());
  CHECK(checked->info.name == "counter");
  CHECK(checked->info.version.value == 2);
  CHECK(files_in(h.dir.path() / "images") == 0);
}
