// What the host says about its own threads: a name, so that `top -H`,
// `perf sched` and a debugger tell them apart, and, for work no client waits
// for, a lower priority.
//
// Work in the background (pre-copy's new instance applying parts, a
// snapshot's second instance saving, an old instance's clean up) should not
// take the core a module's serving thread is about to wake on. On this
// project's 2-core machine it did: `perf sched timehist` showed the kv
// serving thread runnable for up to 5 ms behind another moltd thread while
// a client waited for its PING (bench (e) with a writer).
#pragma once

namespace molt::host {

/// Names the calling thread (at most 15 characters are kept).
void name_this_thread(const char* name) noexcept;

/// Lowers the calling thread's priority (nice +10; Linux: per thread) for the
/// rest of its life: only threads of their own, never one that enters a
/// module's call gate, which would keep serving calls waiting behind it.
/// Failure is ignored: the work runs as before.
void run_in_background() noexcept;

}  // namespace molt::host
