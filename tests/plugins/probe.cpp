// probe: a test module that misbehaves on request.
//
// Versions 1 and 2 are well-behaved and share schema 1 (v2 admits calls
// concurrently); version 3 throws from start(); version 4 throws from its
// constructor. The upgrade's `extra` argument "fail" makes a migration hook
// fail: save, save-crash, save-late (after writing the state), load,
// load-crash, non-std, short-read. POST /probe/fill?n=N adds N items, to make
// states large enough to be streamed.
// Jobs and one-shot timers, for the host's tests: POST /probe/job?name=J-N
// starts job "J-N", whose every step adds item "J-N:<k>" until there are N
// (the checkpoint is the items themselves); a job named "boom-..." throws
// at its third step. POST /probe/once?name=T&ms=M sets a one-shot timer that
// adds item "timer:T" when it fires. Each health check is logged.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>

#include "molt/module.hpp"

namespace probe {

struct State {
  // Read through StateArchive: the vector's count and each string's length
  // are checked against the bytes left, and the vector grows as items
  // arrive. Nothing is counted by hand here.
  std::vector<std::string> items;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar & items;
  }
};

class Probe final : public molt::api::Module {
 public:
  static constexpr std::string_view kName = "probe";
  static constexpr molt::api::ModuleVersion kVersion{MOLT_BUILD_MODULE_VERSION};
  static constexpr molt::api::SchemaVersion kSchema{1};
  static constexpr molt::api::CallMode kCallMode =
      kVersion.value == 2 ? molt::api::CallMode::Concurrent : molt::api::CallMode::Serial;

  Probe() {
#ifdef PROBE_FAIL_CONSTRUCT
    throw std::runtime_error("probe constructor fails on purpose");
#endif
  }

  void start(molt::api::Context& context) override {
    context_ = &context;
#ifdef PROBE_FAIL_START
    throw std::runtime_error("probe start fails on purpose");
#endif
  }

  molt::api::Response handle(const molt::api::Request& request) override {
    if (request.path == "/probe/add") {
      std::lock_guard lock(mutex_);
      state_.items.push_back(request.query_param("item").value_or(""));
    } else if (request.path == "/probe/fill") {
      std::lock_guard lock(mutex_);
      const auto n = std::stoul(request.query_param("n").value_or("0"));
      for (unsigned long i = 0; i < n; ++i) state_.items.push_back("item-" + std::to_string(state_.items.size()));
    } else if (request.path == "/probe/sleep") {
      const auto ms = std::stoi(request.query_param("ms").value_or("0"));
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    } else if (request.path == "/probe/throw") {
      throw std::runtime_error("boom");
    } else if (request.path == "/probe/job") {
      if (!context_->start_job(request.query_param("name").value_or("")))
        return molt::api::Response::json(R"({"error":"running"})", 409);
    } else if (request.path == "/probe/once") {
      context_->set_timer_once(request.query_param("name").value_or(""),
                               std::chrono::milliseconds(std::stoi(request.query_param("ms").value_or("0"))));
    } else if (request.path != "/probe") {
      return molt::api::Response::json(R"({"error":"not found"})", 404);
    }
    std::lock_guard lock(mutex_);
    if (request.query_param("count")) {
      return molt::api::Response::json(R"({"version":)" + std::to_string(kVersion.value) + R"(,"count":)" +
                                       std::to_string(state_.items.size()) + R"(,"last":")" +
                                       (state_.items.empty() ? std::string() : state_.items.back()) + "\"}");
    }
    std::string body = R"({"version":)" + std::to_string(kVersion.value) + R"(,"items":[)";
    for (std::size_t i = 0; i < state_.items.size(); ++i) body += (i ? ",\"" : "\"") + state_.items[i] + '"';
    return molt::api::Response::json(body + "]}");
  }

  void on_timer(std::string_view name) override {
    std::lock_guard lock(mutex_);
    state_.items.push_back("timer:" + std::string(name));
  }

  void run_job_step(std::string_view job, molt::api::JobStep& step) override {
    const std::string prefix = std::string(job) + ':';
    const auto dash = job.rfind('-');
    const std::uint64_t target = dash == std::string_view::npos ? 0 : std::stoull(std::string(job.substr(dash + 1)));
    std::lock_guard lock(mutex_);
    std::uint64_t done = 0;
    for (const auto& item : state_.items) done += item.starts_with(prefix) ? 1 : 0;
    if (job.starts_with("boom-") && done == 2) throw std::runtime_error("step 3 of " + std::string(job) + " fails on purpose");
    if (done < target) state_.items.push_back(prefix + std::to_string(done++));
    step.done = done;
    step.total = target;
    step.finished = done >= target;
    step.summary = std::to_string(done) + " items";
  }

  /// Unhealthy once an item "sick" has been added (the probation tests).
  /// Logs "health check N" each time: only the host's probation watcher asks,
  /// so the probation tests read from the log that it has looked.
  std::optional<std::string> health() const override {
    if (context_ != nullptr) context_->log().info("health check {}", ++health_checks_);
    std::lock_guard lock(mutex_);
    for (const auto& item : state_.items)
      if (item == "sick") return "probe holds a sick item, on purpose";
    return std::nullopt;
  }

  void save_state(molt::api::StateWriter& out, const molt::api::SaveTarget& target) const override {
    const std::string fail = value(target.extra, "fail");
    if (fail == "save") throw molt::api::MigrationRefused("probe refuses to save on purpose");
    if (fail == "save-crash") throw std::runtime_error("probe save crashes on purpose");
    std::lock_guard lock(mutex_);
    molt::api::save_one_schema(out, target, kSchema, state_);
    if (fail == "save-late") throw molt::api::MigrationRefused("probe refuses after saving, on purpose");
  }

  void load_state(molt::api::StateReader& in, const molt::api::Migration& migration) override {
    const std::string fail = value(migration.extra, "fail");
    if (fail == "short-read") return;
    molt::api::load_one_schema(in, migration, kSchema, state_);
    state_.items.push_back("half-migrated");  // a failure below must not leak this anywhere
    if (fail == "load") throw molt::api::MigrationRefused("probe refuses to load on purpose");
    if (fail == "load-crash") throw std::logic_error("probe load crashes on purpose");
    if (fail == "non-std") throw 42;
    state_.items.pop_back();
  }

 private:
  static std::string value(const molt::api::Values& values, std::string_view key) {
    const auto it = values.find(key);
    return it == values.end() ? std::string() : it->second;
  }

  mutable std::mutex mutex_;  // v2 is concurrent
  State state_;
  molt::api::Context* context_ = nullptr;
  mutable std::atomic<std::uint64_t> health_checks_{0};  ///< health() calls on this instance
};

}  // namespace probe

MOLT_MODULE(probe::Probe)
