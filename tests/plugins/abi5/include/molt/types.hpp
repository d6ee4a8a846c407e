// Vocabulary types shared by modules and the host.
//
// Everything here crosses the boundary between the host and a module image, so
// it is part of the plugin ABI: changing a layout means bumping kAbiVersion.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace molt::api {

/// The plugin ABI this header describes. The host refuses an image built
/// against another ABI before it runs any of the image's code.
/// 2: streams (on_connect/on_data/on_disconnect), host timers, state handoff.
/// 3: Module::health.
/// 4: jobs (Context::start_job, Module::run_job_step), one-shot timers.
/// 5: output backpressure (StreamOutput::has_room), Context::stream_limits,
///    Module::refusal_reply, StateReader(source, size) reading through the
///    bounds-checked StateArchive.
inline constexpr std::uint32_t kAbiVersion = 5;

/// A module's release number. Positive; each release of a module gets a
/// larger one. Two images of one module with the same version are the same
/// release (for example a rebuild).
struct ModuleVersion {
  std::uint32_t value = 0;
  friend constexpr auto operator<=>(ModuleVersion, ModuleVersion) = default;
};

/// The version of a module's state layout. Positive; it changes only when the
/// layout of the saved state changes, so many module versions share one.
struct SchemaVersion {
  std::uint32_t value = 0;
  friend constexpr auto operator<=>(SchemaVersion, SchemaVersion) = default;
};

/// Which way an upgrade goes, from the point of view of the module versions.
enum class Direction : std::uint8_t {
  Up,    ///< to a newer module version
  Down,  ///< to an older module version
  Same,  ///< same module version: a rebuild, a restore from a snapshot
};

/// Configuration values and migration `extra` arguments: string keys to string
/// values, as given in the host's configuration or the upgrade command.
using Values = std::map<std::string, std::string, std::less<>>;

}  // namespace molt::api
