// The one way the host calls a module instance: through Hooks, which knows
// the instance's image.
//
// An image built for an older plugin ABI has a shorter vtable: calling a hook
// added after it would jump to whatever follows the vtable. And an image
// declares which optional hooks it implements (api::Feature): for the others
// there is nothing to gain by entering it. So each call first asks has_hook()
// (loader/abi.hpp); a hook the image lacks gets here what Module's default
// does, without entering the image.
//
// Hooks only decides whether to enter; exceptions are guard_module_call's.
// Each call it makes is marked, for the crash handler, as this image's code
// in that hook (ModuleCodeScope): a crash in it names the module.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>

#include "molt/host/common/module_site.hpp"
#include "molt/host/loader/abi.hpp"
#include "molt/host/loader/loader.hpp"
#include "molt/module.hpp"

namespace molt::host {

class Hooks {
 public:
  /// `module`, which must outlive this object, is an instance of an image
  /// built for `abi` that declares `features` (its ImageInfo's).
  Hooks(api::Module& module, std::uint32_t abi, api::Features features, const ModuleSite* site = nullptr) noexcept
      : module_(module), abi_(abi), features_(features), site_(site) {}
  Hooks(api::Module& module, const ImageInfo& image) noexcept : Hooks(module, image.abi, image.features) {}
  /// `module` is an instance of `image`, which names it in crash records.
  Hooks(api::Module& module, const Image& image) noexcept
      : Hooks(module, image.info().abi, image.info().features, &image.site()) {}

  [[nodiscard]] bool has(Hook hook) const noexcept { return has_hook(abi_, features_, hook); }

  // Required: in every image.
  void start(api::Context& context) const {
    const Scope scope(site_, module_hook::kStart);
    module_.start(context);
  }
  [[nodiscard]] api::Response handle(const api::Request& request) const {
    const Scope scope(site_, module_hook::kHandle);
    return module_.handle(request);
  }
  void save_state(api::StateWriter& out, const api::SaveTarget& target) const {
    const Scope scope(site_, module_hook::kSaveState);
    module_.save_state(out, target);
  }
  void load_state(api::StateReader& in, const api::Migration& migration) const {
    const Scope scope(site_, module_hook::kLoadState);
    module_.load_state(in, migration);
  }
  void stop() const noexcept {
    const Scope scope(site_, module_hook::kStop);
    module_.stop();
  }

  // Optional: each one's fallback is what Module's default does.
  void on_connect(api::ConnectionId connection) const {
    const Scope scope(site_, module_hook::kOnConnect);
    if (has(Hook::OnConnect)) module_.on_connect(connection);
  }
  [[nodiscard]] std::size_t on_data(api::ConnectionId connection, std::string_view input, api::StreamOutput& out) const {
    const Scope scope(site_, module_hook::kOnData);
    return has(Hook::OnData) ? module_.on_data(connection, input, out) : input.size();
  }
  void on_disconnect(api::ConnectionId connection) const {
    const Scope scope(site_, module_hook::kOnDisconnect);
    if (has(Hook::OnDisconnect)) module_.on_disconnect(connection);
  }
  void on_timer(std::string_view name) const {
    const Scope scope(site_, module_hook::kOnTimer);
    if (has(Hook::OnTimer)) module_.on_timer(name);
  }
  void run_job_step(std::string_view job, api::JobStep& step) const {
    if (!has(Hook::RunJobStep)) throw std::logic_error("module has no job '" + std::string(job) + "'");
    const Scope scope(site_, module_hook::kRunJobStep);
    module_.run_job_step(job, step);
  }
  [[nodiscard]] std::optional<std::string> health() const {
    const Scope scope(site_, module_hook::kHealth);
    return has(Hook::Health) ? module_.health() : std::nullopt;
  }
  [[nodiscard]] std::string refusal_reply(api::Refusal reason) const {
    const Scope scope(site_, module_hook::kRefusalReply);
    return has(Hook::RefusalReply) ? module_.refusal_reply(reason) : std::string();
  }
  [[nodiscard]] void* detach_state() const noexcept {
    const Scope scope(site_, module_hook::kDetachState);
    return has(Hook::DetachState) ? module_.detach_state() : nullptr;
  }
  /// Whether the image implements pre-copy (all six transfer hooks).
  [[nodiscard]] bool can_transfer() const noexcept { return has(Hook::TransferBegin); }
  // Pre-copy. Precondition: can_transfer(), checked by the caller, which
  // otherwise saves and loads the whole state.
  void transfer_begin(const api::SaveTarget& target) const {
    const Scope scope(site_, module_hook::kTransferBegin);
    module_.transfer_begin(target);
  }
  [[nodiscard]] api::TransferStep transfer_chunk(api::StateWriter& out, const api::TransferBudget& budget) const {
    const Scope scope(site_, module_hook::kTransferChunk);
    return module_.transfer_chunk(out, budget);
  }
  [[nodiscard]] api::TransferStep transfer_delta(api::StateWriter& out, const api::TransferBudget& budget) const {
    const Scope scope(site_, module_hook::kTransferDelta);
    return module_.transfer_delta(out, budget);
  }
  [[nodiscard]] api::TransferStep transfer_final(api::StateWriter& out) const {
    const Scope scope(site_, module_hook::kTransferFinal);
    return module_.transfer_final(out);
  }
  void transfer_end() const noexcept {
    const Scope scope(site_, module_hook::kTransferEnd);
    if (has(Hook::TransferEnd)) module_.transfer_end();
  }
  void receive_part(api::StateReader& in, const api::Migration& migration, api::TransferPart part) const {
    const Scope scope(site_, module_hook::kReceivePart);
    module_.receive_part(in, migration, part);
  }
  /// Precondition: has(Hook::AttachState), checked by the transaction before
  /// it hands an object over; without it the object would be lost.
  void attach_state(void* state) const noexcept {
    const Scope scope(site_, module_hook::kAttachState);
    if (has(Hook::AttachState)) module_.attach_state(state);
  }

 private:
  /// A ModuleCodeScope when the image is known (not in tests of the ABI alone).
  class Scope {
   public:
    Scope(const ModuleSite* site, const char* hook) noexcept {
      if (site != nullptr) scope_.emplace(*site, hook);
    }

   private:
    std::optional<ModuleCodeScope> scope_;
  };

  api::Module& module_;
  std::uint32_t abi_;
  api::Features features_;
  const ModuleSite* site_;
};

}  // namespace molt::host
