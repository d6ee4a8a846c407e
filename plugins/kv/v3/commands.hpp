#pragma once

#include "../common/commands.hpp"

namespace kv {
/// GETDEL and TYPE.
void add_v3_commands(CommandTable& table);
}  // namespace kv
