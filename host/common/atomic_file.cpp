#include "molt/host/common/atomic_file.hpp"

#include <algorithm>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <utility>

#include "molt/host/common/fault.hpp"
#include "molt/host/common/file_checks.hpp"

namespace molt::host {
namespace fs = std::filesystem;
namespace {

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace

std::optional<std::string> AtomicFile::open(const fs::path& path, AtomicFile& file) {
  file = AtomicFile();
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code exists_error;
  if (!fs::is_directory(dir, exists_error)) return "directory " + dir.string() + " does not exist";
  file.path_ = path;
  file.temp_ = dir / ("." + path.filename().string() + ".tmp." + std::to_string(::getpid()));
  file.fd_ = ::open(file.temp_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (file.fd_ < 0) return "cannot create " + file.temp_.string() + ": " + errno_text(errno);
  fault_point("write.temp-open", path.native());
  return std::nullopt;
}

AtomicFile::AtomicFile(AtomicFile&& other) noexcept
    : path_(std::move(other.path_)), temp_(std::move(other.temp_)), fd_(std::exchange(other.fd_, -1)) {}

AtomicFile& AtomicFile::operator=(AtomicFile&& other) noexcept {
  if (this != &other) {
    abandon();
    path_ = std::move(other.path_);
    temp_ = std::move(other.temp_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

AtomicFile::~AtomicFile() { abandon(); }

void AtomicFile::abandon() noexcept {
  if (fd_ < 0) return;
  ::close(fd_);
  fd_ = -1;
  std::error_code ec;
  fs::remove(temp_, ec);
}

std::optional<std::string> AtomicFile::write(std::string_view bytes) {
  if (!write_all(fd_, bytes)) return "cannot write " + temp_.string() + ": " + errno_text(errno);
  return std::nullopt;
}

std::optional<std::string> AtomicFile::write_at(std::uint64_t offset, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::pwrite(fd_, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return "cannot write " + temp_.string() + ": " + errno_text(errno);
    bytes.remove_prefix(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return std::nullopt;
}

std::optional<std::string> AtomicFile::seek(std::uint64_t offset) {
  if (::lseek(fd_, static_cast<off_t>(offset), SEEK_SET) < 0) return "cannot seek in " + temp_.string() + ": " + errno_text(errno);
  return std::nullopt;
}

std::optional<std::string> AtomicFile::commit() {
  fault_point("write.temp-written", path_.native());
  if (::fsync(fd_) != 0) {
    const int err = errno;
    abandon();
    return "cannot write " + temp_.string() + ": " + errno_text(err);
  }
  ::close(std::exchange(fd_, -1));
  std::error_code ec;
  fault_point("write.before-rename", path_.native());
  if (::rename(temp_.c_str(), path_.c_str()) != 0) {
    const int rename_err = errno;
    fs::remove(temp_, ec);
    return "cannot rename into place: " + errno_text(rename_err);
  }
  fault_point("write.after-rename", path_.native());
  const fs::path dir = path_.has_parent_path() ? path_.parent_path() : fs::path(".");
  if (const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return std::nullopt;
}

std::optional<std::string> write_file_atomically(const fs::path& path, std::string_view bytes) {
  return write_file_atomically(path, std::span<const std::string_view>(&bytes, 1));
}

std::optional<std::string> write_file_atomically(const fs::path& path, std::span<const std::string_view> pieces) {
  AtomicFile file;
  if (auto why = AtomicFile::open(path, file)) return why;
  for (const std::string_view piece : pieces)
    if (auto why = file.write(piece)) return why;  // the temporary goes with `file`
  return file.commit();
}

std::vector<std::string> remove_stale_temporaries(const fs::path& dir) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const auto marker = name.rfind(".tmp.");
    if (!name.starts_with('.') || marker == std::string::npos || marker + 5 == name.size()) continue;
    if (!std::all_of(name.begin() + static_cast<std::ptrdiff_t>(marker) + 5, name.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    std::error_code remove_error;
    if (it->is_regular_file(remove_error) && fs::remove(it->path(), remove_error)) removed.push_back(name);
  }
  return removed;
}

std::optional<std::string> read_file(const fs::path& path, std::uint64_t max_bytes, std::string& contents,
                                     Symlinks symlinks) {
  RegularFile file;
  if (auto why = open_regular_file(path, symlinks, file)) return why;
  if (static_cast<std::uint64_t>(file.st.st_size) > max_bytes)
    return "file is " + std::to_string(file.st.st_size) + " bytes, more than the limit of " + std::to_string(max_bytes);
  contents.resize(static_cast<std::size_t>(file.st.st_size));
  std::size_t done = 0;
  while (done < contents.size()) {
    const ssize_t n = ::read(file.fd.get(), contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return "cannot read: " + errno_text(errno);
    if (n == 0) return "cannot read: the file shrank while being read";
    done += static_cast<std::size_t>(n);
  }
  return std::nullopt;
}

}  // namespace molt::host
