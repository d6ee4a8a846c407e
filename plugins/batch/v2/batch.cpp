// batch v2 (schema 2): the checkpoint is the next CHUNK, and results are
// indexed by chunk with a count of how many times each was recorded. Reads
// schema 1 (an upgrade from v1: the checkpoint is converted, so a running
// job continues where v1 left it) and writes it (a downgrade to v1).
#include <algorithm>
#include <limits>

#include "../common/module.hpp"

namespace batch {

struct V2 {
  using State = StateV2;
  using Job = JobV2;
  static constexpr molt::api::ModuleVersion kVersion{2};
  static constexpr std::string_view kCheckpointName = "next_chunk";

  static Job make_job(const StartParams& params) { return Job{params.items, params.chunk, params.pace_ms, 0, {}, {}}; }

  static std::uint64_t checkpoint(const Job& job) { return job.next_chunk; }
  static std::uint64_t chunks_done(const Job& job) { return job.next_chunk; }

  static Tally tally(const Job& job) {
    Tally tally;
    for (std::size_t k = 0; k < job.sums.size(); ++k) {
      tally.recorded += job.applied[k];
      tally.duplicates += job.applied[k] > 1 ? job.applied[k] - 1 : 0;
      tally.checksum += job.sums[k] * job.applied[k];  // each recording counts, mod 2^64
    }
    return tally;
  }

  static void make_room(Job& job) {
    detail::reserve_for(job.sums, job.next_chunk + 1);
    detail::reserve_for(job.applied, job.next_chunk + 1);
  }

  /// Within the capacity make_room reserved: does not allocate, cannot throw.
  static void record(Job& job, std::uint64_t index, std::uint64_t sum) {
    if (job.sums.size() <= index) {
      job.sums.resize(index + 1);
      job.applied.resize(index + 1);
    }
    job.sums[index] = sum;
    ++job.applied[index];
    job.next_chunk = index + 1;  // last: see BatchModule::run_job_step
  }

  static void save(molt::api::StateWriter& out, const molt::api::SaveTarget& target, const State& state) {
    if (target.schema == State::kSchema) return out.write(state);
    if (target.schema != StateV1::kSchema) throw molt::api::UnknownSchema(target.schema, State::kSchema);
    StateV1 down;
    for (const auto& [name, job] : state.jobs) down.jobs.emplace(name, to_v1(job));
    out.write(down);
  }

  static void load(molt::api::StateReader& in, const molt::api::Migration& migration, State& state) {
    if (migration.from_schema == State::kSchema) return in.read(state);
    if (migration.from_schema != StateV1::kSchema)
      throw molt::api::UnknownSchema(migration.from_schema, State::kSchema);
    StateV1 old;
    in.read(old);  // checks schema 1's invariants: checkpoint and results on chunk boundaries
    state.jobs.clear();
    for (const auto& [name, job] : old.jobs) state.jobs.emplace(name, from_v1(name, job));
  }

 private:
  /// Upgrade: the item checkpoint becomes a chunk checkpoint, and the pairs
  /// are counted per chunk, so a chunk recorded twice in v1 is still recorded
  /// twice (applied 2) in v2, and the checksum is unchanged.
  static Job from_v1(const std::string& name, const JobV1& old) {
    Job job{old.items, old.chunk, old.pace_ms, 0, {}, {}};
    // Rounded up: the checkpoint is a multiple of chunk, or the item count
    // once the last chunk is done, and that last chunk may be short (10
    // items in chunks of 3: next_item 10 means all 4 chunks are done, so
    // next_chunk is 4, not 10 / 3 = 3).
    job.next_chunk = chunk_count(old.next_item, old.chunk);
    std::uint64_t size = 0;
    for (const auto& result : old.results) size = std::max(size, result.first / old.chunk + 1);
    job.sums.resize(size);  // at most the chunk count: StateV1 refused results past the last item
    job.applied.resize(size);
    for (const auto& [first, sum] : old.results) {
      const std::uint64_t k = first / old.chunk;
      if (job.applied[k] > 0 && job.sums[k] != sum)
        detail::refuse(name, "chunk " + std::to_string(k) + " was recorded with two different sums, " +
                                 std::to_string(job.sums[k]) + " and " + std::to_string(sum) +
                                 "; v2 keeps one sum per chunk");
      if (job.applied[k] == std::numeric_limits<std::uint32_t>::max())
        detail::refuse(name, "chunk " + std::to_string(k) + " was recorded more than 2^32-1 times");
      job.sums[k] = sum;
      ++job.applied[k];
    }
    return job;
  }

  /// Downgrade: one pair per recording, in chunk order, so duplicates
  /// survive the round trip v2 -> v1 -> v2.
  static JobV1 to_v1(const Job& job) {
    JobV1 old{job.items, job.chunk, job.pace_ms, std::min(job.next_chunk * job.chunk, job.items), {}};
    old.results.reserve(tally(job).recorded);
    for (std::size_t k = 0; k < job.sums.size(); ++k)
      for (std::uint32_t n = 0; n < job.applied[k]; ++n) old.results.emplace_back(k * job.chunk, job.sums[k]);
    return old;
  }
};

using BatchV2 = BatchModule<V2>;

}  // namespace batch

MOLT_MODULE(batch::BatchV2)
