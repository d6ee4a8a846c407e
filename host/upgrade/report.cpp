#include "molt/host/upgrade/report.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace molt::host {

std::string_view to_string(Outcome outcome) noexcept {
  switch (outcome) {
    case Outcome::Succeeded: return "succeeded";
    case Outcome::RolledBack: return "rolled back";
    case Outcome::Refused: return "refused";
  }
  return "unknown";
}

std::string_view to_string(api::Direction direction) noexcept {
  switch (direction) {
    case api::Direction::Up: return "up";
    case api::Direction::Down: return "down";
    case api::Direction::Same: return "same";
  }
  return "unknown";
}

std::string UpgradeReport::summary() const {
  const auto us = [](std::chrono::microseconds d) { return std::to_string(d.count()); };
  // `to` is 0 when the new image could not even be read.
  std::string out = module + " v" + std::to_string(from.value) + " -> " +
                    (to.value > 0 ? 'v' + std::to_string(to.value) : std::string("?")) + ' ' + std::string(to_string(outcome));
  if (outcome != Outcome::Refused) {
    out += ": pause " + us(pause) + " us (quiesce " + us(phases.quiesce) + ", save " + us(phases.save) + ", migrate " +
           us(phases.migrate) + ", resume " + us(phases.resume) + "), state " +
           (state_in_memory ? std::string("in memory") : std::to_string(state_bytes) + " B");
    if (queued_calls > 0) out += ", " + std::to_string(queued_calls) + " calls queued";
    if (precopy)
      out += "; pre-copy " + std::to_string(precopy->rounds.size()) + " round(s) in " +
             std::to_string(phases.precopy.count() / 1000) + " ms (" + precopy->ended + "), " +
             std::to_string(precopy->final.entries) + " entries in the pause";
  }
  if (error) out += "; " + error->to_string();
  return out;
}

void to_json(nlohmann::json& out, const PrecopyRound& round) {
  out = nlohmann::json{{"parts", round.parts},
                       {"entries", round.entries},
                       {"bytes", round.bytes},
                       {"us", round.took.count()},
                       {"longest_call_us", round.longest_call.count()},
                       {"caught_up_us", round.caught_up.count()}};
}

void to_json(nlohmann::json& out, const PrecopyReport& report) {
  out = nlohmann::json{{"rounds", report.rounds},
                       {"ended", report.ended},
                       {"converged", report.converged},
                       {"caught_up_us", report.caught_up.count()},
                       {"final", report.final}};
}

void to_json(nlohmann::json& out, const UpgradeReport& report) {
  const auto us = [](std::chrono::microseconds d) { return d.count(); };
  out = nlohmann::json{
      {"module", report.module},
      {"from", report.from.value},
      {"to", report.to.value},
      {"from_schema", report.from_schema.value},
      {"to_schema", report.to_schema.value},
      {"direction", to_string(report.direction)},
      {"from_file", report.from_file},
      {"to_file", report.to_file},
      {"to_sha256", report.to_sha256},
      {"outcome", to_string(report.outcome)},
      {"error", report.error ? nlohmann::json(report.error->to_string()) : nlohmann::json(nullptr)},
      {"phases_us",
       {{"rehearse", us(report.phases.rehearse)},
        {"prepare", us(report.phases.prepare)},
        {"precopy", us(report.phases.precopy)},
        {"quiesce", us(report.phases.quiesce)},
        {"save", us(report.phases.save)},
        {"migrate", us(report.phases.migrate)},
        {"resume", us(report.phases.resume)},
        {"rollback", us(report.phases.rollback)},
        {"cleanup", us(report.phases.cleanup)}}},
      {"pause_us", us(report.pause)},
      {"state_bytes", report.state_bytes},
      {"state_transfer", report.outcome == Outcome::Refused ? "none" : report.state_in_memory ? "memory" : "serialized"},
      {"queued_calls", report.queued_calls},
      {"rehearsal", report.rehearsal.empty() ? nlohmann::json(nullptr) : nlohmann::json(report.rehearsal)},
      {"precopy", report.precopy ? nlohmann::json(*report.precopy) : nlohmann::json(nullptr)},
      {"started_at_ms",
       std::chrono::duration_cast<std::chrono::milliseconds>(report.started_at.time_since_epoch()).count()},
  };
}

void UpgradeTotals::add(const UpgradeReport& report) noexcept {
  ++outcomes[static_cast<std::size_t>(report.outcome)];
  queued_calls += report.queued_calls;
  if (report.outcome != Outcome::Refused) pause.add(report.pause);
}

void UpgradeHistory::record(UpgradeReport report) {
  std::lock_guard lock(mutex_);
  auto totals = totals_.find(report.module);
  if (totals == totals_.end()) totals = totals_.emplace(report.module, UpgradeTotals{}).first;
  totals->second.add(report);
  reports_.push_back(std::move(report));
  while (reports_.size() > capacity_) reports_.pop_front();
}

std::map<std::string, UpgradeTotals, std::less<>> UpgradeHistory::totals() const {
  std::lock_guard lock(mutex_);
  return totals_;
}

std::vector<UpgradeReport> UpgradeHistory::list(std::string_view module, std::size_t last) const {
  std::lock_guard lock(mutex_);
  std::vector<UpgradeReport> out;
  // Newest first, so that only the reports asked for are copied; then reversed.
  for (auto it = reports_.rbegin(); it != reports_.rend() && out.size() < last; ++it)
    if (module.empty() || it->module == module) out.push_back(*it);
  std::reverse(out.begin(), out.end());
  return out;
}

}  // namespace molt::host
