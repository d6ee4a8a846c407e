#include "molt/host/daemon/run_dir.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "molt/host/common/file_checks.hpp"

namespace molt::host {
namespace fs = std::filesystem;

Result<RunDir> RunDir::open(const fs::path& dir) {
  auto refuse = [&](std::string reason) { return Error{{}, {}, dir.string(), Phase::Start, "run directory: " + std::move(reason)}; };
  std::error_code ec;
  const bool created = fs::create_directories(dir, ec);
  if (ec) return refuse("cannot create: " + ec.message());
  if (created) fs::permissions(dir, fs::perms::owner_all, ec);
  const fs::path path = fs::absolute(dir, ec).lexically_normal();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return refuse(std::error_code(errno, std::generic_category()).message());
  if (!S_ISDIR(st.st_mode)) return refuse("not a directory");
  if (auto why = unsafe_permissions(st, "it")) return refuse(*why);

  const fs::path pid_file = path / "moltd.pid";
  const int fd = ::open(pid_file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return refuse("cannot open " + pid_file.string() + ": " + std::error_code(errno, std::generic_category()).message());
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {};
    (void)!::read(fd, pid, sizeof pid - 1);
    ::close(fd);
    std::string holder(pid);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    return refuse("in use by another moltd" + (holder.empty() ? std::string() : " (pid " + holder + ")"));
  }
  RunDir run_dir(path, fd);
  if (auto why = run_dir.write_pid()) return refuse(*why);
  return run_dir;
}

Result<RunDir> RunDir::adopt(const fs::path& dir, int lock) {
  auto refuse = [&](std::string reason) {
    ::close(lock);
    return Error{{}, {}, dir.string(), Phase::HotRestart, "run directory: " + std::move(reason)};
  };
  std::error_code ec;
  const fs::path path = fs::absolute(dir, ec).lexically_normal();
  struct stat held {}, named {};
  if (::fstat(lock, &held) != 0 || ::stat((path / "moltd.pid").c_str(), &named) != 0 || held.st_dev != named.st_dev ||
      held.st_ino != named.st_ino)
    return refuse("the lock handed over is not " + (path / "moltd.pid").string());
  if (::flock(lock, LOCK_EX | LOCK_NB) != 0) return refuse("the lock handed over is not held");
  return RunDir(path, lock);
}

std::optional<std::string> RunDir::write_pid() const {
  const std::string pid = std::to_string(::getpid()) + '\n';
  if (::ftruncate(lock_fd_, 0) != 0 || ::pwrite(lock_fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
    return "cannot write " + (path_ / "moltd.pid").string();
  return std::nullopt;
}

RunDir::RunDir(RunDir&& other) noexcept : path_(std::move(other.path_)), lock_fd_(std::exchange(other.lock_fd_, -1)) {}

RunDir::~RunDir() {
  if (lock_fd_ < 0) return;
  std::error_code ec;
  fs::remove(path_ / "moltd.pid", ec);
  ::close(lock_fd_);  // releases the lock
}

}  // namespace molt::host
