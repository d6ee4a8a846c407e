#include "molt/host/slot/module_slot.hpp"

#include "molt/host/state/buffers.hpp"

namespace molt::host {

class ModuleSlot::InstanceContext final : public api::Context {
 public:
  InstanceContext(const ModuleSlot& slot) : slot_(slot) {}
  spdlog::logger& log() override { return *slot_.logger_; }
  const api::Values& config() const override { return slot_.config_; }
  std::string_view module_name() const override { return slot_.name_; }

 private:
  const ModuleSlot& slot_;
};

ModuleSlot::Live::~Live() {
  if (instance) instance->stop();
}

RunningVersion describe(const Image& image, std::chrono::system_clock::time_point since) {
  return RunningVersion{image.info(), image.source().string(), image.sha256(), image.mapped_path().string(), since};
}

ModuleSlot::ModuleSlot(std::string name, SlotOptions options, api::CallMode mode)
    : name_(std::move(name)), logger_(std::move(options.logger)), config_(std::move(options.config)), gate_(mode) {}

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
  if (live_) logger_->info("v{} stopping", live_->image->info().version.value);
  live_.reset();
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
  try {
    instance.value()->start(*live->context);
  } catch (const std::exception& e) {
    return fail(std::string("start threw: ") + e.what());  // ~Instance destroys it without stop()
  } catch (...) {
    return fail("start threw a non-standard exception");
  }
  live->instance = std::move(instance.value());
  return live;
}

Result<std::string> ModuleSlot::save_from(const Live& live, const api::SaveTarget& target,
                                          std::uint64_t max_bytes) const {
  const auto& info = live.image->info();
  auto fail = [&](std::string reason) {
    return Error{name_, info.version, live.image->source().string(), Phase::Save, std::move(reason)};
  };
  StringSink sink(max_bytes);
  api::StateWriter writer(sink);
  try {
    live.instance->save_state(writer, target);
  } catch (const api::MigrationRefused& e) {
    return fail(std::string("refused: ") + e.what());
  } catch (const std::exception& e) {
    if (sink.over_limit())
      return fail("state is larger than the limit of " + std::to_string(max_bytes) + " bytes");
    return fail(std::string("save_state threw: ") + e.what());
  } catch (...) {
    return fail("save_state threw a non-standard exception");
  }
  if (sink.over_limit()) return fail("state is larger than the limit of " + std::to_string(max_bytes) + " bytes");
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
  try {
    return live.instance->handle(request);
  } catch (const std::exception& e) {
    return fail(request.method + ' ' + request.path + ": handler threw: " + e.what());
  } catch (...) {
    return fail(request.method + ' ' + request.path + ": handler threw a non-standard exception");
  }
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
