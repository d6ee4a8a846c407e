// Releases: which version of each module runs, as a named set, and what the
// host boots. Recorded in <run dir>/releases.json, written atomically.
//
//   current    what runs now; installed, on probation until made permanent
//   previous   what ran before `current` (what a release rollback returns to)
//   permanent  the last permanent release: what moltd boots, like OTP's
//              start_erl.data. A release never made permanent is not booted.
//
// Module settings (listen, config values) are recorded with each module, so
// that modules added by a script can be started again; at boot the
// configuration file's settings win where it names the module.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/host/config/host_config.hpp"
#include "molt/types.hpp"

namespace molt::host {

struct ReleaseModule {
  std::string name;
  api::ModuleVersion version;
  std::string file;    ///< absolute path of the image file
  std::string sha256;  ///< of that file when the release was installed
  std::vector<Endpoint> listen;
  api::Values config;
};

struct Release {
  std::string name;
  std::vector<ReleaseModule> modules;  ///< in start order
  std::int64_t installed_at_ms = 0;
  std::optional<std::int64_t> permanent_at_ms;  ///< set once made permanent

  [[nodiscard]] const ReleaseModule* find(std::string_view module) const;
  [[nodiscard]] ReleaseModule* find(std::string_view module);
};

/// What happened to releases, newest last; for `moltctl releases`.
struct ReleaseEvent {
  std::int64_t at_ms = 0;
  std::string release;
  std::string what;  ///< "installed", "permanent", "rolled back", "booted"
  std::string detail;
};

struct ReleaseRecord {
  Release current;
  std::optional<Release> previous;
  Release permanent;
  std::deque<ReleaseEvent> events;

  [[nodiscard]] bool current_is_permanent() const { return current.permanent_at_ms.has_value(); }
  void note(std::string release, std::string what, std::string detail = {});
};

[[nodiscard]] std::int64_t now_ms();

/// The record at `path`; nothing if there is none; an Error if it cannot be read.
[[nodiscard]] Result<std::optional<ReleaseRecord>> read_release_record(const std::filesystem::path& path);
/// Writes the record atomically.
[[nodiscard]] Result<void> write_release_record(const std::filesystem::path& path, const ReleaseRecord& record);

}  // namespace molt::host
