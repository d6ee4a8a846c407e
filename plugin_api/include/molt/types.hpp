// Vocabulary types shared by modules and the host.
//
// Everything here crosses the boundary between the host and a module image, so
// it is part of the plugin ABI: see kAbiVersion for what a change to it costs.
#pragma once

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace molt::api {

/// The plugin ABI this header describes, written into every image it builds
/// (MoltModuleInfo::abi_version). The host loads an image built for any ABI
/// from kAbiOldest to its own kAbiVersion, and refuses any other before it
/// runs any of the image's code.
///
/// The promise (docs/plugin-api.md, "ABI versions and the compatibility
/// promise"): a module built once keeps loading until a major bump.
///  - Minor bump, kAbiVersion + 1, kAbiOldest unchanged: only what an image
///    built before it cannot notice. New virtual functions appended at the
///    end of Module, Context or StreamOutput (one built for ABI n has no
///    slot for them: the host never calls a Module hook newer than the
///    image, and gives its documented default instead); new fields appended
///    at the end of MoltModuleInfo (read only when the image's info_size
///    covers them); new enumerators the host passes only to images of that
///    ABI or later; new header-only helpers and types that do not cross the
///    boundary.
///  - Major bump, kAbiOldest raised: anything else. Reordering, removing or
///    changing a virtual function; changing the layout of a type that
///    crosses the boundary (Request, Response, StateWriter, StateReader,
///    SaveTarget, Migration, JobStep, StreamLimits, Values, ...); changing
///    the state archive's format (images of two ABIs read each other's
///    state); requiring of every module something that images built before
///    it do not do.
///
/// History (before 6, each version refused every other):
/// 2: streams (on_connect/on_data/on_disconnect), host timers, state handoff.
/// 3: Module::health.
/// 4: jobs (Context::start_job, Module::run_job_step), one-shot timers.
/// 5: output backpressure (StreamOutput::has_room), Context::stream_limits,
///    Module::refusal_reply, StateReader(source, size) reading through the
///    bounds-checked StateArchive.
/// 6: versioned loading (kAbiOldest); MoltModuleInfo::features. Minor: an
///    ABI-5 image loads unchanged.
/// 7: pre-copy (Module::transfer_begin ... receive_part, Feature::Transfer,
///    molt/transfer.hpp). Minor.
inline constexpr std::uint32_t kAbiVersion = 7;

/// The oldest plugin ABI a host built from these headers loads. Raised only
/// by a major bump; every ABI from here to kAbiVersion loads.
inline constexpr std::uint32_t kAbiOldest = 5;

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
