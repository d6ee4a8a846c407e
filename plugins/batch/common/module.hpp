// The batch module class, shared by every version. It owns the HTTP answers,
// the test hooks and the shape of a job step; a version is a Traits type
// that owns its state and checkpoint:
//
//   struct Traits {
//     using State = StateV1;                 // { std::map<std::string, Job> jobs; }
//     using Job = JobV1;                     // items, chunk, pace_ms, its checkpoint, its results
//     static constexpr molt::api::ModuleVersion kVersion{1};
//     static constexpr std::string_view kCheckpointName = "next_item";
//     static Job make_job(const StartParams&);        // zero checkpoint, no results
//     static std::uint64_t checkpoint(const Job&);    // the value shown as kCheckpointName
//     static std::uint64_t chunks_done(const Job&);   // chunks the checkpoint has passed
//     static Tally tally(const Job&);
//     static void make_room(Job&);                    // may throw: reserves what record() needs
//     static void record(Job&, std::uint64_t chunk_index, std::uint64_t sum);  // must not throw
//     static void save(molt::api::StateWriter&, const molt::api::SaveTarget&, const State&);
//     static void load(molt::api::StateReader&, const molt::api::Migration&, State&);
//   };
//
// A job lives in two places: the host's record of it (running, finished,
// failed, cancelled; created by Context::start_job) and the job's parameters,
// checkpoint and results here in the state. Both are saved in the same
// snapshot and the state migrates on an upgrade, so the next version simply
// continues from the checkpoint. See docs/jobs.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "checksum.hpp"
#include "http.hpp"
#include "molt/module.hpp"
#include "state.hpp"

namespace batch {

template <class Traits>
class BatchModule final : public molt::api::StatefulModule<typename Traits::State> {
  using Job = typename Traits::Job;

 public:
  static constexpr std::string_view kName = "batch";
  static constexpr molt::api::ModuleVersion kVersion = Traits::kVersion;
  static constexpr molt::api::SchemaVersion kSchema = Traits::State::kSchema;
  static constexpr molt::api::CallMode kCallMode = molt::api::CallMode::Serial;

  void start(molt::api::Context& context) override { context_ = &context; }

  molt::api::Response handle(const molt::api::Request& request) override {
    const Route r = route(request);
    switch (r) {
      case Route::Show: return show(request);
      case Route::Start: return start_job(request);
      case Route::Pace: return pace(request);
      case Route::FailOnce: return arm_failure(request);
      case Route::SlowOnce: return arm_slow_step(request);
      case Route::NotFound:
      case Route::WrongMethod: break;
    }
    return route_error(r, request);
  }

  /// Processes exactly one chunk: the one at the checkpoint. Everything that
  /// can throw (the test hooks, reserving memory, the sum, the summary text)
  /// happens before the state changes; then the result is recorded and the
  /// checkpoint advanced, neither of which can throw. So a step either
  /// changes nothing (and the job is marked failed) or records exactly one
  /// result and moves past exactly that chunk: no chunk is skipped, none is
  /// recorded twice.
  void run_job_step(std::string_view name, molt::api::JobStep& step) override {
    const auto it = this->state().jobs.find(std::string(name));
    if (it == this->state().jobs.end())
      throw std::runtime_error("no job '" + std::string(name) + "' in batch v" + std::to_string(kVersion.value) +
                               "'s state");
    Job& job = it->second;
    const std::uint64_t chunks = chunk_count(job.items, job.chunk);
    const std::uint64_t index = Traits::chunks_done(job);
    std::string summary;
    if (index < chunks) {  // else the job is complete: report it, change nothing
      if (slow_next_step_) {
        const auto delay = *slow_next_step_;
        slow_next_step_.reset();
        std::this_thread::sleep_for(delay);
      }
      if (fail_at_chunk_ == index) {
        fail_at_chunk_.reset();
        throw std::runtime_error("chunk " + std::to_string(index) + " failed on purpose");
      }
      Traits::make_room(job);
      const std::uint64_t sum = chunk_sum(job.items, job.chunk, index);
      if (index + 1 == chunks) summary = summary_of(job, Traits::tally(job).checksum + sum);
      // The point of no return: from here on nothing throws. The checkpoint
      // moves last, so that in the state it never passes a chunk whose
      // result is not recorded.
      Traits::record(job, index, sum);
    } else {
      summary = summary_of(job, Traits::tally(job).checksum);
    }
    step.done = Traits::chunks_done(job);
    step.total = chunks;
    step.pause = std::chrono::milliseconds(job.pace_ms);
    if (step.done == chunks) {
      step.finished = true;
      step.summary = std::move(summary);
      if (index < chunks) context_->log().info("job {} finished: {}", name, step.summary);
    }
  }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    Traits::save(out, target, this->state());
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    Traits::load(in, migration, this->state());
    context_->log().info("state loaded: {} job(s), schema {} written by v{}", this->state().jobs.size(),
                         migration.from_schema.value, migration.from_version.value);
  }

 private:
  static std::string summary_of(const Job& job, std::uint64_t checksum) {
    return "checksum " + std::to_string(checksum) + " over " + std::to_string(job.items) + " items in " +
           std::to_string(chunk_count(job.items, job.chunk)) + " chunks";
  }

  static JobView view_of(const std::string& name, const Job& job) {
    return JobView{name,
                   job.items,
                   job.chunk,
                   chunk_count(job.items, job.chunk),
                   Traits::chunks_done(job),
                   job.pace_ms,
                   Traits::tally(job),
                   Traits::kCheckpointName,
                   Traits::checkpoint(job)};
  }

  molt::api::Response show(const molt::api::Request& request) {
    if (!request.query_param("job")) {
      std::vector<JobView> views;
      views.reserve(this->state().jobs.size());
      for (const auto& [name, job] : this->state().jobs) views.push_back(view_of(name, job));
      return molt::api::Response::json(jobs_json(kVersion.value, views));
    }
    const auto name = job_param(request);
    if (!name.ok()) return error_response(400, name.error);
    const auto it = this->state().jobs.find(name.value);
    if (it == this->state().jobs.end()) return error_response(404, "no such job: " + name.value);
    return molt::api::Response::json(job_json(kVersion.value, view_of(it->first, it->second)));
  }

  /// Starts (or restarts from zero) a job. The new job is built, in a map of
  /// its own, before asking the host: if the host says the job is running
  /// already, or anything throws, the state is untouched. Once the host has
  /// recorded the job as running, the state receives it without allocating,
  /// so the two cannot disagree.
  molt::api::Response start_job(const molt::api::Request& request) {
    const auto params = start_params(request);
    if (!params.ok()) return error_response(400, params.error);
    std::map<std::string, Job> fresh;
    fresh.emplace(params.value.job, Traits::make_job(params.value));
    if (!context_->start_job(params.value.job))
      return error_response(409, "job " + params.value.job + " is running");
    auto& jobs = this->state().jobs;
    jobs.erase(params.value.job);
    const auto it = jobs.insert(fresh.extract(fresh.begin())).position;  // moves the node: no allocation
    context_->log().info("job {} started: {} items in {} chunks of {}, pace {} ms", it->first, it->second.items,
                         chunk_count(it->second.items, it->second.chunk), it->second.chunk, it->second.pace_ms);
    return molt::api::Response::json(job_json(kVersion.value, view_of(it->first, it->second)));
  }

  /// Changes the pause between a job's steps; the next step reports it.
  molt::api::Response pace(const molt::api::Request& request) {
    const auto name = job_param(request);
    if (!name.ok()) return error_response(400, name.error);
    const auto ms = number_param(request, "ms", 0, kMaxPaceMs);
    if (!ms.ok()) return error_response(400, ms.error);
    const auto it = this->state().jobs.find(name.value);
    if (it == this->state().jobs.end()) return error_response(404, "no such job: " + name.value);
    it->second.pace_ms = static_cast<std::uint32_t>(ms.value);
    return molt::api::Response::json(job_json(kVersion.value, view_of(it->first, it->second)));
  }

  // Test hooks. They arm this instance only, not the state: an upgrade (a new
  // instance) or a restart disarms them, which is what a test of "the step
  // after the upgrade" wants.

  molt::api::Response arm_failure(const molt::api::Request& request) {
    const auto chunk = number_param(request, "chunk", 0, kMaxItems);
    if (!chunk.ok()) return error_response(400, chunk.error);
    fail_at_chunk_ = chunk.value;
    return molt::api::Response::json("{\"armed\":" + std::to_string(chunk.value) + "}\n");
  }

  molt::api::Response arm_slow_step(const molt::api::Request& request) {
    const auto ms = number_param(request, "ms", 0, kMaxPaceMs);
    if (!ms.ok()) return error_response(400, ms.error);
    slow_next_step_ = std::chrono::milliseconds(ms.value);
    return molt::api::Response::json("{\"armed_ms\":" + std::to_string(ms.value) + "}\n");
  }

  molt::api::Context* context_ = nullptr;  ///< set in start(); outlives the instance
  /// The step about to process this chunk (of any job) throws instead, once.
  std::optional<std::uint64_t> fail_at_chunk_;
  /// The next step that processes a chunk sleeps this long first, once.
  std::optional<std::chrono::milliseconds> slow_next_step_;
};

}  // namespace batch
