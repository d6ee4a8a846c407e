// The state of the `stash` test module (StatefulModule): its definition is
// hashed into the layout fingerprint (STATE_HEADERS in CMakeLists.txt).
// Nothing is counted by hand: StateArchive checks the maps' counts and the
// strings' lengths against the bytes left, and a map grows per element read.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <boost/serialization/map.hpp>
#include <boost/serialization/string.hpp>

namespace stash {

struct State {
  std::map<std::string, std::string> items;
  std::map<std::uint64_t, std::string> names;  ///< per connection: NAME sets it, WHO reads it
  std::uint64_t ticks = 0;                     ///< timer "tick" firings

  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & items;
    ar & names;
    ar & ticks;
  }
};

}  // namespace stash
