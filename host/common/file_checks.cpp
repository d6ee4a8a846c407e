#include "molt/host/common/file_checks.hpp"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace molt::host {
namespace {

std::string octal_mode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

bool private_group(const struct stat& st) {
  const passwd* owner = getpwuid(st.st_uid);
  if (owner == nullptr || owner->pw_gid != st.st_gid) return false;
  const group* grp = getgrgid(st.st_gid);
  if (grp == nullptr) return false;
  for (char** member = grp->gr_mem; *member != nullptr; ++member)
    if (std::strcmp(*member, owner->pw_name) != 0) return false;
  return true;
}

}  // namespace

std::optional<std::string> unsafe_permissions(const struct stat& st, std::string_view what) {
  if (st.st_uid != 0 && st.st_uid != geteuid())
    return std::string(what) + " is owned by uid " + std::to_string(st.st_uid) + ", not by this user (uid " +
           std::to_string(geteuid()) + ") or root";
  if ((st.st_mode & S_IWOTH) != 0 || ((st.st_mode & S_IWGRP) != 0 && !private_group(st)))
    return std::string(what) + " is writable by other users (mode " + octal_mode(st.st_mode) + "); run chmod go-w on it";
  return std::nullopt;
}

}  // namespace molt::host
