// The chunk sum: the only real work a batch step does (up to a million items,
// a few milliseconds).
#include "checksum.hpp"

#include <algorithm>

namespace batch {

std::uint64_t chunk_sum(std::uint64_t items, std::uint64_t chunk, std::uint64_t index) noexcept {
  const std::uint64_t first = index * chunk;
  const std::uint64_t end = std::min(first + chunk, items);
  std::uint64_t sum = 0;
  for (std::uint64_t i = first; i < end; ++i) sum += splitmix64(i);  // wraps mod 2^64, as specified
  return sum;
}

}  // namespace batch
