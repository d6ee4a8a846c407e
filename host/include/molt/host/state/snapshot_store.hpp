// Snapshots: each module's last saved state, in <run dir>/snapshots/<module>.molt
// (the state archive format: a header line with module, version, schema,
// length and SHA-256, then the bytes). Written atomically, so a crash leaves
// the previous snapshot or the new one, never a mix. A snapshot that cannot
// be trusted is moved aside, never deleted or overwritten.
//
// Kept states: <module>.schema-<S>.molt, the module's state in schema S as it
// was the last time an upgrade moved it out of schema S. A boot whose
// release runs schema S and cannot read the snapshot (written in a newer
// schema by a release that never became permanent, or corrupt) starts from
// it instead of loading the code that wrote the snapshot.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/host/state/part_file.hpp"
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

  /// Begins the module's snapshot as a file of pre-copy parts, written as
  /// they come (part_file.hpp); its commit() puts it in place like save().
  Result<std::unique_ptr<PartFile>> open_parts(const StateBlob& about) const;

  /// The module's snapshot; nothing if it has none; an Error if something is
  /// there but cannot be read or trusted (truncated, altered, another
  /// module; not a regular file, a symbolic link: refused without blocking).
  Result<std::optional<StateBlob>> load(std::string_view module) const;

  /// Renames the module's snapshot to <module>.molt.<why>-<UTC time>, so that
  /// nothing overwrites it; returns the new path.
  Result<std::filesystem::path> move_aside(std::string_view module, std::string_view why) const;

  /// Modules that have a snapshot.
  [[nodiscard]] std::vector<std::string> modules() const;

  /// Keeps the module's snapshot as <module>.molt.<why>-<UTC time> (as
  /// move_aside, but linked there first), then writes `blob` as its snapshot:
  /// a crash in between leaves both, never neither. Returns where the old
  /// snapshot went; none if there was none.
  Result<std::optional<std::filesystem::path>> replace(const StateBlob& blob, std::string_view why) const;

  /// A state kept in one schema, and when it was written.
  struct Kept {
    StateBlob blob;
    std::chrono::system_clock::time_point at;
  };

  /// <dir>/<module>.schema-<schema>.molt
  [[nodiscard]] std::filesystem::path path_of_kept(std::string_view module, api::SchemaVersion schema) const;
  /// Writes `blob` as the kept state of its schema, like save().
  Result<void> save_kept(const StateBlob& blob) const;
  /// Begins the kept state of `about.schema` as a file of pre-copy parts, like open_parts().
  Result<std::unique_ptr<PartFile>> open_kept_parts(const StateBlob& about) const;
  /// The module's kept state in `schema`; nothing if there is none; an Error
  /// if what is there cannot be read or trusted (as load(), and it must be
  /// in `schema`).
  Result<std::optional<Kept>> load_kept(std::string_view module, api::SchemaVersion schema) const;
  /// Renames the kept state in `schema`, if there is one, to
  /// <module>.schema-<S>.molt.<why>-<UTC time>, so that no boot uses it.
  Result<std::optional<std::filesystem::path>> move_kept_aside(std::string_view module, api::SchemaVersion schema,
                                                               std::string_view why) const;

 private:
  Result<void> write(const std::filesystem::path& path, const StateBlob& blob) const;
  Result<std::unique_ptr<PartFile>> open_parts_at(const std::filesystem::path& path, const StateBlob& about) const;
  /// Creates the directory (owner-only) if it is missing.
  Result<void> make_dir(const StateBlob& about) const;
  Result<std::optional<StateBlob>> read(const std::filesystem::path& path, std::string_view module) const;

  std::filesystem::path dir_;
  std::uint64_t max_state_bytes_;
};

}  // namespace molt::host
