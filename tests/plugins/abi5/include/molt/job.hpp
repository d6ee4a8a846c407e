// Long-running work, run by the host in steps.
//
// Modules own no threads. A module that has long work to do (an export, a
// reindex, a batch) starts a named job with Context::start_job; the host then
// calls Module::run_job_step(name, step) again and again, on its job workers,
// each call admitted like a request (one at a time with the module's other
// calls in CallMode::Serial; alongside them in Concurrent), until a step says
// the job is finished. One job's steps never overlap each other.
//
// A step is the unit of progress and of safety:
//   - between two steps the module may be paused, upgraded, snapshotted, or
//     the host restarted: a step boundary is the only place that happens;
//   - the job's checkpoint (where it is, what it has produced) lives in the
//     module's state, so it migrates with the state and is in every snapshot;
//   - the host's record of the job (running, finished, failed, cancelled,
//     progress, times) is saved with the state, at the same moment.
// Hence a step whose effects are all in the module's state is applied exactly
// once, across upgrades and restarts, even after kill -9 (the host then goes
// back to the last snapshot: the state and the job record together). A step
// with effects outside the state (a file written, a message sent) may run
// again after a crash: make those idempotent. See docs/jobs.md.
//
// Rules for a step: keep it short (well under the host's quiesce timeout, or
// an upgrade waiting for it fails); change the state only once nothing can
// throw any more (a step that throws is not retried: the job is marked failed
// with the reason, and the state must still be as before the step).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace molt::api {

/// What one step reports back to the host. The host fills nothing in; the
/// module sets what applies.
struct JobStep {
  /// Progress, in the module's own units of work (items, chunks, bytes), for
  /// `moltctl jobs`: done so far, out of total (0 when unknown).
  std::uint64_t done = 0;
  std::uint64_t total = 0;
  /// Set by the step that completes the job: the host calls no more steps.
  bool finished = false;
  /// When finished, a one-line outcome shown by `moltctl jobs` (optional).
  std::string summary;
  /// Asks the host to wait this long before the next step, e.g. to limit the
  /// load a background job puts on the service. The worker is free meanwhile.
  std::chrono::milliseconds pause{0};
};

}  // namespace molt::api
