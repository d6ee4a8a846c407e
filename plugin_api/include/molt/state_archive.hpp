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
//     elements than bytes left.
// Counts a module writes by hand ("n, then n entries") are the module's to
// check, with molt::api::expect_items(ar, n, min_bytes_each) before it
// reserves or loops (see docs/plugin-api.md, "Reading untrusted state").
#pragma once

#include <cstdint>
#include <ios>
#include <stdexcept>
#include <streambuf>
#include <string>

#include <boost/archive/binary_iarchive_impl.hpp>
#include <boost/archive/detail/register_archive.hpp>
#include <boost/archive/impl/archive_serializer_map.ipp>
#include <boost/archive/impl/basic_binary_iarchive.ipp>
#include <boost/archive/impl/basic_binary_iprimitive.ipp>
#include <boost/serialization/array_optimization.hpp>
#include <boost/serialization/collection_size_type.hpp>

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
    expect(static_cast<std::uint64_t>(count), 1, "elements in a container");
  }

 private:
  std::streambuf& source_;
  std::uint64_t size_;
  std::uint64_t start_;
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
