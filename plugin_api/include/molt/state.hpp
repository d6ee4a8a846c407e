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

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>

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

/// Where a module reads state from.
class StateReader {
 public:
  explicit StateReader(std::streambuf& source) noexcept : source_(source) {}

  /// Reads one archive written by `StateWriter::write`. Throws
  /// boost::archive::archive_exception on malformed input; the host turns it
  /// into a failed migration.
  template <class T>
  void read(T& value) {
    boost::archive::binary_iarchive archive(source_, boost::archive::no_codecvt);
    archive >> value;
  }

 private:
  std::streambuf& source_;
};

}  // namespace molt::api
