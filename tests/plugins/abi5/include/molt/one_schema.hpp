// Saving and loading the state of a module whose state has one schema.
//
// Most modules keep one state layout for a long time: every version writes
// and reads only its own schema, and any other schema is refused with
// UnknownSchema, so the host tells the operator which version can convert
// it. These two calls are that whole rule:
//
//   void save_state(StateWriter& out, const SaveTarget& target) const override {
//     molt::api::save_one_schema(out, target, kSchema, state_);
//   }
//   void load_state(StateReader& in, const Migration& migration) override {
//     molt::api::load_one_schema(in, migration, kSchema, state_);
//   }
//
// When the layout changes, the new version writes its save_state/load_state
// by hand for both schemas (see plugins/counter/v2/counter.cpp).
#pragma once

#include "molt/error.hpp"
#include "molt/state.hpp"

namespace molt::api {

/// Writes `state` if the host asks for `schema`.
/// Throws UnknownSchema for any other schema (nothing is written).
template <class State>
void save_one_schema(StateWriter& out, const SaveTarget& target, SchemaVersion schema, const State& state) {
  if (target.schema != schema) throw UnknownSchema(target.schema, schema);
  out.write(state);
}

/// Reads `state` if it was saved in `schema`.
/// Throws UnknownSchema for any other schema (`state` is untouched), and
/// whatever StateReader::read throws for a malformed state.
template <class State>
void load_one_schema(StateReader& in, const Migration& migration, SchemaVersion schema, State& state) {
  if (migration.from_schema != schema) throw UnknownSchema(migration.from_schema, schema);
  in.read(state);
}

}  // namespace molt::api
