// hello's state in schema 1, as v1 (hello.cpp) keeps it and v2 (hello_v2.cpp)
// reads and writes it: one definition, so the two cannot drift apart. Once
// released it never changes; tests/fixtures/hello/1-2, captured from a real
// v1 instance, is what proves v2 reads exactly what v1 wrote.
//
// A plain value type with a serialize() member. A saved state may come from
// a file, so it is read as untrusted input: StateArchive checks the map's
// count and every name's length against the bytes left (a count written by
// hand would need molt::api::expect_items).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <boost/serialization/map.hpp>
#include <boost/serialization/string.hpp>

namespace hello {

struct StateV1 {
  std::map<std::string, std::uint64_t> greeted;  // name -> greetings
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar & greeted;
  }
};

}  // namespace hello
