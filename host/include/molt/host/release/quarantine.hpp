// Quarantined images: image files the host will not load again by itself,
// because they crashed it. Recorded in <run dir>/quarantine.json, written
// atomically, read when the host starts.
//
// An image is quarantined when it crashed moltd while its release was on
// probation, or when it crashed moltd `crashes` times within `window`
// (crash_log.hpp, quarantine_reason). It stays quarantined, across restarts,
// until the operator clears it (moltctl quarantine clear FILE). An image is
// its bytes: entries are found by sha256, so a rebuilt file is a new image.
//
// Thread-safe: the release handler adds, the control socket lists and clears.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "molt/host/common/error.hpp"
#include "molt/types.hpp"

namespace molt::host {

[[nodiscard]] inline std::filesystem::path quarantine_path(const std::filesystem::path& run_dir) {
  return run_dir / "quarantine.json";
}

struct QuarantineEntry {
  std::string file;    ///< the operator's file, absolute
  std::string sha256;  ///< of that file, lowercase hex: what identifies the image
  std::string module;
  api::ModuleVersion version;
  std::string reason;  ///< one line: why, e.g. "crashed in load_state (SIGSEGV) before it was ever permanent"
  std::int64_t since_ms = 0;  ///< when it was quarantined, unix milliseconds
};

class Quarantine {
 public:
  /// The quarantine recorded at `path` (quarantine_path(run dir)); empty when
  /// there is no file. An Error when it cannot be read: not a regular file (a
  /// link or FIFO is refused, without blocking), too large, or not valid.
  [[nodiscard]] static Result<std::unique_ptr<Quarantine>> open(std::filesystem::path path);

  /// Quarantines `entry`'s image, replacing an entry with the same sha256
  /// (its newest reason wins, its first `since_ms` is kept). Written before
  /// it returns; on a failed write nothing changes, in memory or on disk.
  [[nodiscard]] Result<void> add(QuarantineEntry entry);

  /// The entry for the image with this sha256 (all 64 digits), if quarantined.
  [[nodiscard]] std::optional<QuarantineEntry> find_sha256(std::string_view sha256) const;

  /// Lets go of the images `file_or_sha256` names: a file's absolute path
  /// (every image of that file), a sha256, or the start of one of at least 12
  /// digits, as the crash line shows it ("0123456789ab…", the "…" optional).
  /// Returns the entries removed. An Error, and nothing removed, when nothing
  /// matches ("no quarantined image matches 'X' (moltctl quarantine lists
  /// them)"), when a start of a sha256 matches more than one image, or when
  /// the write fails.
  [[nodiscard]] Result<std::vector<QuarantineEntry>> clear(std::string_view file_or_sha256);

  /// Every entry, oldest first.
  [[nodiscard]] std::vector<QuarantineEntry> list() const;

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  explicit Quarantine(std::filesystem::path path) : path_(std::move(path)) {}
  [[nodiscard]] Result<void> write(const std::vector<QuarantineEntry>& entries) const;

  const std::filesystem::path path_;
  mutable std::mutex mutex_;
  std::vector<QuarantineEntry> entries_;  ///< what the file holds, oldest first; one per sha256 (guarded by mutex_)
};

}  // namespace molt::host
