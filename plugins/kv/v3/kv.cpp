// kv v3: v2 plus GETDEL and TYPE. Same state as v2, built from the same
// definition (STATE_HEADERS), so 2 <-> 3 is a code-only upgrade.
#include "../common/module.hpp"
#include "../v2/expiry.hpp"
#include "commands.hpp"

namespace kv {

struct V3 : ExpiryTraits {
  static constexpr molt::api::ModuleVersion kVersion{3};
  static void add_commands(CommandTable& table) {
    add_core_commands(table);
    add_expiry_commands(table);
    add_v3_commands(table);
  }
};

using KvV3 = KvModule<V3>;

}  // namespace kv

MOLT_MODULE(kv::KvV3)
