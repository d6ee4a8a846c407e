// The archive a module's state is read through: Boost's binary format, read
// so that no length or count in it can make the reader allocate more than
// the bytes that remain could describe.
//
// A state archive may come from a file (a snapshot, `moltctl restore`), and a
// file may be damaged or crafted: 93 bytes that declare 2^27 keys must be
// refused, not answered with a 2^27-bucket table. StateArchive reads exactly
// what boost::archive::binary_iarchive reads (the format is the same; an
// archive written by StateWriter reads back unchanged), and additionally
// refuses, before allocating anything:
//   - a std::string longer than the bytes left;
//   - a Boost-serialized container (std::map, std::vector, ...) with more
//     elements than bytes left (a std::vector of numbers: more than the bytes
//     left hold at sizeof(T) each).
// Where Boost would allocate for a declared count before reading a byte of
// it, StateArchive does not:
//   - std::vector, std::deque and std::list of other types (strings,
//     structs) grow as their elements arrive; Boost resizes them to the
//     count first, which for N declared strings is 32 * N bytes;
//   - an unordered container's saved bucket count is only a hint: it is
//     capped at the element count (Boost rehashes to it as read, and a table
//     that once held many more elements legitimately saves a large one).
// Counts a module writes by hand ("n, then n entries") are the module's to
// check, with molt::api::expect_items(ar, n, min_bytes_each) before it
// reserves or loops (see docs/plugin-api.md, "Reading untrusted state").
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <ios>
#include <list>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include <boost/archive/binary_iarchive_impl.hpp>
#include <boost/archive/detail/register_archive.hpp>
#include <boost/archive/impl/archive_serializer_map.ipp>
#include <boost/archive/impl/basic_binary_iarchive.ipp>
#include <boost/archive/impl/basic_binary_iprimitive.ipp>
#include <boost/serialization/array_optimization.hpp>
#include <boost/serialization/collection_size_type.hpp>
#include <boost/serialization/item_version_type.hpp>
#include <boost/serialization/nvp.hpp>

#include "molt/error.hpp"

namespace molt::api {

namespace detail {

inline constexpr std::uint64_t kUnknownPosition = UINT64_MAX;

/// Where `source` is reading, or kUnknownPosition if it cannot tell.
inline std::uint64_t read_position(std::streambuf& source) {
  const auto at = source.pubseekoff(0, std::ios::cur, std::ios::in);
  return at < 0 ? kUnknownPosition : static_cast<std::uint64_t>(static_cast<std::streamoff>(at));
}

/// Of `size` bytes from `start`, those not read by `now`.
inline std::uint64_t bytes_left(std::uint64_t size, std::uint64_t start, std::uint64_t now) {
  if (start == kUnknownPosition || now == kUnknownPosition) return size;
  return now - start >= size ? 0 : size - (now - start);
}

}  // namespace detail

/// The state declares more than it holds: a truncated or crafted archive.
class StateTooShort : public MigrationRefused {
 public:
  using MigrationRefused::MigrationRefused;
};

class StateArchive
    : public boost::archive::binary_iarchive_impl<StateArchive, char, std::char_traits<char>> {
  using Base = boost::archive::binary_iarchive_impl<StateArchive, char, std::char_traits<char>>;
  friend class boost::archive::detail::interface_iarchive<StateArchive>;
  friend class boost::archive::basic_binary_iarchive<StateArchive>;
  friend class boost::archive::load_access;

  /// Whether Boost reads a std::vector<U> as one block (U is bitwise
  /// serializable: numbers, unless a module says otherwise).
  template <class U>
  static constexpr bool kWholeBlock = Base::use_array_optimization::template apply<std::remove_const_t<U>>::type::value;

 public:
  /// Reads from `source`, which holds at most `size` bytes from its current
  /// position. `source` should tell its position (pubseekoff(0, cur, in));
  /// one that cannot is trusted to hold `size` bytes whatever has been read.
  StateArchive(std::streambuf& source, std::uint64_t size)
      : Base(source, boost::archive::no_codecvt), source_(source), size_(size), start_(detail::read_position(source)) {
    init(boost::archive::no_codecvt);
  }

  /// Bytes of the archive not read yet (at most: the end may come sooner).
  [[nodiscard]] std::uint64_t remaining() const {
    return detail::bytes_left(size_, start_, detail::read_position(source_));
  }

  /// Throws StateTooShort unless `count` items of at least `min_bytes_each`
  /// bytes each fit in what remains. Call it before reserving or looping on
  /// a count read from the archive.
  void expect(std::uint64_t count, std::uint64_t min_bytes_each, const char* what) const {
    const std::uint64_t left = remaining();
    if (min_bytes_each == 0) min_bytes_each = 1;
    if (count > left / min_bytes_each)
      throw StateTooShort("state archive declares " + std::to_string(count) + ' ' + what + ", more than the " +
                          std::to_string(left) + " bytes left can hold (truncated or altered)");
  }

  // What binary_iarchive does, with the lengths checked first.
  using Base::load;
  void load(std::string& s) {
    std::uint64_t length = 0;
    load_binary(&length, sizeof length);
    expect(length, 1, "bytes in a string");
    s.resize(static_cast<std::size_t>(length));
    if (length > 0) load_binary(s.data(), static_cast<std::size_t>(length));
  }
  template <class T>
  void load_override(T& t) {
    Base::load_override(t);
  }
  void load_override(boost::serialization::collection_size_type& count) {
    Base::load_override(count);
    const Next next = std::exchange(next_, Next{});
    if (next.kind == Next::BucketCount) {  // a hint for rehash(): at most one bucket per element
      if (count > next.elements) count = boost::serialization::collection_size_type(next.elements);
      return;
    }
    expect(static_cast<std::uint64_t>(count), next.min_bytes, "elements in a container");
    if (next.kind == Next::ElementsThenBuckets) next_ = Next{Next::BucketCount, 1, count};
  }

  // Sequences: Boost resizes them to the count, then reads. A vector of
  // numbers is read as Boost does (one block), its count checked at their
  // size first; other sequences are read by the `load` friends below.
  template <class U, class A>
  void load_override(std::vector<U, A>& t) {
    if constexpr (kWholeBlock<U>) next_ = Next{Next::Elements, sizeof(U), 0};  // the first count read is its own
    Base::load_override(t);
  }

  // Unordered containers: their count, then the bucket count to cap.
  template <class K, class T, class H, class E, class A>
  void load_override(std::unordered_map<K, T, H, E, A>& t) {
    load_unordered(t);
  }
  template <class K, class T, class H, class E, class A>
  void load_override(std::unordered_multimap<K, T, H, E, A>& t) {
    load_unordered(t);
  }
  template <class K, class H, class E, class A>
  void load_override(std::unordered_set<K, H, E, A>& t) {
    load_unordered(t);
  }
  template <class K, class H, class E, class A>
  void load_override(std::unordered_multiset<K, H, E, A>& t) {
    load_unordered(t);
  }

  // Boost calls `load(archive, container, version)` once it has read the
  // container's class record; for a StateArchive these are found first (by
  // argument-dependent lookup, and more specialized than Boost's). Elements
  // Boost builds with load_construct_data, and std::vector<bool>, stay with
  // Boost's own code, their count checked at one byte each.
  template <class U, class A>
    requires(!kWholeBlock<U> && !std::is_same_v<U, bool> && std::is_default_constructible_v<U>)
  friend void load(StateArchive& archive, std::vector<U, A>& t, const unsigned int /*version*/) {
    archive.load_sequence(t);
  }
  template <class U, class A>
    requires std::is_default_constructible_v<U>
  friend void load(StateArchive& archive, std::deque<U, A>& t, const unsigned int /*version*/) {
    archive.load_sequence(t);
  }
  template <class U, class A>
    requires std::is_default_constructible_v<U>
  friend void load(StateArchive& archive, std::list<U, A>& t, const unsigned int /*version*/) {
    archive.load_sequence(t);
  }

 private:
  /// What the next collection count read is: a container's element count
  /// (each element at least `min_bytes`), perhaps followed by an unordered
  /// container's bucket count (then capped at `elements`).
  struct Next {
    enum Kind { Elements, ElementsThenBuckets, BucketCount } kind = Elements;
    std::uint64_t min_bytes = 1;
    std::uint64_t elements = 0;
  };

  /// Boost's format for a sequence (stl::load_collection): the count, the
  /// item version (library version > 3), the elements; read into a container
  /// that grows as they arrive.
  template <class Sequence>
  void load_sequence(Sequence& t) {
    using U = typename Sequence::value_type;
    boost::serialization::collection_size_type count;
    *this >> boost::serialization::make_nvp("count", count);
    if (boost::serialization::library_version_type(3) < this->get_library_version()) {
      boost::serialization::item_version_type item_version(0);
      *this >> boost::serialization::make_nvp("item_version", item_version);
    }
    t.clear();
    if constexpr (requires { t.reserve(std::size_t{}); }) {
      // Room for what the bytes left could fill at sizeof(U) each, no more:
      // past that the vector grows as its elements arrive.
      t.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(count, remaining() / sizeof(U))));
    }
    for (std::uint64_t i = 0; i < count; ++i) {
      U item;
      *this >> boost::serialization::make_nvp("item", item);
      t.push_back(std::move(item));
      this->reset_object_address(&t.back(), &item);
    }
  }

  template <class Unordered>
  void load_unordered(Unordered& t) {
    next_ = Next{Next::ElementsThenBuckets, 1, 0};
    Base::load_override(t);
  }

  std::streambuf& source_;
  std::uint64_t size_;
  std::uint64_t start_;
  Next next_;
};

/// Before reserving room for, or looping over, `count` items read from `ar`:
/// throws StateTooShort when the rest of the archive cannot hold them at
/// `min_bytes_each` bytes each. Other archive types (a test's own) pass.
template <class Archive>
void expect_items(Archive& ar, std::uint64_t count, std::uint64_t min_bytes_each = 1, const char* what = "items") {
  if constexpr (std::is_same_v<Archive, StateArchive>) ar.expect(count, min_bytes_each, what);
}

}  // namespace molt::api

BOOST_SERIALIZATION_REGISTER_ARCHIVE(molt::api::StateArchive)
BOOST_SERIALIZATION_USE_ARRAY_OPTIMIZATION(molt::api::StateArchive)
