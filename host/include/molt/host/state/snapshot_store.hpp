// Snapshots: each module's last saved state, in <run dir>/snapshots/<module>.molt
// (the state archive format: a header line with module, version, schema,
// length and SHA-256, then the bytes). Written atomically, so a crash leaves
// the previous snapshot or the new one, never a mix. A snapshot that cannot
// be trusted is moved aside, never deleted or overwritten.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/host/state/state_blob.hpp"

namespace molt::host {

class SnapshotStore {
 public:
  SnapshotStore(std::filesystem::path dir, std::uint64_t max_state_bytes)
      : dir_(std::move(dir)), max_state_bytes_(max_state_bytes) {}

  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return dir_; }
  [[nodiscard]] std::filesystem::path path_of(std::string_view module) const;

  /// Writes `blob` as the module's snapshot (temporary file, fsync, rename);
  /// refuses a state larger than max_state_bytes, which load() would refuse.
  Result<void> save(const StateBlob& blob) const;

  /// The module's snapshot; nothing if it has none; an Error if something is
  /// there but cannot be read or trusted (truncated, altered, another
  /// module; not a regular file, a symbolic link: refused without blocking).
  Result<std::optional<StateBlob>> load(std::string_view module) const;

  /// Renames the module's snapshot to <module>.molt.<why>-<UTC time>, so that
  /// nothing overwrites it; returns the new path.
  Result<std::filesystem::path> move_aside(std::string_view module, std::string_view why) const;

  /// Modules that have a snapshot.
  [[nodiscard]] std::vector<std::string> modules() const;

 private:
  std::filesystem::path dir_;
  std::uint64_t max_state_bytes_;
};

}  // namespace molt::host
