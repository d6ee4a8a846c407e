// The counter's state layouts, one per schema. A schema, once released, is
// never edited: newer versions keep reading (and, for downgrades, writing)
// every older one they support.
//
// Read as untrusted input (a snapshot may be crafted): nothing here is
// counted by hand. The map is read by Boost through StateArchive, which
// checks its count and every key's length against the bytes left, and a
// std::map allocates one node per element actually read.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <boost/serialization/map.hpp>
#include <boost/serialization/string.hpp>
#include <boost/serialization/version.hpp>

#include "molt/types.hpp"

namespace counter {

/// Schema 1 (counter v1): one running total.
struct StateV1 {
  static constexpr molt::api::SchemaVersion kSchema{1};
  std::uint64_t total = 0;

  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar & total;
  }
};

/// Schema 2 (counter v2): a count per key.
struct StateV2 {
  static constexpr molt::api::SchemaVersion kSchema{2};
  std::map<std::string, std::uint64_t> counts;

  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar & counts;
  }
};

}  // namespace counter

BOOST_CLASS_VERSION(counter::StateV1, 0)
BOOST_CLASS_VERSION(counter::StateV2, 0)
