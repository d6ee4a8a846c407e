// The batch job's arithmetic, shared by every version: the value of a work
// item, the sum of a chunk, and the tally of recorded results that the HTTP
// answers and the job's summary report. Integration tests recompute the same
// numbers independently, so this is the specification, not a detail:
//
//   item i has value splitmix64(i);
//   chunk k covers items [k*C, min((k+1)*C, N)), its result is the sum of
//   their values (mod 2^64);
//   the job's checksum is the sum (mod 2^64) of every RECORDED chunk result,
//   so a chunk recorded twice, or skipped, changes it.
#pragma once

#include <cstdint>

namespace batch {

/// The value of work item `i` (Steele, Lea and Flood's SplitMix64 finaliser).
constexpr std::uint64_t splitmix64(std::uint64_t i) noexcept {
  std::uint64_t z = i + 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/// The result of chunk `index` of a job of `items` items in chunks of
/// `chunk`: the sum of its items' values. Precondition: index < chunk_count.
std::uint64_t chunk_sum(std::uint64_t items, std::uint64_t chunk, std::uint64_t index) noexcept;

/// What a job's recorded results add up to.
struct Tally {
  std::uint64_t recorded = 0;    ///< chunk results recorded, repeats included
  std::uint64_t duplicates = 0;  ///< recordings beyond the first of their chunk; 0 when each chunk is recorded once
  std::uint64_t checksum = 0;    ///< sum of every recorded result, mod 2^64
};

}  // namespace batch
