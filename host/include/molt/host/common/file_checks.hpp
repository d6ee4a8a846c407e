// Whether a file the host opens is what it claims to be, and who may write
// a file the host trusts (an image, the run directory).
//
// Every file the host reads (images, state archives, upgrade scripts, the
// release record) is opened with open_regular_file: O_NONBLOCK, so that a
// FIFO or a device named where a file should be cannot hang the open (a
// reader of a FIFO waits in open(2) for a writer, forever, holding whatever
// lock its caller holds), then fstat, and anything but a regular file is
// refused in one line ("is a FIFO, not a regular file").
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace molt::host {

/// Whether the last component of a path may be a symbolic link. Paths the
/// host owns (its snapshots, its release record) refuse them: nobody but the
/// host puts files there, and a link there points somewhere it did not choose.
/// Paths an operator names (an image, an archive to restore) follow them.
enum class Symlinks { Follow, Refuse };

/// An open file descriptor, closed with the object.
class FileDescriptor {
 public:
  FileDescriptor() noexcept = default;
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  FileDescriptor(FileDescriptor&& other) noexcept : fd_(other.release()) {}
  FileDescriptor& operator=(FileDescriptor&& other) noexcept;
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor();

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_ = -1;
};

/// A regular file open for reading, and what fstat said of it.
struct RegularFile {
  FileDescriptor fd;
  struct stat st {};
};

/// What kind of file `mode` describes, with its article: "a FIFO",
/// "a directory", "a socket", "a symbolic link", "a regular file", ...
[[nodiscard]] std::string_view file_type_name(mode_t mode) noexcept;

/// Opens `path` for reading without ever blocking in open(2) (O_RDONLY |
/// O_NONBLOCK | O_NOCTTY | O_CLOEXEC, plus O_NOFOLLOW with Symlinks::Refuse)
/// and checks with fstat that it is a regular file. On failure, why, without
/// the path (the caller names it): "is a FIFO, not a regular file",
/// "is a symbolic link, not a regular file (not followed here)",
/// "cannot open: No such file or directory".
[[nodiscard]] std::optional<std::string> open_regular_file(const std::filesystem::path& path, Symlinks symlinks,
                                                           RegularFile& out);

/// The user and group databases, as the permission check asks them. The
/// system's (NSS) is the default; tests give their own.
class AccountDirectory {
 public:
  struct User {
    std::string name;
    gid_t primary_group = 0;
  };
  virtual ~AccountDirectory() = default;
  /// The user `uid`, or nothing if unknown.
  [[nodiscard]] virtual std::optional<User> user(uid_t uid) const = 0;
  /// The members group `gid` lists (its supplementary members), by name;
  /// nothing if the group is unknown.
  [[nodiscard]] virtual std::optional<std::vector<std::string>> listed_members(gid_t gid) const = 0;
  /// The users whose primary group is `gid`, by name: the group file does
  /// not list them, yet they are in it. Nothing if they cannot all be known.
  [[nodiscard]] virtual std::optional<std::vector<std::string>> primary_members(gid_t gid) const = 0;
};

/// The system's databases through NSS (getpwuid_r, getgrgid_r, and a scan of
/// the passwd database with getpwent_r, serialised by a mutex since the scan
/// position is process-wide). A directory service that does not enumerate its
/// users (sssd's default) shows only the local users' primary groups.
[[nodiscard]] const AccountDirectory& system_accounts();

/// Why `st` (described as `what` in the message) is unsafe to trust, or
/// nothing. Unsafe: owned by someone other than this user or root, or
/// writable by other users. Group write is fine only for the owner's private
/// group, one with no user in it but the owner (Debian's default for users):
/// it then grants nobody else anything. A user whose primary group it is
/// counts as much as a listed member.
[[nodiscard]] std::optional<std::string> unsafe_permissions(const struct stat& st, std::string_view what,
                                                            const AccountDirectory& accounts = system_accounts());

}  // namespace molt::host
