// What the host knows about each plugin ABI it loads, from kAbiOldest to
// kAbiVersion: how large an image's MoltModuleInfo is, which hooks its
// vtable has, and which features it implies when the image cannot say.
//
// Images of several ABIs run side by side (an ABI-5 image upgraded to an
// ABI-6 one, and back). The loader records each image's ABI and features in
// its ImageInfo; the host calls hooks only through Hooks (slot/hooks.hpp),
// which asks has_hook() first: a hook newer than the image is not in its
// vtable, and calling it would jump to whatever follows the vtable.
//
// A minor ABI bump adds a row to kHooks for each new hook (and a case to
// info_size_of for a grown MoltModuleInfo); nothing else here changes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "molt/module.hpp"

namespace molt::host {

/// A Module function the host calls.
enum class Hook : std::uint8_t {
  Start,
  Handle,
  SaveState,
  LoadState,
  Stop,
  OnConnect,
  OnData,
  OnDisconnect,
  OnTimer,
  DetachState,
  AttachState,
  Health,
  RunJobStep,
  RefusalReply,
  TransferBegin,
  TransferChunk,
  TransferDelta,
  TransferFinal,
  TransferEnd,
  ReceivePart,
};

struct HookSpec {
  Hook hook;
  std::string_view name;                 ///< as in module.hpp, for messages
  std::uint32_t first_abi;               ///< the first plugin ABI whose Module has it
  std::optional<api::Feature> feature;   ///< none: required, every image implements it
};

/// Every hook, with the ABI that added it (see the history at kAbiVersion).
inline constexpr std::array<HookSpec, 20> kHooks{{
    {Hook::Start, "start", 1, std::nullopt},
    {Hook::Handle, "handle", 1, std::nullopt},
    {Hook::SaveState, "save_state", 1, std::nullopt},
    {Hook::LoadState, "load_state", 1, std::nullopt},
    {Hook::Stop, "stop", 1, std::nullopt},
    {Hook::OnConnect, "on_connect", 2, api::Feature::Streams},
    {Hook::OnData, "on_data", 2, api::Feature::Streams},
    {Hook::OnDisconnect, "on_disconnect", 2, api::Feature::Streams},
    {Hook::OnTimer, "on_timer", 2, api::Feature::Timers},
    {Hook::DetachState, "detach_state", 2, api::Feature::StateInMemory},
    {Hook::AttachState, "attach_state", 2, api::Feature::StateInMemory},
    {Hook::Health, "health", 3, api::Feature::Health},
    {Hook::RunJobStep, "run_job_step", 4, api::Feature::Jobs},
    {Hook::RefusalReply, "refusal_reply", 5, api::Feature::RefusalReply},
    {Hook::TransferBegin, "transfer_begin", 7, api::Feature::Transfer},
    {Hook::TransferChunk, "transfer_chunk", 7, api::Feature::Transfer},
    {Hook::TransferDelta, "transfer_delta", 7, api::Feature::Transfer},
    {Hook::TransferFinal, "transfer_final", 7, api::Feature::Transfer},
    {Hook::TransferEnd, "transfer_end", 7, api::Feature::Transfer},
    {Hook::ReceivePart, "receive_part", 7, api::Feature::Transfer},
}};

/// Its row in kHooks, which lists the hooks in the order Hook declares them.
[[nodiscard]] constexpr const HookSpec& spec_of(Hook hook) { return kHooks[static_cast<std::size_t>(hook)]; }

static_assert([] {
  for (std::size_t i = 0; i < kHooks.size(); ++i)
    if (kHooks[i].hook != static_cast<Hook>(i)) return false;
  return true;
}(), "kHooks lists the hooks in the order Hook declares them");

/// Whether an image built for plugin ABI `abi` that declares `features` has
/// `hook`: its vtable holds it and, for an optional hook, the module
/// implements it (otherwise the host acts as Module's default would).
[[nodiscard]] constexpr bool has_hook(std::uint32_t abi, api::Features features, Hook hook) {
  const HookSpec& spec = spec_of(hook);
  return abi >= spec.first_abi && (!spec.feature || features.has(*spec.feature));
}

/// The features an image built for `abi` has, when its MoltModuleInfo is too
/// old to declare them (before ABI 6): all whose hooks its ABI had, since
/// the host cannot tell which of them the module overrides. Calling a hook
/// that was not overridden only runs Module's default.
[[nodiscard]] constexpr api::Features features_implied_by(std::uint32_t abi) {
  api::Features features;
  for (const HookSpec& spec : kHooks)
    if (spec.feature && abi >= spec.first_abi) features.add(*spec.feature);
  return features;
}

/// Feature bits this host knows; an image's other bits are ignored.
inline constexpr api::Features kKnownFeatures = features_implied_by(api::kAbiVersion);

/// The size of MoltModuleInfo in plugin ABI `abi` (kAbiOldest..kAbiVersion):
/// the least an image of that ABI may declare in info_size.
[[nodiscard]] constexpr std::size_t info_size_of(std::uint32_t abi) {
  return abi >= 6 ? sizeof(MoltModuleInfo) : offsetof(MoltModuleInfo, features);
}

// The layouts the table above describes (ABI 5: tests/plugins/abi5/).
static_assert(offsetof(MoltModuleInfo, features) == 96, "ABI 5's MoltModuleInfo is 96 bytes");
static_assert(sizeof(MoltModuleInfo) == 104, "ABI 6's MoltModuleInfo is 104 bytes");

}  // namespace molt::host
