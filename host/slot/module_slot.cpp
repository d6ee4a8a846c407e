#include "molt/host/slot/module_slot.hpp"

#include "molt/host/slot/precopy.hpp"
#include "molt/host/slot/upgrade_access.hpp"
#include "molt/host/state/part_file.hpp"

#include <malloc.h>

#include <algorithm>
#include <condition_variable>

#include "molt/host/common/bounded_call.hpp"
#include "molt/host/common/log_context.hpp"
#include "molt/host/common/threads.hpp"
#include "molt/host/slot/host_part.hpp"
#include "molt/host/slot/module_call.hpp"
#include "molt/host/slot/state_hooks.hpp"

namespace molt::host {

// What the context answers by itself it holds copies of: an instance whose
// stop() outlived its deadline may still use them after the slot is gone.
class ModuleSlot::InstanceContext final : public api::Context {
 public:
  explicit InstanceContext(ModuleSlot& slot)
      : slot_(slot), logger_(slot.logger_), config_(slot.config_), name_(slot.name_), limits_(slot.stream_limits_) {}
  spdlog::logger& log() override { return *logger_; }
  const api::Values& config() const override { return config_; }
  std::string_view module_name() const override { return name_; }
  api::StreamLimits stream_limits() const override { return limits_; }
  void set_timer(std::string_view name, std::chrono::milliseconds period) override {
    slot_.timers_.set(name, TimerKind::Periodic, period);
  }
  void set_timer_once(std::string_view name, std::chrono::milliseconds delay) override {
    slot_.timers_.set(name, TimerKind::Once, delay);
  }
  void cancel_timer(std::string_view name) override { slot_.timers_.cancel(name); }
  bool start_job(std::string_view name) override { return slot_.jobs_.start(name); }

 private:
  ModuleSlot& slot_;
  const std::shared_ptr<spdlog::logger> logger_;
  const api::Values config_;
  const std::string name_;
  const api::StreamLimits limits_;
};

namespace {

/// Times one call into a histogram: from before it waits for the gate (the
/// wait counts) until just before it leaves the gate, so that in a serial
/// module it updates the histogram alone, without atomic read-modify-writes.
/// Not every call reads the clock (histogram.hpp, CallSampler); the others
/// count as the last one timed.
///
///   const CallTimer timer(histogram, sampler);      // before the gate
///   const CallGate::Pass pass = gate_.enter(what, timer.started());
///   const CallTimer::Count count(timer, pass);      // destroyed before the pass
class CallTimer {
 public:
  CallTimer(DurationHistogram& histogram, CallSampler& sampler) noexcept
      : histogram_(histogram),
        sampler_(sampler),
        timed_(sampler.time_this_call() || !histogram.observed_any()),
        started_(timed_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{}) {}
  CallTimer(const CallTimer&) = delete;
  CallTimer& operator=(const CallTimer&) = delete;

  /// When the call began, if it is timed; else Clock::time_point{} (for
  /// CallGate::enter, which then finds out if anyone asks).
  [[nodiscard]] std::chrono::steady_clock::time_point started() const noexcept { return started_; }

  class Count {
   public:
    Count(const CallTimer& timer, const CallGate::Pass& pass) noexcept : timer_(timer), pass_(pass) {}
    Count(const Count&) = delete;
    Count& operator=(const Count&) = delete;
    ~Count() {
      const auto writers = pass_.alone() ? DurationHistogram::Writers::One : DurationHistogram::Writers::Many;
      DurationHistogram& histogram = timer_.histogram_;
      if (!timer_.timed_) {
        histogram.repeat_last(writers);
        return;
      }
      const auto now = std::chrono::steady_clock::now();
      histogram.observe(now - timer_.started_, writers);
      timer_.sampler_.timed(now, [&] { return histogram.snapshot().count(); });
    }

   private:
    const CallTimer& timer_;
    const CallGate::Pass& pass_;
  };

 private:
  DurationHistogram& histogram_;
  CallSampler& sampler_;
  const bool timed_;
  const std::chrono::steady_clock::time_point started_;
};

}  // namespace

ModuleSlot::Live::~Live() {
  if (!instance) return;
  struct Parts {
    Instance instance;
    std::unique_ptr<InstanceContext> context;
    std::shared_ptr<const Image> image;
  };
  auto parts = std::make_shared<Parts>(Parts{std::move(instance), std::move(context), image});
  const api::ModuleVersion version = image->info().version;
  const bool returned = run_bounded(std::chrono::steady_clock::now() + stop_timeout, [parts] {
    const LogScope scope(parts->image->info().version.value, "stop");
    Hooks(*parts->instance, *parts->image).stop();
    parts->instance.reset();  // the module's destructor, then (if last) the image unloads
    parts->context.reset();
    // The state just freed stays in moltd's RSS otherwise: glibc returns only
    // the top of a heap, and the next large state (an upgrade's new instance,
    // a snapshot's second one) is built by another thread, from another
    // arena. kv at 1M keys: 290 MiB after one upgrade instead of 115.
    // malloc_trim walks every arena's free chunks: only when there is much
    // to give back (not after each of (b)'s upgrades of a small state).
    constexpr std::size_t kTrimAbove = 32u << 20;
    if (::mallinfo2().fordblks > kTrimAbove) ::malloc_trim(0);
  });
  if (!returned && log)
    log->warn("v{}: stop() or its destructor did not return within {} ms; the instance and its image stay loaded",
              version.value, stop_timeout.count());
  // The threads its code started (counted in moltd) should have ended with
  // stop() and its destructor; one that did not would run into unmapped
  // code once the image goes, so the image stays (Image::~Image).
  if (const std::size_t threads = image->site().threads(); returned && threads > 0 && log)
    log->warn("v{}: {} thread(s) its code started still run after stop() and its destructor; its image stays "
              "loaded until moltd exits, so that they never run into unmapped code",
              version.value, threads);
}

RunningVersion describe(const Image& image, std::chrono::system_clock::time_point since) {
  return RunningVersion{image.info(), image.source().string(), image.sha256(), image.mapped_path().string(), since};
}

ModuleSlot::ModuleSlot(std::string name, SlotOptions options, api::CallMode mode)
    : name_(std::move(name)),
      logger_(std::move(options.logger)),
      config_(std::move(options.config)),
      stream_limits_(options.stream_limits),
      stop_timeout_(options.stop_timeout),
      precopy_(options.precopy),
      gate_(mode),
      timers_(options.timers ? std::move(options.timers) : std::make_shared<TimerService>(),
              [this](const std::string& timer, TimerService::Id id) { fire_timer(timer, id); }),
      jobs_(name_, logger_, std::move(options.jobs)) {}

Result<std::shared_ptr<ModuleSlot>> ModuleSlot::start(std::shared_ptr<const Image> image, SlotOptions options) {
  std::shared_ptr<ModuleSlot> slot(new ModuleSlot(image->info().name, std::move(options), image->info().call_mode));
  // A timer or job the module starts in start() may fire before live_ is
  // set: the closed gate holds it until then (on failure it finds no live_).
  const bool closed = slot->gate_.suspend(CallGate::Clock::now(), "start");  // nobody inside yet
  auto live = slot->make_live(std::move(image));
  if (!live) {
    if (closed) slot->gate_.resume();
    return std::move(live).error();
  }
  slot->live_ = std::move(live.value());
  slot->running_ = describe(*slot->live_->image, slot->live_->since);
  slot->too_many_clients_reply_ = slot->live_->too_many_clients_reply;
  if (closed) slot->gate_.resume();
  slot->logger_->info("v{} started from {}", slot->running_.info.version.value, slot->running_.file);
  return slot;
}

ModuleSlot::~ModuleSlot() {
  // Before the instance goes: no timer may fire into it afterwards.
  timers_.cancel_all();
  if (live_) logger_->info("v{} stopping", live_->image->info().version.value);
  live_.reset();
}

// Timers are set and cancelled inside module calls (timers_, through the
// instance's context); a firing takes the module's turn first, then checks
// that its timer is still wanted.
void ModuleSlot::fire_timer(const std::string& name, TimerService::Id id) noexcept {
  const CallGate::Pass pass = gate_.enter("on_timer");
  if (!timers_.claim(name, id)) return;  // cancelled or replaced meanwhile
  if (!live_ || retired()) return;        // a start() that failed, or the module moved to another moltd
  const LogScope scope(live_->image->info().version.value);
  if (auto failure = guard_module_call("on_timer", [&] { live_->hooks().on_timer(name); }))
    logger_->error("timer '{}': {}", name, *failure);
}

// --- jobs -------------------------------------------------------------------

JobNext ModuleSlot::run_job_step(const std::string& job) {
  const CallGate::Pass pass = gate_.enter("run_job_step");
  if (!jobs_.running(job) || !live_ || retired()) return {};  // cancelled (or gone) meanwhile, start() failed, moved
  api::JobStep step;
  const api::ModuleVersion version = live_->image->info().version;
  const LogScope scope(version.value, "job");
  const auto failure = guard_module_call("run_job_step", [&] { live_->hooks().run_job_step(job, step); });
  return jobs_.record_step(job, version, failure, step);
}

std::vector<JobRecord> ModuleSlot::jobs() const { return jobs_.records(); }

Result<void> ModuleSlot::cancel_job(std::string_view job) { return jobs_.cancel(job); }

Result<void> ModuleSlot::restart_job(std::string_view job) { return jobs_.restart(job); }

// --- the host part ----------------------------------------------------------

std::string ModuleSlot::host_part() const { return encode_host_part(HostPart{jobs_.records(), timers_.saved()}); }

Result<void> ModuleSlot::restore_host_part(std::string_view host_part) {
  if (host_part.empty()) return {};  // nothing saved: keep what the module has
  auto part = decode_host_part(host_part, name_);
  if (!part) return std::move(part).error();  // all read before anything changes
  timers_.restore(part->timers);
  jobs_.replace(std::move(part->jobs));
  return {};
}

std::optional<std::string> ModuleSlot::health(std::chrono::milliseconds timeout) {
  const auto deadline = CallGate::Clock::now() + timeout;
  auto pass = gate_.enter_until(deadline, "health");
  if (!pass) {
    std::string why = "no answer within " + std::to_string(timeout.count()) + " ms";
    if (const auto busy = gate_.counts().oldest)
      why += ": " + std::string(busy->what) + " has run for " +
             std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(CallGate::Clock::now() - busy->since).count()) +
             " ms";
    return why;
  }
  struct Asked {
    std::optional<CallGate::Pass> pass;
    std::optional<std::string> problem;
  };
  auto asked = std::make_shared<Asked>();
  asked->pass.emplace(std::move(*pass));
  const bool answered = run_bounded(deadline, [self = shared_from_this(), asked] {
    const LogScope scope(self->live_->image->info().version.value);
    std::optional<std::string> problem;
    if (auto failure = guard_module_call("health", [&] { problem = self->live_->hooks().health(); })) problem = failure;
    asked->problem = std::move(problem);
    asked->pass.reset();
  });
  if (!answered) return "health() did not return within " + std::to_string(timeout.count()) + " ms";
  return asked->problem;
}

std::vector<std::string> ModuleSlot::timers() const { return timers_.names(); }

void ModuleSlot::retire(std::string where) {
  moved_to_ = std::string(kModuleMoved) + where;
  retired_.store(true, std::memory_order_release);
  // Timers are not cancelled here: one may be waiting for the gate this
  // access holds (cancel_all would wait for it). Each firing returns at once.
  logger_->info("v{} retired: {}; calls get an error from now on", running().info.version.value, moved_to_);
}

Error ModuleSlot::moved_error() const { return Error{name_, running().info.version, {}, Phase::Call, moved_to_}; }

Result<void> ModuleSlot::stream_connect(api::ConnectionId connection) {
  const CallGate::Pass pass = gate_.enter("on_connect");
  if (retired()) return moved_error();
  if (auto failure = guard_module_call("on_connect", [&] { live_->hooks().on_connect(connection); }))
    return Error{name_, live_->image->info().version, {}, Phase::Call, std::move(*failure)};
  std::lock_guard lock(connections_mutex_);
  connections_.insert(connection);
  return {};
}

Result<std::size_t> ModuleSlot::stream_data(api::ConnectionId connection, std::string_view input,
                                            api::StreamOutput& out) {
  const CallTimer timer(call_durations_, call_sampler_);
  const CallGate::Pass pass = gate_.enter("on_data", timer.started());
  if (retired()) [[unlikely]] return moved_error();
  const CallTimer::Count count(timer, pass);
  const Live& live = *live_;
  const LogScope scope(live.image->info().version.value);
  std::size_t consumed = 0;
  if (auto failure = guard_module_call("on_data", [&] { consumed = live.hooks().on_data(connection, input, out); }))
    return call_failed(live, std::move(*failure));
  if (consumed > input.size())
    return call_failed(live, "on_data consumed " + std::to_string(consumed) + " of " + std::to_string(input.size()) +
                                 " bytes");
  return consumed;
}

void ModuleSlot::stream_disconnect(api::ConnectionId connection) noexcept {
  const CallGate::Pass pass = gate_.enter("on_disconnect");
  {
    std::lock_guard lock(connections_mutex_);
    connections_.erase(connection);
  }
  if (retired()) return;
  if (auto failure = guard_module_call("on_disconnect", [&] { live_->hooks().on_disconnect(connection); }))
    logger_->error("connection {}: {}", connection, *failure);
}

std::vector<api::ConnectionId> ModuleSlot::connections() const {
  std::lock_guard lock(connections_mutex_);
  return {connections_.begin(), connections_.end()};
}

Result<std::unique_ptr<ModuleSlot::Live>> ModuleSlot::make_live(std::shared_ptr<const Image> image) {
  auto instance = image->instantiate();
  if (!instance) return std::move(instance).error();
  auto live = std::make_unique<Live>();
  live->image = std::move(image);
  live->context = std::make_unique<InstanceContext>(*this);
  live->since = std::chrono::system_clock::now();
  live->log = logger_;
  live->stop_timeout = stop_timeout_;
  auto fail = [&](std::string reason) {
    const auto& info = live->image->info();
    return Error{name_, info.version, live->image->source().string(), Phase::Start, std::move(reason)};
  };
  const Hooks hooks(*instance.value(), *live->image);
  if (auto failure = guard_module_call("start", [&] { hooks.start(*live->context); }))
    return fail(std::move(*failure));  // ~Instance destroys it without stop()
  if (auto failure = guard_module_call("refusal_reply", [&] {
        live->too_many_clients_reply = hooks.refusal_reply(api::Refusal::TooManyClients);
      })) {
    hooks.stop();
    return fail(std::move(*failure));
  }
  // Modules own no threads (plugin-api.md): one started by now (by its
  // static initialisers, constructor or start) outlives every call moltd
  // makes, and keeps the image loaded for good once it is replaced.
  if (const std::size_t threads = live->image->site().threads(); threads > 0)
    logger_->warn("v{}: {} thread(s) its code started are running; moltd cannot wait for them, and will not unload "
                  "this image while one runs",
                  live->image->info().version.value, threads);
  live->instance = std::move(instance.value());
  return live;
}

Result<void> ModuleSlot::save_into(const Live& live, const api::SaveTarget& target, std::streambuf& out) const {
  const auto& info = live.image->info();
  auto fail = [&](std::string reason) {
    return Error{name_, info.version, live.image->source().string(), Phase::Save, std::move(reason)};
  };
  if (auto failure = save_state_into(live.hooks(), target, out)) return fail(std::move(*failure));
  return {};
}

Result<std::string> ModuleSlot::save_to_string(const Live& live, const api::SaveTarget& target,
                                          std::uint64_t max_bytes) const {
  auto saved = save_state_to_string(live.hooks(), target, max_bytes);
  if (!saved) {
    Error error = std::move(saved).error();
    error.module = name_;
    error.version = live.image->info().version;
    error.file = live.image->source().string();
    return error;
  }
  return saved;
}

Result<api::Response> ModuleSlot::call(const api::Request& request) {
  const CallTimer timer(call_durations_, call_sampler_);
  const CallGate::Pass pass = gate_.enter("handle", timer.started());
  if (retired()) [[unlikely]] return moved_error();
  const CallTimer::Count count(timer, pass);
  const Live& live = *live_;
  const LogScope scope(live.image->info().version.value);
  return guard_module_value<Result<api::Response>>(
      "handler", [&]() -> Result<api::Response> { return live.hooks().handle(request); },
      [&](const std::string& failure) -> Result<api::Response> {
        return call_failed(live, request.method + ' ' + request.path + ": " + failure);
      });
}

// Out of line and cold: the error path's strings stay out of every call's frame.
Error ModuleSlot::call_failed(const Live& live, std::string reason) {
  failed_calls_.fetch_add(1, std::memory_order_relaxed);
  return Error{name_, live.image->info().version, {}, Phase::Call, std::move(reason)};
}

Result<StateBlob> ModuleSlot::save_state(std::chrono::milliseconds quiesce_timeout,
                                         std::chrono::milliseconds save_timeout, KeepState keep, Yield yield,
                                         OpenPartFile open_parts) {
  // The upgrade lock is taken and let go on the thread that saves: with a
  // deadline, that thread may outlive this call, still holding it.
  struct Saved {
    std::mutex mutex;
    std::condition_variable changed;
    std::optional<CallGate::Clock::time_point> paused_at;  ///< set once calls in flight finished: save_state runs
    /// What runs after the pause when a pre-copy took the state: the module
    /// serves on whatever it does.
    enum class After { Nothing, SecondInstance, File } after = After::Nothing;
    /// The last part of a pre-copy (before the pause): while parts keep
    /// coming, the snapshot is making progress.
    std::optional<CallGate::Clock::time_point> moved_at;
    std::optional<Result<StateBlob>> taken;  ///< set once save_state returned (or failed before)
    bool kept = false;                       ///< set once `keep` ran, or will not
  };
  auto saved = std::make_shared<Saved>();
  const auto quiesce_deadline = CallGate::Clock::now() + quiesce_timeout;
  auto save = [this, saved, quiesce_deadline, quiesce_timeout, keep = std::move(keep), yield,
               open_parts = std::move(open_parts)] {
    auto finish = [&](std::optional<Result<StateBlob>> taken, bool kept) {
      {
        std::lock_guard lock(saved->mutex);
        if (taken) saved->taken = std::move(taken);
        saved->kept = kept;
      }
      saved->changed.notify_all();
    };
    // The live instance must not change meanwhile.
    auto access = yield == Yield::Never ? UpgradeAccess::take_ahead_of_snapshots(*this, quiesce_deadline)
                                        : UpgradeAccess::take_until(*this, quiesce_deadline);
    const auto& info = running().info;
    auto fail = [&](std::string reason) {
      return Result<StateBlob>(Error{name_, info.version, {}, Phase::Snapshot, std::move(reason)});
    };
    if (!access)
      return finish(fail("an upgrade or another snapshot was still in progress after " +
                         std::to_string(quiesce_timeout.count()) + " ms"), true);
    const api::SaveTarget target{info.schema, api::Direction::Same, {}};
    const auto paused = [&saved](Saved::After after) {
      {
        std::lock_guard lock(saved->mutex);
        saved->paused_at = CallGate::Clock::now();
        saved->after = after;
      }
      saved->changed.notify_all();
    };
    std::string host;
    const bool to_file = open_parts && precopy_.enabled && access->can_transfer();
    const auto in_pause = [&] {
      paused(to_file ? Saved::After::File : Saved::After::SecondInstance);
      host = host_part();  // in the same pause as the state
    };
    // A pre-copy that makes parts extends the caller's wait (moved_at).
    const auto on_part = [&saved] {
      {
        std::lock_guard lock(saved->mutex);
        saved->moved_at = CallGate::Clock::now();
      }
      saved->changed.notify_all();
    };
    const auto give_way = [this, yield] {
      return yield == Yield::ToUpgrades && waiting_ahead_of_snapshots_.load(std::memory_order_relaxed) > 0;
    };
    // With pre-copy and a file to write, the parts go into the file as they
    // are taken while the module serves, which pauses only for the last
    // changes; nothing but the module holds the whole state.
    if (to_file) {
      auto file = open_parts(StateBlob{name_, info.version, info.schema, {}, {}, StateEncoding::Parts});
      if (!file) return finish(std::move(file).error(), true);
      if (auto moved = access->save_by_precopy_to(*file.value(), target, precopy_, quiesce_timeout, in_pause,
                                                on_part, give_way)) {
        if (!*moved) return finish(std::move(*moved).error(), true);
        auto size = file.value()->commit(host);
        if (!size) return finish(std::move(size).error(), true);
        state_bytes_.store(size.value(), std::memory_order_relaxed);
        return finish(StateBlob{name_, info.version, info.schema, {}, std::move(host), StateEncoding::Parts}, true);
      }
      // The pre-copy failed before the pause (said in the log): saved below
      // with the module paused, as an archive, over the file abandoned here.
    }
    // With pre-copy and no file, the state moves into a second instance
    // while the module serves, and is saved from there.
    std::optional<Result<std::string>> bytes;
    if (!to_file) bytes = access->save_by_precopy(target, precopy_, quiesce_timeout, in_pause, on_part, give_way);
    if (!bytes) {
      // A pre-copy that could not be used took its time: the calls in
      // flight get the whole quiesce timeout from now.
      const bool tried = precopy_.enabled && access->can_transfer();
      if (!access->suspend(tried ? CallGate::Clock::now() + quiesce_timeout : quiesce_deadline, "save_state")) {
        return finish(fail(not_drained_reason(quiesce_timeout)), true);
      }
      paused(Saved::After::Nothing);
      bytes = save_to_string(*live_, target, UINT64_MAX);
      // In the same pause as the state: a job's record and its checkpoint agree.
      host = host_part();
      (void)access->resume();
    }
    if (!*bytes) return finish(std::move(*bytes).error(), true);
    state_bytes_.store(bytes->value().size(), std::memory_order_relaxed);
    Result<StateBlob> blob(StateBlob{name_, info.version, info.schema, std::move(bytes->value()), std::move(host)});
    if (!keep) return finish(std::move(blob), true);
    finish(std::move(blob), false);
    // The caller reads the state only once `kept` is set: no copy of it here.
    const auto kept = keep(saved->taken->value());
    if (!kept) {
      std::lock_guard lock(saved->mutex);
      saved->taken = kept.error();
    }
    finish(std::nullopt, true);
  };
  if (save_timeout == kNoDeadline) {
    save();
  } else {
    // save_timeout counts from the pause, once calls in flight finished:
    // save_state gets that long whatever the quiesce took. Before the pause
    // the thread gives up by itself, at quiesce_deadline. It keeps the slot
    // alive for as long as it runs.
    DeadlineThread thread([self = shared_from_this(), save = std::move(save)] {
      name_this_thread("molt-save");
      save();
    });
    auto deadline = quiesce_deadline + save_timeout;
    {
      // A pre-copy before the pause extends the wait for as long as it
      // moves parts (each within quiesce_timeout of the last).
      std::unique_lock lock(saved->mutex);
      for (;;) {
        const auto moved = saved->moved_at;
        saved->changed.wait_until(lock, deadline, [&] { return saved->taken || saved->paused_at || saved->moved_at != moved; });
        if (saved->taken || saved->paused_at || !saved->moved_at) break;
        if (saved->moved_at == moved && CallGate::Clock::now() >= deadline) break;
        deadline = std::max(deadline, *saved->moved_at + quiesce_timeout + save_timeout);
      }
      if (saved->paused_at) deadline = *saved->paused_at + save_timeout;
    }
    if (!thread.join_until(deadline)) {
      std::lock_guard lock(saved->mutex);
      if (!saved->taken) {
        const auto& info = running().info;
        // A pre-copy's second instance holds only the upgrade lock: the
        // module serves, but is neither upgraded nor saved until it returns.
        using After = Saved::After;
        if (saved->after == After::File)
          return Error{name_, info.version, {}, Phase::Snapshot,
                       "the snapshot's file was not written within " + std::to_string(save_timeout.count()) +
                           " ms of the pause: the module serves on, but no upgrade or snapshot of it can start "
                           "until the write ends"};
        return Error{name_, info.version, {}, Phase::Snapshot,
                     "save_state did not return within " + std::to_string(save_timeout.count()) + " ms; " +
                         (saved->after == After::SecondInstance
                              ? "it runs in the second instance the state was pre-copied into: the module serves "
                                "on, but no upgrade or snapshot of it can start until it returns"
                              : "the module stays suspended until it does")};
      }
    }
  }
  std::unique_lock lock(saved->mutex);
  saved->changed.wait(lock, [&] { return saved->kept; });  // host code: writing what was taken
  return std::move(*saved->taken);
}

std::string ModuleSlot::not_drained_reason(std::chrono::milliseconds timeout) const {
  std::string busy = "calls in progress";
  if (const auto oldest = gate_.counts().oldest)
    busy = std::string(oldest->what) + ", running for " +
           std::to_string(
               std::chrono::duration_cast<std::chrono::milliseconds>(CallGate::Clock::now() - oldest->since).count()) +
           " ms,";
  return busy + " did not finish within " + std::to_string(timeout.count()) + " ms";
}

RunningVersion ModuleSlot::running() const {
  std::lock_guard lock(info_mutex_);
  return running_;
}

std::string ModuleSlot::refusal_reply(api::Refusal reason) const {
  std::lock_guard lock(info_mutex_);
  switch (reason) {
    case api::Refusal::TooManyClients: return too_many_clients_reply_;
  }
  return {};
}

void ModuleSlot::forget_previous() {
  std::lock_guard lock(info_mutex_);
  previous_.reset();
}

std::optional<RunningVersion> ModuleSlot::previous() const {
  std::lock_guard lock(info_mutex_);
  return previous_;
}

SlotStats ModuleSlot::stats() const {
  const std::uint64_t state_bytes = state_bytes_.load(std::memory_order_relaxed);
  return SlotStats{call_durations_.snapshot().count(), failed_calls_.load(std::memory_order_relaxed),
                   state_bytes == kUnknown ? std::nullopt : std::optional(state_bytes), gate_.counts()};
}

}  // namespace molt::host
