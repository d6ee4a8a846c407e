// kv v2: v1 plus keys that expire (EXPIRE, PEXPIRE, TTL, PTTL, PERSIST, SET EX/PX).
#include "../common/module.hpp"
#include "expiry.hpp"

namespace kv {

struct V2 : ExpiryTraits {
  static constexpr molt::api::ModuleVersion kVersion{2};
  static void add_commands(CommandTable& table) {
    add_core_commands(table);
    add_expiry_commands(table);
  }
};

using KvV2 = KvModule<V2>;

}  // namespace kv

MOLT_MODULE(kv::KvV2)
