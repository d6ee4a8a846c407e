// Saving and loading a module's state, and what a migration is told.
//
// State crosses versions as a Boost.Serialization binary archive. Keep the
// state a plain value type (structs, std::map, std::vector, std::string,
// integers) with a `serialize` member; do not use BOOST_CLASS_EXPORT or
// polymorphic pointers in it: export registrations are process-global, and
// after the image that registered them unloads they point into unmapped
// memory. See docs/plugin-api.md.
#pragma once

#include <istream>
#include <streambuf>

#include <boost/archive/binary_oarchive.hpp>

#include "molt/state_archive.hpp"
#include "molt/types.hpp"

namespace molt::api {

/// What `Module::save_state` must write.
struct SaveTarget {
  /// The schema to write. Equal to the module's own schema, except on a
  /// downgrade, where it is the older version's schema: the newer version
  /// converts its state down before the older code is loaded.
  SchemaVersion schema;
  Direction direction = Direction::Same;
  Values extra;  ///< the upgrade's extra arguments
};

/// What `Module::load_state` reads: Erlang's code_change(OldVsn, State, Extra).
struct Migration {
  SchemaVersion from_schema;   ///< schema the archive was written in
  ModuleVersion from_version;  ///< module version that wrote it
  Direction direction = Direction::Same;
  Values extra;  ///< the upgrade's extra arguments
};

/// Where a module writes its state. The bytes go to the host; the archive
/// lives only inside the call, in the module's own code.
class StateWriter {
 public:
  explicit StateWriter(std::streambuf& sink) noexcept : sink_(sink) {}

  /// Writes `value` as one binary archive. May be called more than once; a
  /// reader must then call `read` the same number of times, in order.
  template <class T>
  void write(const T& value) {
    boost::archive::binary_oarchive archive(sink_, boost::archive::no_codecvt);
    archive << value;
  }

 private:
  std::streambuf& sink_;
};

/// Where a module reads state from. The state may come from a file (a
/// snapshot, `moltctl restore`): read it as untrusted input. Every `read`
/// goes through a StateArchive, which refuses strings and containers longer
/// than the bytes left; counts the module writes itself are checked with
/// expect_items (state_archive.hpp) or `remaining()`.
class StateReader {
 public:
  /// `source` holds at most `size` bytes of state from its current position
  /// (exactly `size` when known, else an upper bound). The host's sources
  /// tell their position, so `remaining()` shrinks as bytes are read.
  StateReader(std::streambuf& source, std::uint64_t size) noexcept : source_(source), size_(size), start_(detail::read_position(source)) {}

  /// Reads one archive written by `StateWriter::write`. Throws
  /// boost::archive::archive_exception on malformed input and StateTooShort
  /// on a length or count the rest of the input cannot hold; the host turns
  /// either into a failed migration.
  template <class T>
  void read(T& value) {
    StateArchive archive(source_, remaining());
    archive >> value;
  }

  /// Bytes of the state not read yet (an upper bound while the old version
  /// is still writing it). A container of N elements needs at least N bytes:
  /// check a count against this before allocating for it.
  [[nodiscard]] std::uint64_t remaining() const {
    return detail::bytes_left(size_, start_, detail::read_position(source_));
  }

 private:
  std::streambuf& source_;
  std::uint64_t size_;
  std::uint64_t start_;
};

}  // namespace molt::api
