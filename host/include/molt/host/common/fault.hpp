// Test-only fault injection: crash the process at a named point.
//
// When the environment variable MOLT_FAULT names a point (e.g.
// "upgrade.resume" or "write.before-rename"), the process kills itself with
// SIGKILL on reaching it: the fault tests use this to check that a crash at
// any moment of an upgrade or a snapshot loses nothing that was acknowledged.
// MOLT_FAULT=name:N kills on the N-th time the point is reached;
// MOLT_FAULT=name:N@text counts only the times its subject (for the write.*
// points, the file written) contains `text`, e.g. "write.before-rename@kv.molt".
// Without the variable, a point costs one comparison.
#pragma once

#include <string_view>

namespace molt::host {

void fault_point(std::string_view name, std::string_view subject = {}) noexcept;

}  // namespace molt::host
