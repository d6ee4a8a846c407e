// faulty's state in its two schemas (faulty.cpp).
//
// Schema 1 (v1): the items, as strings. Schema 2 (v2 and every fault
// variant): each item with the version that added it; an item converted
// from schema 1 says version 1. v2 reads both and writes both (schema 1 for
// a downgrade to v1, which loses the versions).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>

#include "molt/types.hpp"

namespace faulty {

struct StateV1 {
  static constexpr molt::api::SchemaVersion kSchema{1};
  // Read through StateArchive: the count and each length are checked
  // against the bytes left, and the vector grows as items arrive.
  std::vector<std::string> items;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & items;
  }
};

struct Item {
  std::string text;
  std::uint32_t added_by = 0;  ///< the module version that added it
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & text & added_by;
  }
};

struct StateV2 {
  static constexpr molt::api::SchemaVersion kSchema{2};
  std::vector<Item> items;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & items;
  }
};

}  // namespace faulty
