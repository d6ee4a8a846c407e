// Pre-copy: a module's state transferred while the module serves.
//
// A migrating upgrade without it stops the module for the whole of
// save_state and load_state: the pause grows with the state (500 ms at 1 M
// kv keys). A module that implements the transfer hooks (Feature::Transfer,
// in module.hpp) is upgraded the way virtual machines are live-migrated
// (Clark et al., NSDI 2005): while the old version keeps serving, the host
// asks it for its state a chunk at a time, each chunk one call through the
// module's call gate with a small budget, so a client waits at most one
// chunk; then for what changed since, round after round, while that shrinks;
// then it pauses the module only to take the last changes and the
// per-connection state. The new version reads each part as it arrives, on
// another thread, converting from the older schema entry by entry.
//
// The parts are the module's to define (the host only carries them), with
// one rule that makes the result exact: applying every part in the order it
// was written, to a fresh instance, gives the state the old version had at
// the moment it wrote the final part. So:
//   - a chunk holds entries as they are when it is written;
//   - a delta holds every entry written or removed since the transfer began
//     (or since the entries of the previous round were taken), as it is
//     now: its value, or that it is gone (deletions and expiry included);
//     a change to everything at once (FLUSHALL) is one record that clears;
//   - the final part holds every change not sent yet, and whatever is not
//     an entry (per-connection state, counters).
// Changes are recorded only between transfer_begin and transfer_end: a
// module pays nothing for them otherwise.
//
// See docs/plugin-api.md, "Pre-copy", for kv's implementation as the worked
// example.
#pragma once

#include <cstdint>

namespace molt::api {

/// How much one transfer_chunk or transfer_delta call may do: the host
/// calls it through the module's gate, so clients wait for it. Stop after
/// the entry that reaches either bound (at least one entry per call, so
/// that a transfer always advances).
struct TransferBudget {
  std::uint64_t max_bytes = 1 << 20;      ///< written by this call
  std::uint64_t max_nanoseconds = 1000000;  ///< of the module's time (steady clock)
};

/// What one transfer_chunk or transfer_delta call did.
struct TransferStep {
  std::uint64_t entries = 0;  ///< entries (or removals) written by this call
  /// transfer_chunk: every entry has been written once. transfer_delta: the
  /// round is complete (what changed before it began has been written);
  /// the next call begins a new round with what changed since.
  bool done = false;
};

/// Which part of a transfer receive_part is given.
enum class TransferPart : std::uint32_t {
  Chunk = 0,  ///< from transfer_chunk
  Delta = 1,  ///< from transfer_delta
  Final = 2,  ///< from transfer_final: the last part
};

}  // namespace molt::api
