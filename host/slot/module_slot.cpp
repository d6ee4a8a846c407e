#include "molt/host/slot/module_slot.hpp"

#include "molt/host/slot/module_call.hpp"
#include "molt/host/state/buffers.hpp"

namespace molt::host {

class ModuleSlot::InstanceContext final : public api::Context {
 public:
  explicit InstanceContext(ModuleSlot& slot) : slot_(slot) {}
  spdlog::logger& log() override { return *slot_.logger_; }
  const api::Values& config() const override { return slot_.config_; }
  std::string_view module_name() const override { return slot_.name_; }
  void set_timer(std::string_view name, std::chrono::milliseconds period) override { slot_.set_timer(name, period); }
  void cancel_timer(std::string_view name) override { slot_.cancel_timer(name); }

 private:
  ModuleSlot& slot_;
};

ModuleSlot::Live::~Live() {
  if (instance) instance->stop();
}

RunningVersion describe(const Image& image, std::chrono::system_clock::time_point since) {
  return RunningVersion{image.info(), image.source().string(), image.sha256(), image.mapped_path().string(), since};
}

ModuleSlot::ModuleSlot(std::string name, SlotOptions options, api::CallMode mode)
    : name_(std::move(name)),
      logger_(std::move(options.logger)),
      config_(std::move(options.config)),
      timer_service_(options.timers ? std::move(options.timers) : std::make_shared<TimerService>()),
      gate_(mode) {}

Result<std::unique_ptr<ModuleSlot>> ModuleSlot::start(std::shared_ptr<const Image> image, SlotOptions options) {
  std::unique_ptr<ModuleSlot> slot(new ModuleSlot(image->info().name, std::move(options), image->info().call_mode));
  auto live = slot->make_live(std::move(image));
  if (!live) return std::move(live).error();
  slot->live_ = std::move(live.value());
  slot->running_ = describe(*slot->live_->image, slot->live_->since);
  slot->logger_->info("v{} started from {}", slot->running_.info.version.value, slot->running_.file);
  return slot;
}

ModuleSlot::~ModuleSlot() {
  std::map<std::string, TimerService::Id, std::less<>> timers;
  {
    std::lock_guard lock(timers_mutex_);
    timers.swap(timers_);
  }
  // Outside the lock: a callback in flight takes it to see it was cancelled.
  for (const auto& [name, id] : timers) timer_service_->cancel_and_wait(id);
  if (live_) logger_->info("v{} stopping", live_->image->info().version.value);
  live_.reset();
}

// set_timer and cancel_timer run inside module calls, holding the gate, so
// they must never wait for a timer callback (which waits for the gate).
// Instead a callback checks, once it holds the gate, that its timer is still
// the current one for its name.
void ModuleSlot::set_timer(std::string_view name, std::chrono::milliseconds period) {
  std::lock_guard lock(timers_mutex_);
  if (auto it = timers_.find(name); it != timers_.end()) {
    timer_service_->cancel(it->second);
    timers_.erase(it);
  }
  std::string key(name);
  const auto id = timer_service_->every(period, [this, key](TimerService::Id fired) { fire_timer(key, fired); });
  timers_.emplace(std::move(key), id);
}

void ModuleSlot::cancel_timer(std::string_view name) {
  std::lock_guard lock(timers_mutex_);
  if (auto it = timers_.find(name); it != timers_.end()) {
    timer_service_->cancel(it->second);
    timers_.erase(it);
  }
}

void ModuleSlot::fire_timer(const std::string& name, TimerService::Id id) noexcept {
  const CallGate::Pass pass = gate_.enter();
  {
    std::lock_guard lock(timers_mutex_);
    const auto it = timers_.find(name);
    if (it == timers_.end() || it->second != id) return;  // cancelled or replaced meanwhile
  }
  if (auto failure = guard_module_call("on_timer", [&] { live_->instance->on_timer(name); }))
    logger_->error("timer '{}': {}", name, *failure);
}

std::optional<std::string> ModuleSlot::health() {
  const CallGate::Pass pass = gate_.enter();
  std::optional<std::string> problem;
  if (auto failure = guard_module_call("health", [&] { problem = live_->instance->health(); })) return failure;
  return problem;
}

std::vector<std::string> ModuleSlot::timers() const {
  std::lock_guard lock(timers_mutex_);
  std::vector<std::string> names;
  for (const auto& [name, id] : timers_) names.push_back(name);
  return names;
}

Result<void> ModuleSlot::stream_connect(api::ConnectionId connection) {
  const CallGate::Pass pass = gate_.enter();
  if (auto failure = guard_module_call("on_connect", [&] { live_->instance->on_connect(connection); }))
    return Error{name_, live_->image->info().version, {}, Phase::Call, std::move(*failure)};
  return {};
}

Result<std::size_t> ModuleSlot::stream_data(api::ConnectionId connection, std::string_view input,
                                            api::StreamOutput& out) {
  const CallGate::Pass pass = gate_.enter();
  const Live& live = *live_;
  calls_.fetch_add(1, std::memory_order_relaxed);
  auto fail = [&](std::string reason) {
    failed_calls_.fetch_add(1, std::memory_order_relaxed);
    return Error{name_, live.image->info().version, {}, Phase::Call, std::move(reason)};
  };
  std::size_t consumed = 0;
  if (auto failure = guard_module_call("on_data", [&] { consumed = live.instance->on_data(connection, input, out); }))
    return fail(std::move(*failure));
  if (consumed > input.size())
    return fail("on_data consumed " + std::to_string(consumed) + " of " + std::to_string(input.size()) + " bytes");
  return consumed;
}

void ModuleSlot::stream_disconnect(api::ConnectionId connection) noexcept {
  const CallGate::Pass pass = gate_.enter();
  if (auto failure = guard_module_call("on_disconnect", [&] { live_->instance->on_disconnect(connection); }))
    logger_->error("connection {}: {}", connection, *failure);
}

Result<std::unique_ptr<ModuleSlot::Live>> ModuleSlot::make_live(std::shared_ptr<const Image> image) {
  auto instance = image->instantiate();
  if (!instance) return std::move(instance).error();
  auto live = std::make_unique<Live>();
  live->image = std::move(image);
  live->context = std::make_unique<InstanceContext>(*this);
  live->since = std::chrono::system_clock::now();
  auto fail = [&](std::string reason) {
    const auto& info = live->image->info();
    return Error{name_, info.version, live->image->source().string(), Phase::Start, std::move(reason)};
  };
  if (auto failure = guard_module_call("start", [&] { instance.value()->start(*live->context); }))
    return fail(std::move(*failure));  // ~Instance destroys it without stop()
  live->instance = std::move(instance.value());
  return live;
}

Result<void> ModuleSlot::save_to(const Live& live, const api::SaveTarget& target, std::streambuf& out) const {
  const auto& info = live.image->info();
  auto fail = [&](std::string reason) {
    return Error{name_, info.version, live.image->source().string(), Phase::Save, std::move(reason)};
  };
  api::StateWriter writer(out);
  if (auto failure = guard_module_call("save_state", [&] { live.instance->save_state(writer, target); }))
    return fail(std::move(*failure));
  return {};
}

Result<std::string> ModuleSlot::save_from(const Live& live, const api::SaveTarget& target,
                                          std::uint64_t max_bytes) const {
  StringSink sink(max_bytes);
  auto saved = save_to(live, target, sink);
  if (sink.over_limit()) {
    const auto& info = live.image->info();
    return Error{name_, info.version, live.image->source().string(), Phase::Save,
                 "state is larger than the limit of " + std::to_string(max_bytes) + " bytes"};
  }
  if (!saved) return std::move(saved).error();
  return sink.take();
}

Result<api::Response> ModuleSlot::call(const api::Request& request) {
  const CallGate::Pass pass = gate_.enter();
  const Live& live = *live_;
  calls_.fetch_add(1, std::memory_order_relaxed);
  auto fail = [&](std::string reason) {
    failed_calls_.fetch_add(1, std::memory_order_relaxed);
    return Error{name_, live.image->info().version, {}, Phase::Call, std::move(reason)};
  };
  api::Response response;
  if (auto failure = guard_module_call("handler", [&] { response = live.instance->handle(request); }))
    return fail(request.method + ' ' + request.path + ": " + *failure);
  return response;
}

Result<StateBlob> ModuleSlot::save_state(std::chrono::milliseconds timeout) {
  const std::lock_guard upgrade(upgrade_mutex_);  // the live instance must not change meanwhile
  const auto& info = live_->image->info();
  if (!gate_.suspend(CallGate::Clock::now() + timeout))
    return Error{name_, info.version, {}, Phase::Snapshot,
                 "calls in progress did not finish within " + std::to_string(timeout.count()) + " ms"};
  auto bytes = save_from(*live_, api::SaveTarget{info.schema, api::Direction::Same, {}}, UINT64_MAX);
  gate_.resume();
  if (!bytes) return std::move(bytes).error();
  state_bytes_.store(bytes->size(), std::memory_order_relaxed);
  return StateBlob{name_, info.version, info.schema, std::move(bytes.value())};
}

RunningVersion ModuleSlot::running() const {
  std::lock_guard lock(info_mutex_);
  return running_;
}

std::optional<RunningVersion> ModuleSlot::previous() const {
  std::lock_guard lock(info_mutex_);
  return previous_;
}

SlotStats ModuleSlot::stats() const {
  const std::uint64_t state_bytes = state_bytes_.load(std::memory_order_relaxed);
  return SlotStats{calls_.load(std::memory_order_relaxed), failed_calls_.load(std::memory_order_relaxed),
                   state_bytes == kUnknown ? std::nullopt : std::optional(state_bytes), gate_.counts()};
}

}  // namespace molt::host
