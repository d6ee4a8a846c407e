#include <fstream>
#include <sstream>

#include <catch2/catch.hpp>

#include "molt/host/state/buffers.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/state.hpp"
#include "test_support.hpp"

#include <boost/serialization/map.hpp>
#include <boost/serialization/string.hpp>

using namespace molt;
namespace fs = std::filesystem;

namespace {
host::StateBlob sample() { return host::StateBlob{"counter", api::ModuleVersion{2}, api::SchemaVersion{2}, "\x01\x02state\n\x00bytes"}; }

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
}  // namespace

TEST_CASE("a state archive round-trips header and bytes", "[state]") {
  const auto blob = sample();
  const std::string file = host::encode_state_file(blob);
  CHECK(file.substr(0, file.find('\n')).find(R"("module":"counter")") != std::string::npos);
  auto back = host::decode_state_file(file, 1 << 20);
  REQUIRE(back.ok());
  CHECK(back->module == "counter");
  CHECK(back->version.value == 2);
  CHECK(back->schema.value == 2);
  CHECK(back->bytes == blob.bytes);
}

TEST_CASE("a damaged state archive is refused with the reason", "[state]") {
  const std::string file = host::encode_state_file(sample());
  SECTION("truncated") {
    auto r = host::decode_state_file(file.substr(0, file.size() - 3), 1 << 20);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().reason, Catch::Contains("truncated"));
  }
  SECTION("a byte altered") {
    std::string altered = file;
    altered.back() ^= 1;
    auto r = host::decode_state_file(altered, 1 << 20);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().reason, Catch::Contains("checksum"));
  }
  SECTION("not an archive") {
    auto r = host::decode_state_file("hello world\n", 1 << 20);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().reason, Catch::Contains("not a state archive"));
  }
  SECTION("no header line at all") {
    auto r = host::decode_state_file(std::string(10000, 'x'), 1 << 20);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().reason, Catch::Contains("no header line"));
  }
  SECTION("larger than the limit") {
    auto r = host::decode_state_file(file, 4);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().reason, Catch::Contains("more than the limit"));
  }
}

TEST_CASE("state files are written atomically and read back; errors name the file", "[state]") {
  test::TempDir dir;
  const fs::path path = dir.path() / "counter.molt";
  REQUIRE(host::write_state_file(path, sample()).ok());
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);  // no temp file left
  auto back = host::read_state_file(path, 1 << 20);
  REQUIRE(back.ok());
  CHECK(back->bytes == sample().bytes);

  std::ofstream(path, std::ios::binary | std::ios::trunc) << slurp(path).substr(0, 20);
  auto broken = host::read_state_file(path, 1 << 20);
  REQUIRE_FALSE(broken.ok());
  CHECK_THAT(broken.error().to_string(), Catch::Contains(path.string()));
}

TEST_CASE("StringSink grows past its first block and stops at its limit", "[state]") {
  host::StringSink sink(90000);
  const std::string chunk(3000, 'a');
  for (int i = 0; i < 30; ++i) REQUIRE(sink.sputn(chunk.data(), chunk.size()) == 3000);
  CHECK(sink.size() == 90000);
  CHECK(sink.sputn(chunk.data(), chunk.size()) == 0);
  CHECK(sink.over_limit());
  CHECK(sink.take() == std::string(90000, 'a'));
}

TEST_CASE("StateWriter and StateReader round-trip through the host's buffers", "[state]") {
  std::map<std::string, std::string> value{{"a", "1"}, {"b", std::string(5000, 'z')}};
  host::StringSink sink(1 << 20);
  api::StateWriter writer(sink);
  writer.write(value);
  writer.write(std::string("second archive"));
  const std::string bytes = sink.take();

  host::ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  CHECK(reader.remaining() == bytes.size());
  std::map<std::string, std::string> back;
  std::string second;
  reader.read(back);
  CHECK(reader.remaining() == source.remaining());
  CHECK(reader.remaining() < bytes.size());
  reader.read(second);
  CHECK(back == value);
  CHECK(second == "second archive");
  CHECK(source.remaining() == 0);
  CHECK(reader.remaining() == 0);
}

namespace {

/// `bytes` with the 8-byte little-endian length `from` (which must occur
/// exactly once) replaced by `to`.
std::string with_length(std::string bytes, std::uint64_t from, std::uint64_t to) {
  const std::string old(reinterpret_cast<const char*>(&from), sizeof from);
  const auto at = bytes.find(old);
  REQUIRE(at != std::string::npos);
  REQUIRE(bytes.find(old, at + 1) == std::string::npos);
  bytes.replace(at, sizeof to, reinterpret_cast<const char*>(&to), sizeof to);
  return bytes;
}

template <class T>
std::string archive_of(const T& value) {
  host::StringSink sink(1 << 20);
  api::StateWriter(sink).write(value);
  return sink.take();
}

}  // namespace

TEST_CASE("StateReader refuses a string longer than the bytes left, before allocating it", "[state]") {
  const std::string bytes = with_length(archive_of(std::string(1234, 'x')), 1234, 1ull << 40);
  host::ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  std::string back;
  CHECK_THROWS_WITH(reader.read(back), Catch::Contains("declares 1099511627776 bytes in a string") &&
                                           Catch::Contains("bytes left can hold"));
  CHECK(back.capacity() < 4096);
}

TEST_CASE("StateReader refuses a container with more elements than bytes left", "[state]") {
  const std::map<std::string, std::string> value{{"a", "1"}, {"b", "2"}, {"c", "3"}};
  const std::string bytes = with_length(archive_of(value), 3, 1ull << 27);
  host::ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  std::map<std::string, std::string> back;
  CHECK_THROWS_AS(reader.read(back), api::StateTooShort);
}

TEST_CASE("expect_items checks a hand-written count against the bytes left", "[state]") {
  const std::string bytes = archive_of(std::uint64_t{5});
  host::ViewSource source(bytes);
  api::StateArchive archive(source, bytes.size());
  std::uint64_t n = 0;
  archive >> n;
  CHECK(n == 5);
  CHECK(archive.remaining() == 0);
  CHECK_NOTHROW(api::expect_items(archive, 0));
  CHECK_THROWS_AS(api::expect_items(archive, 1), api::StateTooShort);
}

TEST_CASE("Request decodes query parameters and finds headers case-insensitively", "[api]") {
  api::Request r = test::request("GET", "/counter?key=a%20b&plus=x+y&flag&key=second");
  r.headers.push_back({"Content-Type", "text/plain"});
  CHECK(r.query_param("key") == "a b");
  CHECK(r.query_param("plus") == "x y");
  CHECK(r.query_param("flag") == "");
  CHECK_FALSE(r.query_param("missing").has_value());
  CHECK(r.header("content-type") == "text/plain");
  CHECK_FALSE(r.header("accept").has_value());
  CHECK(api::percent_decode("%zz%4") == "%zz%4");
}

TEST_CASE("an Error prints as one line naming module, version, file, phase and reason", "[error]") {
  const host::Error e{"kv", api::ModuleVersion{2}, "plugins/kv-2.so", host::Phase::Migrate,
                      "state schema 3 unknown, newest known is 2"};
  CHECK(e.to_string() == "kv v2 (plugins/kv-2.so): migrate: state schema 3 unknown, newest known is 2");
  CHECK(host::Error{{}, {}, "x.so", host::Phase::Load, "empty file"}.to_string() == "x.so: load: empty file");
}
