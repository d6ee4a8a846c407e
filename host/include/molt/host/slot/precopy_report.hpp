// What pre-copy (slot/precopy.hpp) is told and what it reports: plain data,
// for the slot's options, the upgrade report and the configuration.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "molt/transfer.hpp"

namespace molt::host {

struct PrecopyOptions {
  bool enabled = true;  ///< host.precopy = "auto" (else "never": stop-and-copy always)
  /// Each call's budget: a client waits for at most one such call.
  api::TransferBudget budget{1u << 20, 1000000};
  /// A round that took no longer than this is small enough for the pause.
  std::chrono::milliseconds pause_target{10};
  unsigned max_rounds = 16;
  /// Parts sent but not yet applied by the new instance (or written to a
  /// snapshot's file), at most: memory beside the two instances, so two
  /// parts of the default budget, one applied while the next is taken
  /// (8 MiB put a migrating upgrade of a million-key kv at 2.05x its
  /// steady RSS; the new instance sets the pace anyway).
  std::uint64_t max_queued_bytes = 2ull << 20;
  /// When the rounds do not converge: move the rest in the pause (false),
  /// or refuse the upgrade (true).
  bool refuse_unconverged = false;
};

/// One round: round 0 is the whole state, each later one what changed
/// during the one before.
struct PrecopyRound {
  std::uint64_t parts = 0;    ///< calls into the old instance
  std::uint64_t entries = 0;  ///< as the module counts them (keys, removals)
  std::uint64_t bytes = 0;
  std::chrono::microseconds took{};
  std::chrono::microseconds longest_call{};  ///< the longest any client waited behind one call
  /// After the round's last call, until the new instance applied all of it:
  /// writes meanwhile go into the next round like those during the round.
  std::chrono::microseconds caught_up{};
  /// What the round cost before the next could begin: its calls and the wait
  /// for the new instance. Short enough, and the round's changes fit a pause.
  [[nodiscard]] std::chrono::microseconds with_catch_up() const noexcept { return took + caught_up; }
};

struct PrecopyReport {
  std::vector<PrecopyRound> rounds;
  /// Why the rounds stopped: "converged", "nothing changed", "did not
  /// converge: ..." (then moved in the pause, or refused).
  std::string ended;
  bool converged = false;
  PrecopyRound final;  ///< in the pause
  std::chrono::microseconds caught_up{};  ///< the rounds' caught_up, summed
};

}  // namespace molt::host
