// kv v3's additions: GETDEL and TYPE. Code only: the state is v2's, so an
// upgrade 2 -> 3 hands the state object over instead of serializing it.
#include "commands.hpp"

namespace kv {
namespace {

void getdel(Call& c) {
  Value* value = c.db.find(c.args[1]);
  if (value == nullptr) return c.reply.null();
  if (value->type != Type::String) return c.reply.wrong_type();
  c.reply.bulk(value->str);
  c.db.erase(c.args[1]);
}

void type(Call& c) {
  const Value* value = c.db.find(c.args[1]);
  if (value == nullptr) return c.reply.simple("none");
  static constexpr std::string_view kNames[] = {"string", "list", "set", "hash"};
  c.reply.simple(kNames[static_cast<std::size_t>(value->type)]);
}

}  // namespace

void add_v3_commands(CommandTable& table) {
  table.add(Command{"getdel", 2, getdel, true});
  table.add(Command{"type", 2, type});
}

}  // namespace kv
