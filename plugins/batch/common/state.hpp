// batch's state, one struct per schema, and the limits every job obeys. A
// released schema is never edited; a newer version keeps reading (and, for
// downgrades, writing) the older ones, so both live here.
//
//   schema 1 (batch v1): per job, the checkpoint as the next ITEM, and the
//                        results as (first item, sum) pairs in recording order
//   schema 2 (batch v2): per job, the checkpoint as the next CHUNK, and the
//                        results indexed by chunk, with a count per chunk
//
// The archive format is written by hand (counts, then fields) rather than
// with Boost's container serializers, which resize a vector or string to the
// count the archive claims before reading a byte of it. Here every count is
// checked against the job's limits first, and vectors grow only as their
// elements actually arrive, so a damaged or hostile archive is refused
// instead of making the module allocate without bound; and every count is
// checked against the bytes left in the archive first (expect_items, at the
// fewest bytes an entry takes), so a crafted count is refused before the
// first element is read. Whatever is read is checked: a loaded state
// satisfies every invariant documented below.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/serialization/split_member.hpp>

#include "molt/error.hpp"
#include "molt/state_archive.hpp"
#include "molt/types.hpp"

namespace batch {

inline constexpr std::uint64_t kMaxItems = 10'000'000'000ull;  ///< items per job
inline constexpr std::uint64_t kMaxChunk = 1'000'000;          ///< items per chunk: a step stays a few ms
inline constexpr std::uint32_t kMaxPaceMs = 60'000;            ///< pause between steps
inline constexpr std::size_t kMaxJobName = 32;

/// Job names are 1 to 32 characters of [a-z0-9_-].
constexpr bool valid_job_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxJobName) return false;
  for (const char c : name)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  return true;
}

/// ceil(items / chunk): how many chunks a job has. Precondition: chunk > 0.
constexpr std::uint64_t chunk_count(std::uint64_t items, std::uint64_t chunk) noexcept {
  return items / chunk + (items % chunk != 0 ? 1 : 0);
}

/// Schema 1: a job of batch v1.
struct JobV1 {
  std::uint64_t items = 0;    ///< 1..kMaxItems
  std::uint64_t chunk = 0;    ///< 1..kMaxChunk
  std::uint32_t pace_ms = 0;  ///< 0..kMaxPaceMs
  /// The checkpoint: the first item not yet processed. A multiple of `chunk`,
  /// or `items` once the last (possibly short) chunk is done.
  std::uint64_t next_item = 0;
  /// (first item of the chunk, its sum), in the order recorded. Each first
  /// item is a multiple of `chunk` below `items`. A chunk appears once per
  /// time it was recorded: twice would be a duplicate (see Tally).
  std::vector<std::pair<std::uint64_t, std::uint64_t>> results;

  template <class Archive>
  void write(Archive& ar) const;
  template <class Archive>
  void read(Archive& ar, const std::string& name);
};

/// Schema 2: a job of batch v2.
struct JobV2 {
  std::uint64_t items = 0;    ///< 1..kMaxItems
  std::uint64_t chunk = 0;    ///< 1..kMaxChunk
  std::uint32_t pace_ms = 0;  ///< 0..kMaxPaceMs
  std::uint64_t next_chunk = 0;  ///< the checkpoint: the first chunk not yet processed, 0..chunk_count
  /// Indexed by chunk: its sum, and how many times it was recorded (0: not
  /// recorded). Same size, at most chunk_count; a chunk past the end was not
  /// recorded. Normally the size is next_chunk: one entry per chunk passed.
  std::vector<std::uint64_t> sums;
  std::vector<std::uint32_t> applied;

  template <class Archive>
  void write(Archive& ar) const;
  template <class Archive>
  void read(Archive& ar, const std::string& name);
};

namespace detail {

// The fewest bytes one entry takes in the archive (Boost's binary format).
inline constexpr std::uint64_t kMinJobBytes = 8 + 1 + 8 + 8 + 4 + 8 + 8;  ///< name (length, 1 byte), params, checkpoint, count
inline constexpr std::uint64_t kMinResultV1Bytes = 8 + 8;                 ///< first item, sum
inline constexpr std::uint64_t kMinResultV2Bytes = 8 + 4;                 ///< sum, times applied

[[noreturn]] inline void refuse(std::string_view job, const std::string& reason) {
  throw molt::api::MigrationRefused("batch state: job '" + std::string(job) + "': " + reason);
}

/// Makes room for `size` elements, growing geometrically: a job that records
/// one chunk per step must not reallocate its results at every step.
template <class T>
void reserve_for(std::vector<T>& items, std::size_t size) {
  if (items.capacity() < size) items.reserve(std::max(size, 2 * items.capacity()));
}

template <class Archive>
void write_name(Archive& ar, const std::string& name) {
  const std::uint64_t size = name.size();
  ar & size;
  ar.save_binary(name.data(), name.size());
}

template <class Archive>
std::string read_name(Archive& ar) {
  std::uint64_t size = 0;
  ar & size;
  if (size == 0 || size > kMaxJobName)
    throw molt::api::MigrationRefused("batch state: a job name of " + std::to_string(size) + " bytes");
  std::string name(size, '\0');
  ar.load_binary(name.data(), size);
  if (!valid_job_name(name)) throw molt::api::MigrationRefused("batch state: a job name that is not [a-z0-9_-]");
  return name;
}

/// Writes what every schema's job begins with.
template <class Archive, class Job>
void write_params(Archive& ar, const Job& job) {
  ar & job.items & job.chunk & job.pace_ms;
}

/// Reads and checks what every schema's job begins with.
template <class Archive, class Job>
void read_params(Archive& ar, const std::string& name, Job& job) {
  ar & job.items & job.chunk & job.pace_ms;
  if (job.items == 0 || job.items > kMaxItems) refuse(name, "items " + std::to_string(job.items) + " out of range");
  if (job.chunk == 0 || job.chunk > kMaxChunk) refuse(name, "chunk " + std::to_string(job.chunk) + " out of range");
  if (job.pace_ms > kMaxPaceMs) refuse(name, "pace_ms " + std::to_string(job.pace_ms) + " out of range");
}

/// Reads `count` elements with `read_one`, appending each to `out` as it
/// arrives: memory follows the bytes actually in the archive, not the count
/// it claims (a truncated archive fails at its end, having allocated little).
template <class T, class ReadOne>
void read_elements(std::vector<T>& out, std::uint64_t count, ReadOne read_one) {
  out.clear();
  for (std::uint64_t i = 0; i < count; ++i) {
    reserve_for(out, out.size() + 1);
    out.push_back(read_one());
  }
}

template <class Archive, class Job>
void write_jobs(Archive& ar, const std::map<std::string, Job>& jobs) {
  const std::uint64_t count = jobs.size();
  ar & count;
  for (const auto& [name, job] : jobs) {
    write_name(ar, name);
    job.write(ar);
  }
}

template <class Archive, class Job>
void read_jobs(Archive& ar, std::map<std::string, Job>& jobs) {
  std::uint64_t count = 0;
  ar & count;
  molt::api::expect_items(ar, count, kMinJobBytes, "jobs");
  jobs.clear();
  for (std::uint64_t i = 0; i < count; ++i) {  // a map allocates per entry read: nothing to bound up front
    std::string name = read_name(ar);
    Job job;
    job.read(ar, name);
    if (jobs.contains(name)) refuse(name, "appears twice");
    jobs.emplace(std::move(name), std::move(job));
  }
}

}  // namespace detail

template <class Archive>
void JobV1::write(Archive& ar) const {
  detail::write_params(ar, *this);
  ar & next_item;
  const std::uint64_t count = results.size();
  ar & count;
  for (const auto& [first, sum] : results) ar & first & sum;
}

template <class Archive>
void JobV1::read(Archive& ar, const std::string& name) {
  detail::read_params(ar, name, *this);
  ar & next_item;
  if (next_item > items)
    detail::refuse(name, "checkpoint next_item " + std::to_string(next_item) + " is past the item count " +
                             std::to_string(items));
  if (next_item % chunk != 0 && next_item != items)
    detail::refuse(name, "checkpoint next_item " + std::to_string(next_item) + " is neither a multiple of chunk " +
                             std::to_string(chunk) + " nor the item count " + std::to_string(items));
  std::uint64_t count = 0;
  ar & count;
  // Not bounded by the chunk count: a chunk may have been recorded more than
  // once (the duplicates the checksum exposes). Bounded by the archive's size.
  molt::api::expect_items(ar, count, detail::kMinResultV1Bytes, "results");
  detail::read_elements(results, count, [&] {
    std::pair<std::uint64_t, std::uint64_t> result;
    ar & result.first & result.second;
    if (result.first >= items)
      detail::refuse(name, "a result for item " + std::to_string(result.first) + ", past the item count " +
                               std::to_string(items));
    if (result.first % chunk != 0)
      detail::refuse(name, "a result for item " + std::to_string(result.first) + ", which is not on a chunk boundary" +
                               " (chunk " + std::to_string(chunk) + ")");
    return result;
  });
}

template <class Archive>
void JobV2::write(Archive& ar) const {
  detail::write_params(ar, *this);
  ar & next_chunk;
  const std::uint64_t count = sums.size();
  ar & count;
  for (std::size_t k = 0; k < sums.size(); ++k) ar & sums[k] & applied[k];
}

template <class Archive>
void JobV2::read(Archive& ar, const std::string& name) {
  detail::read_params(ar, name, *this);
  const std::uint64_t chunks = chunk_count(items, chunk);
  ar & next_chunk;
  if (next_chunk > chunks)
    detail::refuse(name, "checkpoint next_chunk " + std::to_string(next_chunk) + " past the last chunk (" +
                             std::to_string(chunks) + " chunks)");
  std::uint64_t count = 0;
  ar & count;
  if (count > chunks)
    detail::refuse(name, "results for " + std::to_string(count) + " chunks, but the job has " + std::to_string(chunks));
  molt::api::expect_items(ar, count, detail::kMinResultV2Bytes, "results");
  applied.clear();
  detail::read_elements(sums, count, [&] {
    std::uint64_t sum = 0;
    std::uint32_t times = 0;
    ar & sum & times;
    detail::reserve_for(applied, applied.size() + 1);
    applied.push_back(times);
    return sum;
  });
}

/// Schema 1: batch v1's state, its jobs by name.
struct StateV1 {
  static constexpr molt::api::SchemaVersion kSchema{1};
  std::map<std::string, JobV1> jobs;

  template <class Archive>
  void save(Archive& ar, unsigned /*version*/) const {
    detail::write_jobs(ar, jobs);
  }
  template <class Archive>
  void load(Archive& ar, unsigned /*version*/) {
    detail::read_jobs(ar, jobs);
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

/// Schema 2: batch v2's state, its jobs by name.
struct StateV2 {
  static constexpr molt::api::SchemaVersion kSchema{2};
  std::map<std::string, JobV2> jobs;

  template <class Archive>
  void save(Archive& ar, unsigned /*version*/) const {
    detail::write_jobs(ar, jobs);
  }
  template <class Archive>
  void load(Archive& ar, unsigned /*version*/) {
    detail::read_jobs(ar, jobs);
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

}  // namespace batch
