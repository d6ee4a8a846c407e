#include "molt/host/common/secret_file.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "molt/host/common/atomic_file.hpp"

namespace molt::host {

Result<std::string> read_secret_file(const std::filesystem::path& path) {
  const auto fail = [&](std::string why) { return Error{"(host)", {}, {}, Phase::Config, path.string() + ": " + std::move(why)}; };
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return fail(std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return fail("not a regular file");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return fail(std::string("mode ") + mode + ": group or others may read or write it; chmod 600 it");
  }
  if (st.st_size > 4096) return fail("over 4 KiB: is it the right file?");
  std::string secret;
  if (auto why = read_file(path, 4096, secret)) return fail(*why);
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.size() < 16) return fail("holds " + std::to_string(secret.size()) + " bytes; a secret needs at least 16");
  return secret;
}

}  // namespace molt::host
