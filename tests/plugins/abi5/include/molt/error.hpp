// Errors a module throws to refuse a migration.
//
// Throw these from `Module::save_state` or `Module::load_state`; the host
// catches them, rolls the upgrade back (the old version keeps serving with its
// state untouched) and reports the message as the reason. Any other exception
// does the same, but is reported as a crash of the module's code rather than a
// refusal, so prefer these for conditions the module detects itself.
#pragma once

#include <stdexcept>
#include <string>

#include "molt/types.hpp"

namespace molt::api {

/// The module refuses this migration; `what()` says why in one line.
class MigrationRefused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The state to read or write is in a schema this module version does not
/// know, e.g. a downgrade target older than the oldest schema it still reads.
class UnknownSchema : public MigrationRefused {
 public:
  UnknownSchema(SchemaVersion asked, SchemaVersion newest_known)
      : MigrationRefused("state schema " + std::to_string(asked.value) + " unknown, newest known is " +
                         std::to_string(newest_known.value)) {}
};

/// An `extra` argument of the upgrade is missing or malformed.
class BadExtraArgument : public MigrationRefused {
 public:
  BadExtraArgument(const std::string& key, const std::string& reason)
      : MigrationRefused("extra argument '" + key + "': " + reason) {}
};

}  // namespace molt::api
