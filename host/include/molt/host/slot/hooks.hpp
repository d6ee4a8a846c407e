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
#pragma once

#include <stdexcept>
#include <string>

#include "molt/host/loader/abi.hpp"
#include "molt/host/loader/loader.hpp"
#include "molt/module.hpp"

namespace molt::host {

class Hooks {
 public:
  /// `module`, which must outlive this object, is an instance of an image
  /// built for `abi` that declares `features` (its ImageInfo's).
  Hooks(api::Module& module, std::uint32_t abi, api::Features features) noexcept
      : module_(module), abi_(abi), features_(features) {}
  Hooks(api::Module& module, const ImageInfo& image) noexcept : Hooks(module, image.abi, image.features) {}

  [[nodiscard]] bool has(Hook hook) const noexcept { return has_hook(abi_, features_, hook); }

  // Required: in every image.
  void start(api::Context& context) const { module_.start(context); }
  [[nodiscard]] api::Response handle(const api::Request& request) const { return module_.handle(request); }
  void save_state(api::StateWriter& out, const api::SaveTarget& target) const { module_.save_state(out, target); }
  void load_state(api::StateReader& in, const api::Migration& migration) const { module_.load_state(in, migration); }
  void stop() const noexcept { module_.stop(); }

  // Optional: each one's fallback is what Module's default does.
  void on_connect(api::ConnectionId connection) const {
    if (has(Hook::OnConnect)) module_.on_connect(connection);
  }
  [[nodiscard]] std::size_t on_data(api::ConnectionId connection, std::string_view input, api::StreamOutput& out) const {
    return has(Hook::OnData) ? module_.on_data(connection, input, out) : input.size();
  }
  void on_disconnect(api::ConnectionId connection) const {
    if (has(Hook::OnDisconnect)) module_.on_disconnect(connection);
  }
  void on_timer(std::string_view name) const {
    if (has(Hook::OnTimer)) module_.on_timer(name);
  }
  void run_job_step(std::string_view job, api::JobStep& step) const {
    if (!has(Hook::RunJobStep)) throw std::logic_error("module has no job '" + std::string(job) + "'");
    module_.run_job_step(job, step);
  }
  [[nodiscard]] std::optional<std::string> health() const {
    return has(Hook::Health) ? module_.health() : std::nullopt;
  }
  [[nodiscard]] std::string refusal_reply(api::Refusal reason) const {
    return has(Hook::RefusalReply) ? module_.refusal_reply(reason) : std::string();
  }
  [[nodiscard]] void* detach_state() const noexcept { return has(Hook::DetachState) ? module_.detach_state() : nullptr; }
  /// Precondition: has(Hook::AttachState), checked by the transaction before
  /// it hands an object over; without it the object would be lost.
  void attach_state(void* state) const noexcept {
    if (has(Hook::AttachState)) module_.attach_state(state);
  }

 private:
  api::Module& module_;
  std::uint32_t abi_;
  api::Features features_;
};

}  // namespace molt::host
