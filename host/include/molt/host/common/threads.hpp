// The host's threads have names, so that `top -H`, `perf sched` and a
// debugger tell them apart (docs/operations.md, "moltd's threads").
#pragma once

namespace molt::host {

/// Names the calling thread (at most 15 characters are kept).
void name_this_thread(const char* name) noexcept;

}  // namespace molt::host
