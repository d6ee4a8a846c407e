// Who owns a module that moves between hosts: one epoch per module, kept in
// <run dir>/ownership.json and written durably (AtomicFile) before anything
// that depends on it is said to the other side (docs/handoff.md).
//
// A module never handed over has no entry: it is owned here at epoch 0 if
// the configuration names it. A handoff of epoch E (the source's epoch + 1):
//   source  Moving(E) before its freeze   -> Moved(E) after the target said Owned
//   target  Owned(E), written before it says so
// Moving means "maybe moved": a moltd that finds it at start does not serve
// the module until the target has said who owns it (resolve()). So at any
// time, after any crash, at most one side serves: the target from the moment
// it wrote Owned(E), the source only while it has no Moving or Moved entry,
// or after the target said it never took epoch E.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "molt/host/common/error.hpp"

namespace molt::host {

enum class Ownership {
  Owned,   ///< received from `peer` at `epoch`: served here
  Moving,  ///< a handoff of `epoch` to `peer` began: not served here until resolved
  Moved,   ///< handed to `peer` at `epoch`: not served here
};

[[nodiscard]] const char* to_string(Ownership ownership) noexcept;

struct OwnershipEntry {
  Ownership ownership = Ownership::Owned;
  std::uint64_t epoch = 0;
  std::string peer;  ///< HOST:PORT of the other moltd's peer listener
  std::int64_t at_ms = 0;  ///< when it was written (wall clock)
  /// Moving only: the entry before it (none: the module had none), which a
  /// handoff that the target never took restores.
  std::shared_ptr<const OwnershipEntry> prior;
  /// Moved only: where its clients go (its listener there, HOST:PORT) and
  /// its HTTP requests (the other moltd's HTTP address); may be empty.
  std::string redirect;
  std::string http;
  /// "moved to 10.0.0.2:7400 at epoch 3" / "received from ... at epoch 3".
  [[nodiscard]] std::string describe() const;
  [[nodiscard]] nlohmann::json to_json() const;
};

class OwnershipRecord {
 public:
  /// Reads `path` (missing: empty). Errors name the file and the reason.
  [[nodiscard]] static Result<std::unique_ptr<OwnershipRecord>> open(std::filesystem::path path);

  [[nodiscard]] std::optional<OwnershipEntry> find(const std::string& module) const;
  /// The epoch of `module` here: its entry's, or 0.
  [[nodiscard]] std::uint64_t epoch(const std::string& module) const;
  /// Records `entry` for `module`, durably (fsync, rename, fsync of the
  /// directory) before returning; on failure nothing changed.
  [[nodiscard]] Result<void> set(const std::string& module, OwnershipEntry entry);
  /// Makes `module`'s entry `entry`, or removes it (none), durably.
  [[nodiscard]] Result<void> put(const std::string& module, const std::optional<OwnershipEntry>& entry);
  /// Puts back what a Moving entry replaced (its prior): that entry, or none.
  [[nodiscard]] Result<void> revert(const std::string& module);
  [[nodiscard]] std::map<std::string, OwnershipEntry> entries() const;

 private:
  explicit OwnershipRecord(std::filesystem::path path) : path_(std::move(path)) {}
  Result<void> write_locked(const std::string& module, std::map<std::string, OwnershipEntry> next);
  std::filesystem::path path_;
  mutable std::mutex mutex_;
  std::map<std::string, OwnershipEntry> entries_;  ///< guarded by mutex_
};

}  // namespace molt::host
