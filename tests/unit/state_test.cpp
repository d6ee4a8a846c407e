#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <list>
#include <new>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include <catch2/catch.hpp>

#include "molt/host/state/buffers.hpp"
#include "molt/host/state/part_file.hpp"
#include "molt/host/state/state_blob.hpp"
#include "molt/state.hpp"
#include "test_support.hpp"

#include <boost/archive/binary_iarchive.hpp>
#include <boost/serialization/deque.hpp>
#include <boost/serialization/list.hpp>
#include <boost/serialization/map.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/unordered_map.hpp>
#include <boost/serialization/unordered_set.hpp>
#include <boost/serialization/utility.hpp>
#include <boost/serialization/vector.hpp>

#include "../../plugins/batch/common/state.hpp"
#include "../../plugins/counter/common/state.hpp"
#include "../../plugins/kv/common/state.hpp"
#include "molt/host/common/sha256.hpp"

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

TEST_CASE("state files are written atomically and read back, and errors name the file", "[state]") {
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

/// `bytes` with the first 8-byte little-endian `from` after the text
/// `marker` replaced by `to` (for counts that also occur elsewhere).
std::string with_length_after(std::string bytes, std::string_view marker, std::uint64_t from, std::uint64_t to) {
  const auto mark = bytes.find(marker);
  REQUIRE(mark != std::string::npos);
  const std::string old(reinterpret_cast<const char*>(&from), sizeof from);
  const auto at = bytes.find(old, mark + marker.size());
  REQUIRE(at != std::string::npos);
  bytes.replace(at, sizeof to, reinterpret_cast<const char*>(&to), sizeof to);
  return bytes;
}

/// The same for the last `from` before `marker`.
std::string with_length_before(std::string bytes, std::string_view marker, std::uint64_t from, std::uint64_t to) {
  const auto mark = bytes.find(marker);
  REQUIRE(mark != std::string::npos);
  const std::string old(reinterpret_cast<const char*>(&from), sizeof from);
  const auto at = bytes.rfind(old, mark);
  REQUIRE(at != std::string::npos);
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

// --- untrusted archives: what a crafted count can make a reader allocate ------
//
// Every test below crafts an archive the way an attacker would: a real one,
// with one count or length replaced. The reader must refuse it with
// StateTooShort before allocating for the count; "no large allocation" is
// measured by counting what operator new hands out meanwhile.

namespace {

std::atomic<std::int64_t> g_live_bytes{0};
std::atomic<std::int64_t> g_peak_bytes{0};

/// The most bytes allocated at once, beyond what was allocated when it was
/// made, since it was made (this process, all threads: the tests are serial).
class AllocationPeak {
 public:
  AllocationPeak() : baseline_(g_live_bytes.load()) { g_peak_bytes.store(baseline_); }
  [[nodiscard]] std::uint64_t bytes() const { return static_cast<std::uint64_t>(g_peak_bytes.load() - baseline_); }

 private:
  std::int64_t baseline_;
};

}  // namespace

// The whole unaligned family is replaced, so that nothing allocated by one
// allocator is freed by another (AddressSanitizer checks the pairs); the
// aligned forms keep the library's, which pair among themselves.
namespace {

void* counted_malloc(std::size_t size) noexcept {
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) return nullptr;
  const auto bytes = static_cast<std::int64_t>(malloc_usable_size(p));
  const auto live = g_live_bytes.fetch_add(bytes) + bytes;
  for (auto peak = g_peak_bytes.load(); live > peak && !g_peak_bytes.compare_exchange_weak(peak, live);) {
  }
  return p;
}

void counted_free(void* p) noexcept {
  if (p == nullptr) return;
  g_live_bytes.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)));
  std::free(p);
}

}  // namespace

void* operator new(std::size_t size) {
  if (void* p = counted_malloc(size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_malloc(size); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }

namespace {

/// What reading an archive may allocate whatever it declares: Boost's own
/// bookkeeping, and a few small strings.
constexpr std::uint64_t kReaderOverhead = 64 << 10;

/// Reads `bytes` into a T as the host does (StateReader over a ViewSource),
/// expecting StateTooShort with `message` in it; returns the peak allocation.
template <class T>
std::uint64_t refused_read(const std::string& bytes, const std::string& message) {
  host::ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  const AllocationPeak peak;
  {
    T back;
    CHECK_THROWS_AS(reader.read(back), api::StateTooShort);
  }
  const std::uint64_t allocated = peak.bytes();
  host::ViewSource again(bytes);
  api::StateReader second(again, bytes.size());
  T back;
  CHECK_THROWS_WITH(second.read(back), Catch::Contains(message));
  INFO("allocated " << allocated << " bytes reading a " << bytes.size() << "-byte archive");
  CHECK(allocated < 2 * bytes.size() + kReaderOverhead);
  return allocated;
}

kv::Value string_value(std::string text) {
  kv::Value value = kv::Value::of_type(kv::Type::String);
  value.str = std::move(text);
  return value;
}

/// kv state with three string keys: key lengths 5, value lengths 7, and no
/// 8-byte field equal to 3 but the key count.
template <class State>
State three_keys() {
  State state;
  for (const char* key : {"key-a", "key-b", "key-c"}) state.keys.emplace(key, string_value("value-x"));
  return state;
}

}  // namespace

TEST_CASE("kv: a crafted schema-1 archive declaring 2^27 or 2^31 keys is refused before allocating", "[state][hostile]") {
  const std::string bytes = archive_of(three_keys<kv::StateV1>());
  for (const std::uint64_t keys : {1ull << 27, 1ull << 31}) {
    refused_read<kv::StateV1>(with_length(bytes, 3, keys), "declares " + std::to_string(keys) + " keys");
  }
}

TEST_CASE("kv: a crafted schema-2 archive declaring 2^27 or 2^31 keys or deadlines is refused", "[state][hostile]") {
  kv::StateV2 state = three_keys<kv::StateV2>();
  for (const char* key : {"k1", "k2", "k3", "k4", "k5", "k6"}) state.expires.emplace(key, 1'700'000'000'000);
  const std::string bytes = archive_of(state);
  for (const std::uint64_t n : {1ull << 27, 1ull << 31}) {
    refused_read<kv::StateV2>(with_length(bytes, 3, n), "declares " + std::to_string(n) + " keys");
    refused_read<kv::StateV2>(with_length(bytes, 6, n), "declares " + std::to_string(n) + " expiry deadlines");
  }
  // The same bytes, uncrafted, read back whole.
  host::ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  kv::StateV2 back;
  reader.read(back);
  CHECK(back.keys.size() == 3);
  CHECK(back.expires.size() == 6);
  CHECK(reader.remaining() == 0);
}

TEST_CASE("kv: a value collection or a string declaring more than the archive holds is refused", "[state][hostile]") {
  kv::StateV2 state;
  kv::Value set = kv::Value::of_type(kv::Type::Set);
  for (const char* member : {"m1", "m2", "m3", "m4", "m5", "m6"}) set.coll->set.insert(member);
  state.keys.emplace("the-set", std::move(set));
  kv::Value list = kv::Value::of_type(kv::Type::List);
  for (int i = 0; i < 9; ++i) list.coll->list.push_back("l" + std::to_string(i));
  state.keys.emplace("the-list", std::move(list));
  kv::Value hash = kv::Value::of_type(kv::Type::Hash);
  for (int i = 0; i < 11; ++i) hash.coll->hash.emplace("f" + std::to_string(i), "v");
  state.keys.emplace("the-hash", std::move(hash));
  state.keys.emplace(std::string(1234, 'k'), string_value("v"));
  const std::string bytes = archive_of(state);

  refused_read<kv::StateV2>(with_length(bytes, 6, 1ull << 40), "declares 1099511627776 set members");
  refused_read<kv::StateV2>(with_length(bytes, 9, 1ull << 31), "declares 2147483648 list members");
  refused_read<kv::StateV2>(with_length(bytes, 11, 1ull << 27), "declares 134217728 hash fields");
  refused_read<kv::StateV2>(with_length(bytes, 1234, 1ull << 40), "declares 1099511627776 bytes in a string");
  // A count the bytes left could hold at one byte each, but not at the
  // fewest bytes a member takes (8): refused as well.
  refused_read<kv::StateV2>(with_length(bytes, 11, bytes.size() / 2), "hash fields");
}

TEST_CASE("kv: an empty list, set or hash in an archive is skipped, as Redis does", "[state][hostile]") {
  // kv never keeps one; each would cost a whole Collection for 17 bytes.
  kv::StateV2 state = three_keys<kv::StateV2>();
  for (const auto type : {kv::Type::List, kv::Type::Set, kv::Type::Hash})
    state.keys.emplace("empty-" + std::to_string(static_cast<int>(type)), kv::Value::of_type(type));
  kv::Value one = kv::Value::of_type(kv::Type::Set);
  one.coll->set.insert("member");
  state.keys.emplace("a-set", std::move(one));
  const std::string bytes = archive_of(state);
  host::ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  kv::StateV2 back;
  reader.read(back);
  CHECK(reader.remaining() == 0);
  CHECK(back.keys.size() == 4);
  CHECK(back.keys.contains("a-set"));
  CHECK_FALSE(back.keys.contains("empty-2"));
}

TEST_CASE("counter: a crafted archive declaring 2^27 or 2^31 counts is refused", "[state][hostile]") {
  counter::StateV2 state;
  state.counts = {{"alpha", 10}, {"bravo", 20}, {"charlie", 30}};
  const std::string bytes = archive_of(state);
  for (const std::uint64_t n : {1ull << 27, 1ull << 31})
    refused_read<counter::StateV2>(with_length(bytes, 3, n), "declares " + std::to_string(n) + " elements in a container");
}

TEST_CASE("batch: crafted archives declaring 2^31 jobs or results are refused", "[state][hostile]") {
  SECTION("schema 1") {
    batch::StateV1 state;
    state.jobs.emplace("alpha", batch::JobV1{100, 10, 0, 30, {{0, 1001}, {10, 1002}, {20, 1003}}});
    const std::string bytes = archive_of(state);
    refused_read<batch::StateV1>(with_length_before(bytes, "alpha", 1, 1ull << 31), "declares 2147483648 jobs");
    refused_read<batch::StateV1>(with_length_after(bytes, "alpha", 3, 1ull << 31), "declares 2147483648 results");
  }
  SECTION("schema 2") {
    batch::StateV2 state;
    state.jobs.emplace("alpha", batch::JobV2{batch::kMaxItems, 1, 0, 3, {1001, 1002, 1003, 1004}, {1, 1, 1, 1}});
    const std::string bytes = archive_of(state);
    refused_read<batch::StateV2>(with_length_before(bytes, "alpha", 1, 1ull << 31), "declares 2147483648 jobs");
    refused_read<batch::StateV2>(with_length_after(bytes, "alpha", 4, 1ull << 31), "declares 2147483648 results");
  }
}

TEST_CASE("a Boost vector of strings grows as its elements arrive, not to the count declared", "[state][hostile]") {
  // Boost's own reader resizes to the count first: 32 bytes per declared
  // string. Here the count (60000) is within the bytes left (64 KiB), so only
  // the growth bound holds the allocation down.
  const std::vector<std::string> three{std::string(1 << 16, 's'), "xy", "zw"};
  const std::string bytes = archive_of(three);
  const std::string crafted = with_length(bytes, 3, 60000);
  host::ViewSource source(crafted);
  api::StateReader reader(source, crafted.size());
  const AllocationPeak peak;
  {
    std::vector<std::string> back;
    CHECK_THROWS(reader.read(back));  // the archive ends after the first string
  }
  INFO("allocated " << peak.bytes() << " bytes reading a " << crafted.size() << "-byte archive");
  CHECK(peak.bytes() < 2 * crafted.size() + kReaderOverhead);
}

TEST_CASE("a vector of numbers declaring more than the bytes left hold at their size is refused", "[state][hostile]") {
  const std::vector<std::uint64_t> numbers(1000, 7);
  const std::string crafted = with_length(archive_of(numbers), 1000, 4000);  // 4000 * 8 bytes > ~8000 left
  refused_read<std::vector<std::uint64_t>>(crafted, "declares 4000 elements in a container");
}

namespace {

struct Item {
  int number = 0;
  std::string text;
  friend bool operator==(const Item&, const Item&) = default;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & number & text;
  }
};

enum class Colour : std::uint8_t { Red, Green };

/// Every container StateArchive reads itself rather than through Boost.
struct Everything {
  std::vector<std::string> strings;
  std::vector<std::uint64_t> numbers;
  std::vector<bool> bits;
  std::vector<Item> items;
  std::vector<Colour> colours;
  std::vector<std::vector<std::string>> nested;
  std::deque<std::string> deque;
  std::list<std::pair<int, std::string>> list;
  std::map<std::string, std::vector<std::string>> map_of_vectors;
  std::unordered_set<std::string> set;
  std::unordered_map<std::string, std::vector<int>> unordered;
  friend bool operator==(const Everything&, const Everything&) = default;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & strings & numbers & bits & items & colours & nested & deque & list & map_of_vectors & set & unordered;
  }
};

Everything everything() {
  Everything e;
  e.strings = {"a", "", std::string(300, 'b')};
  e.numbers = {1, 2, 3, UINT64_MAX};
  e.bits = {true, false, true};
  e.items = {{1, "one"}, {2, "two"}};
  e.colours = {Colour::Green, Colour::Red};
  e.nested = {{"x"}, {}, {"y", "z"}};
  e.deque = {"d1", "d2"};
  e.list = {{1, "l1"}, {-2, "l2"}};
  e.map_of_vectors = {{"k", {"v1", "v2"}}, {"empty", {}}};
  e.set = {"s1", "s2", "s3"};
  e.unordered = {{"u", {1, 2}}, {"w", {}}};
  return e;
}

}  // namespace

TEST_CASE("StateArchive reads every container exactly as Boost's binary_iarchive does", "[state]") {
  const Everything written = everything();
  const std::string bytes = archive_of(written);

  host::ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  Everything ours;
  reader.read(ours);
  CHECK(reader.remaining() == 0);

  std::istringstream in(bytes);
  boost::archive::binary_iarchive boost_archive(*in.rdbuf(), boost::archive::no_codecvt);
  Everything boosts;
  boost_archive >> boosts;
  CHECK(in.rdbuf()->in_avail() == 0);

  CHECK(ours == written);
  CHECK(boosts == written);
}

TEST_CASE("an unordered container that once held many elements is read, its bucket count capped", "[state]") {
  // It saves its bucket count (200000+) with its one element: more buckets
  // than bytes. Boost would rehash to that; refusing it would lose a good state.
  std::unordered_map<std::string, std::string> sparse;
  sparse.reserve(200000);
  sparse.emplace("only", "one");
  REQUIRE(sparse.bucket_count() >= 200000);
  const std::string bytes = archive_of(sparse);
  REQUIRE(bytes.size() < 200);
  host::ViewSource source(bytes);
  api::StateReader reader(source, bytes.size());
  std::unordered_map<std::string, std::string> back;
  const AllocationPeak peak;
  reader.read(back);
  CHECK(back == sparse);
  CHECK(back.bucket_count() < 100);
  CHECK(peak.bytes() < kReaderOverhead);
}

TEST_CASE("a state file whose header nests deeply is refused, not recursed into", "[state][hostile]") {
  // Valid JSON, valid checksums: 300000 levels of arrays in the host's part.
  // Serializing it again (to check its checksum) would recurse that deep.
  const std::string deep = std::string(300000, '[') + std::string(300000, ']');
  const std::string file = R"({"format":"molt-state/1","module":"kv","version":2,"schema":2,"length":0,"sha256":")" +
                           host::sha256_hex("") + R"(","host":)" + deep + R"(,"host_sha256":")" + host::sha256_hex(deep) +
                           "\"}\n";
  auto r = host::decode_state_file(file, 1 << 20);
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error().reason, Catch::Contains("nests deeper than 16 levels"));
}

TEST_CASE("a state file's bytes are read into memory once", "[state]") {
  test::TempDir dir;
  const host::StateBlob blob{"kv", api::ModuleVersion{2}, api::SchemaVersion{2}, std::string(4 << 20, 'x')};
  REQUIRE(host::write_state_file(dir.path() / "kv.molt", blob).ok());
  const AllocationPeak peak;
  auto back = host::read_state_file(dir.path() / "kv.molt", 8 << 20);
  REQUIRE(back.ok());
  CHECK(back->bytes == blob.bytes);
  CHECK(peak.bytes() < blob.bytes.size() + kReaderOverhead);
}

namespace {

host::StateBlob kv_about() { return host::StateBlob{"kv", api::ModuleVersion{2}, api::SchemaVersion{2}, {}}; }

/// A parts body: a chunk, a delta, the final part.
std::string three_parts() {
  return host::part_frame(api::TransferPart::Chunk, 5) + "chunk" + host::part_frame(api::TransferPart::Delta, 3) +
         "new" + host::part_frame(api::TransferPart::Final, 0);
}

/// A state file with `body` as its parts (checksum and length right).
std::string parts_file(const std::string& body) {
  host::StateBlob blob = kv_about();
  blob.encoding = host::StateEncoding::Parts;
  return host::encode_state_header(blob, body.size(), host::sha256_hex(body)) + body;
}

}  // namespace

TEST_CASE("a file of pre-copy parts is written a part at a time, its header last, and read back part by part",
          "[state][parts]") {
  test::TempDir dir;
  const fs::path path = dir.path() / "kv.molt";
  const std::string host_small = R"({"jobs":[]})";
  // A host part larger than the room kept for the header: the parts move along.
  const std::string host_large = R"({"jobs":[{"name":")" + std::string(6000, 'j') + R"("}]})";
  for (const std::string& host_part : {host_small, host_large}) {
    INFO("host part of " << host_part.size() << " bytes");
    auto file = host::PartFile::create(path, kv_about(), 1 << 20);
    REQUIRE(file);
    REQUIRE_FALSE((*file)->append(api::TransferPart::Chunk, "chunk"));
    REQUIRE_FALSE((*file)->append(api::TransferPart::Delta, "new"));
    if (host_part == host_small) CHECK_FALSE(fs::exists(path));  // not in place before commit
    REQUIRE_FALSE((*file)->append(api::TransferPart::Final, ""));
    CHECK((*file)->append(api::TransferPart::Delta, "late") == "a part after the final one");
    auto size = (*file)->commit(host_part);
    INFO((size ? std::string() : size.error().to_string()));
    REQUIRE(size);
    CHECK(size.value() == three_parts().size());
    CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);  // no temporary left

    const std::string text = slurp(path);
    const auto newline = text.find('\n');
    if (host_part == host_small) {
      CHECK(newline == host::PartFile::kHeaderRoom - 1);
      CHECK(text[newline - 1] == ' ');  // padded
    } else {
      CHECK(newline > host::PartFile::kHeaderRoom);
      CHECK(text[newline - 1] == '}');
    }
    CHECK(text.substr(newline + 1) == three_parts());
    auto back = host::read_state_file(path, 1 << 20);
    REQUIRE(back);
    CHECK(back->encoding == host::StateEncoding::Parts);
    CHECK(back->module == "kv");
    CHECK(back->host == host_part);
    CHECK(back->bytes == three_parts());
    std::vector<std::pair<api::TransferPart, std::string>> parts;
    CHECK_FALSE(host::for_each_part(back->bytes, [&](api::TransferPart kind, std::string_view bytes) {
      parts.emplace_back(kind, bytes);
      return std::optional<std::string>();
    }));
    CHECK(parts == std::vector<std::pair<api::TransferPart, std::string>>{
                       {api::TransferPart::Chunk, "chunk"}, {api::TransferPart::Delta, "new"}, {api::TransferPart::Final, ""}});
  }
}

TEST_CASE("a file of parts abandoned or over its limit leaves the previous snapshot in place", "[state][parts]") {
  test::TempDir dir;
  const fs::path path = dir.path() / "kv.molt";
  REQUIRE(host::write_state_file(path, sample()));
  const std::string before = slurp(path);
  {
    auto file = host::PartFile::create(path, kv_about(), 20);
    REQUIRE(file);
    REQUIRE_FALSE((*file)->append(api::TransferPart::Chunk, "chunk"));  // 9 + 5 bytes: under the limit
    CHECK((*file)->append(api::TransferPart::Chunk, "chunk") ==
          "state is larger than host.max_state_bytes (20 bytes), which a boot could not read back: not written; "
          "raise host.max_state_bytes");
    const auto unfinished = (*file)->commit("");
    REQUIRE_FALSE(unfinished);
    CHECK(unfinished.error().to_string() == "kv v2 (" + path.string() + "): snapshot: the state has no final part: not written");
  }
  CHECK(slurp(path) == before);
  CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()) == 1);  // the temporary went
}

TEST_CASE("a file of parts that is not a sequence ending with one final part is refused with the reason",
          "[state][parts][hostile]") {
  const std::string chunk = host::part_frame(api::TransferPart::Chunk, 5) + "chunk";
  const std::string final_part = host::part_frame(api::TransferPart::Final, 0);
  std::string unknown_kind = final_part;
  unknown_kind[0] = 7;
  const std::pair<std::string, std::string> cases[] = {
      {"", "malformed parts: no parts"},
      {chunk, "malformed parts: no final part: the parts end after 1"},
      {chunk.substr(0, 4), "malformed parts: part 0 (at byte 0): 4 bytes, less than a part's frame"},
      {host::part_frame(api::TransferPart::Chunk, 1ull << 40) + "x",
       "malformed parts: part 0 (at byte 0): chunk of 1099511627776 bytes, but only 1 follow"},
      {chunk + unknown_kind, "malformed parts: part 1 (at byte 14): unknown kind 7"},
      {final_part + chunk, "malformed parts: part 0 (at byte 0): the final part is followed by 14 more bytes"},
  };
  for (const auto& [body, reason] : cases) {
    INFO(reason);
    auto r = host::decode_state_file(parts_file(body), 1 << 20);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().reason == reason);
  }
  auto good = host::decode_state_file(parts_file(chunk + final_part), 1 << 20);
  REQUIRE(good.ok());
  CHECK(good->encoding == host::StateEncoding::Parts);

  std::string other = host::encode_state_file(sample());
  other.replace(other.find(R"("length")"), 0, R"("encoding":"zstd",)");
  auto unknown = host::decode_state_file(other, 1 << 20);
  REQUIRE_FALSE(unknown.ok());
  CHECK(unknown.error().reason == R"(unknown encoding "zstd" (this moltd reads "parts" or none))");
}
