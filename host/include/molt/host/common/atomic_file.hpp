// Replacing a file so that a crash leaves the old contents or the new ones,
// never a mix: a temporary file in the same directory, fsync, rename over
// the target, fsync of the directory (which makes the rename itself durable).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <optional>
#include <span>
#include <cstdint>
#include <vector>

#include "molt/host/common/file_checks.hpp"

namespace molt::host {

/// A file being written atomically: a temporary file in the target's
/// directory (".NAME.tmp.PID"), written in order (and, for a header whose
/// contents are known only at the end, at an offset); commit() makes it
/// durable and renames it over the target. Destroyed without commit(), the
/// temporary is removed and the target is untouched. Every failure is one
/// line, without the target's path.
class AtomicFile {
 public:
  /// Creates the temporary file; why not, on failure.
  [[nodiscard]] static std::optional<std::string> open(const std::filesystem::path& path, AtomicFile& file);

  AtomicFile() = default;
  AtomicFile(AtomicFile&& other) noexcept;
  AtomicFile& operator=(AtomicFile&& other) noexcept;
  ~AtomicFile();

  /// Appends `bytes`.
  [[nodiscard]] std::optional<std::string> write(std::string_view bytes);
  /// Writes `bytes` at `offset`, without moving where write() appends.
  [[nodiscard]] std::optional<std::string> write_at(std::uint64_t offset, std::string_view bytes);
  /// Moves where write() appends to `offset` (a hole is left before it).
  [[nodiscard]] std::optional<std::string> seek(std::uint64_t offset);
  /// fsync, rename over the target, fsync of the directory.
  [[nodiscard]] std::optional<std::string> commit();

  [[nodiscard]] int fd() const noexcept { return fd_; }
  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }

 private:
  void abandon() noexcept;

  std::filesystem::path path_;
  std::filesystem::path temp_;
  int fd_ = -1;
};

/// Writes `bytes` to `path` atomically; on failure, why (the target is then
/// untouched and no temporary file is left).
[[nodiscard]] std::optional<std::string> write_file_atomically(const std::filesystem::path& path, std::string_view bytes);
/// The same for a file made of `pieces`, written one after the other: a
/// large state is written from where it lies, not copied behind its header.
[[nodiscard]] std::optional<std::string> write_file_atomically(const std::filesystem::path& path,
                                                               std::span<const std::string_view> pieces);

/// Removes the temporary files a crash in write_file_atomically left in
/// `dir` (".NAME.tmp.PID"), and returns their names. Only for a directory no
/// other process writes to (moltd holds its run directory's lock).
std::vector<std::string> remove_stale_temporaries(const std::filesystem::path& dir);

/// Reads a whole regular file of at most `max_bytes`; on failure, why (one
/// line, without the path). Opened with open_regular_file (file_checks.hpp):
/// a FIFO, device, socket or directory is refused at once, never waited on;
/// with Symlinks::Refuse, so is a symbolic link.
[[nodiscard]] std::optional<std::string> read_file(const std::filesystem::path& path, std::uint64_t max_bytes,
                                                   std::string& contents, Symlinks symlinks = Symlinks::Follow);

}  // namespace molt::host
