#include "molt/host/common/file_checks.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <system_error>

namespace molt::host {
namespace {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

std::string octal_mode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string not_regular(mode_t mode) {
  std::string why = "is " + std::string(file_type_name(mode)) + ", not a regular file";
  if (S_ISLNK(mode)) why += " (links are not followed here)";
  return why;
}

/// Calls `lookup(buffer, size)` (a getpwuid_r-style function returning an
/// errno value) with a buffer that grows while it answers ERANGE.
template <class Lookup>
int with_buffer(std::vector<char>& buffer, Lookup lookup) {
  if (buffer.empty()) buffer.resize(4096);
  for (;;) {
    const int err = lookup(buffer.data(), buffer.size());
    if (err != ERANGE || buffer.size() >= (1u << 24)) return err;
    buffer.resize(buffer.size() * 2);
  }
}

class SystemAccounts final : public AccountDirectory {
 public:
  std::optional<User> user(uid_t uid) const override {
    passwd pw{};
    passwd* found = nullptr;
    std::vector<char> buffer;
    with_buffer(buffer, [&](char* data, std::size_t size) { return getpwuid_r(uid, &pw, data, size, &found); });
    if (found == nullptr) return std::nullopt;
    return User{found->pw_name, found->pw_gid};
  }

  std::optional<std::vector<std::string>> listed_members(gid_t gid) const override {
    group gr{};
    group* found = nullptr;
    std::vector<char> buffer;
    with_buffer(buffer, [&](char* data, std::size_t size) { return getgrgid_r(gid, &gr, data, size, &found); });
    if (found == nullptr) return std::nullopt;
    std::vector<std::string> names;
    for (char** member = found->gr_mem; *member != nullptr; ++member) names.emplace_back(*member);
    return names;
  }

  std::optional<std::vector<std::string>> primary_members(gid_t gid) const override {
    // Only a scan of every user finds them. Its position is process-wide
    // (setpwent/getpwent_r), hence the mutex.
    static std::mutex scan_mutex;
    std::lock_guard lock(scan_mutex);
    std::vector<std::string> names;
    std::vector<char> buffer;
    bool complete = false;
    setpwent();
    for (std::size_t n = 0; n < kMaxUsersScanned; ++n) {
      passwd pw{};
      passwd* entry = nullptr;
      const int err =
          with_buffer(buffer, [&](char* data, std::size_t size) { return getpwent_r(&pw, data, size, &entry); });
      if (err != 0 || entry == nullptr) {
        complete = err == 0 || err == ENOENT;  // the end of the database
        break;
      }
      if (entry->pw_gid == gid) names.emplace_back(entry->pw_name);
    }
    endpwent();
    if (!complete) return std::nullopt;  // cut short: who else is in it is unknown
    return names;
  }

 private:
  static constexpr std::size_t kMaxUsersScanned = 1 << 20;
};

/// Whether group write on `st` grants nobody but its owner anything: its
/// group is the owner's primary group, and no other user is in it, listed
/// or by primary group.
bool private_group(const struct stat& st, const AccountDirectory& accounts) {
  const auto owner = accounts.user(st.st_uid);
  if (!owner || owner->primary_group != st.st_gid) return false;
  const auto only_owner = [&](const std::optional<std::vector<std::string>>& names) {
    return names && std::all_of(names->begin(), names->end(), [&](const std::string& name) { return name == owner->name; });
  };
  return only_owner(accounts.listed_members(st.st_gid)) && only_owner(accounts.primary_members(st.st_gid));
}

}  // namespace

FileDescriptor& FileDescriptor::operator=(FileDescriptor&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

FileDescriptor::~FileDescriptor() {
  if (fd_ >= 0) ::close(fd_);
}

std::string_view file_type_name(mode_t mode) noexcept {
  switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    default: return "a file of unknown type";
  }
}

std::optional<std::string> open_regular_file(const std::filesystem::path& path, Symlinks symlinks, RegularFile& out) {
  // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer,
  // forever. It changes nothing for a regular file's reads.
  int flags = O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
  if (symlinks == Symlinks::Refuse) flags |= O_NOFOLLOW;
  FileDescriptor fd(::open(path.c_str(), flags));
  if (!fd.valid()) {
    const int err = errno;
    // Say what is there when open(2) refused it for being what it is: a
    // link not followed (ELOOP), a socket (ENXIO).
    struct stat st {};
    const bool is_there = symlinks == Symlinks::Refuse ? ::lstat(path.c_str(), &st) == 0 : ::stat(path.c_str(), &st) == 0;
    if ((err == ELOOP || err == ENXIO) && is_there && !S_ISREG(st.st_mode)) return not_regular(st.st_mode);
    return "cannot open: " + errno_text(err);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return "cannot stat: " + errno_text(errno);
  if (!S_ISREG(st.st_mode)) return not_regular(st.st_mode);
  out.fd = std::move(fd);
  out.st = st;
  return std::nullopt;
}

const AccountDirectory& system_accounts() {
  static const SystemAccounts accounts;
  return accounts;
}

std::optional<std::string> unsafe_permissions(const struct stat& st, std::string_view what,
                                              const AccountDirectory& accounts) {
  if (st.st_uid != 0 && st.st_uid != geteuid())
    return std::string(what) + " is owned by uid " + std::to_string(st.st_uid) + ", not by this user (uid " +
           std::to_string(geteuid()) + ") or root";
  if ((st.st_mode & S_IWOTH) != 0 || ((st.st_mode & S_IWGRP) != 0 && !private_group(st, accounts)))
    return std::string(what) + " is writable by other users (mode " + octal_mode(st.st_mode) + "); run chmod go-w on it";
  return std::nullopt;
}

}  // namespace molt::host
