// batch v1 (schema 1): the checkpoint is the next item to process, and each
// recorded chunk result is a (first item, sum) pair in recording order.
// Reads and writes schema 1 only.
#include <algorithm>

#include "../common/module.hpp"

namespace batch {

struct V1 {
  using State = StateV1;
  using Job = JobV1;
  static constexpr molt::api::ModuleVersion kVersion{1};
  static constexpr std::string_view kCheckpointName = "next_item";

  static Job make_job(const StartParams& params) { return Job{params.items, params.chunk, params.pace_ms, 0, {}}; }

  static std::uint64_t checkpoint(const Job& job) { return job.next_item; }

  static std::uint64_t chunks_done(const Job& job) {
    return job.next_item == job.items ? chunk_count(job.items, job.chunk) : job.next_item / job.chunk;
  }

  static Tally tally(const Job& job) {
    Tally tally;
    tally.recorded = job.results.size();
    for (const auto& result : job.results) tally.checksum += result.second;
    // Duplicates: recordings beyond the first of their chunk. v1 records in
    // chunk order, so first items normally strictly increase and there are
    // none; only otherwise is it worth sorting a copy.
    const auto not_increasing = [](const auto& a, const auto& b) { return a.first >= b.first; };
    if (std::adjacent_find(job.results.begin(), job.results.end(), not_increasing) == job.results.end()) return tally;
    std::vector<std::uint64_t> firsts;
    firsts.reserve(job.results.size());
    for (const auto& result : job.results) firsts.push_back(result.first);
    std::sort(firsts.begin(), firsts.end());
    const auto distinct = static_cast<std::uint64_t>(std::unique(firsts.begin(), firsts.end()) - firsts.begin());
    tally.duplicates = tally.recorded - distinct;
    return tally;
  }

  static void make_room(Job& job) { detail::reserve_for(job.results, job.results.size() + 1); }

  /// Within the capacity make_room reserved: does not allocate, cannot throw.
  static void record(Job& job, std::uint64_t index, std::uint64_t sum) {
    job.results.emplace_back(index * job.chunk, sum);
    job.next_item = std::min((index + 1) * job.chunk, job.items);  // last: see BatchModule::run_job_step
  }

  static void save(molt::api::StateWriter& out, const molt::api::SaveTarget& target, const State& state) {
    molt::api::save_one_schema(out, target, State::kSchema, state);
  }

  static void load(molt::api::StateReader& in, const molt::api::Migration& migration, State& state) {
    molt::api::load_one_schema(in, migration, State::kSchema, state);
  }
};

using BatchV1 = BatchModule<V1>;

}  // namespace batch

MOLT_MODULE(batch::BatchV1)
