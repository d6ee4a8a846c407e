// The run directory of one moltd: control socket, log, pid lock, image
// copies. Private (0700) and locked, so two daemons never share one.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "molt/host/common/error.hpp"

namespace molt::host {

class RunDir {
 public:
  /// Creates `dir` (0700) if needed, refuses one others can write, and takes
  /// the lock on <dir>/moltd.pid, writing our pid into it. Fails when another
  /// moltd holds it.
  static Result<RunDir> open(const std::filesystem::path& dir);

  /// Hot restart: the run directory whose lock the predecessor handed over
  /// (`lock`, the same open file, so the same lock): checked to be `dir`'s
  /// moltd.pid and locked. The pid file is rewritten by write_pid() once
  /// this process serves.
  static Result<RunDir> adopt(const std::filesystem::path& dir, int lock);

  RunDir(RunDir&& other) noexcept;
  RunDir& operator=(RunDir&&) = delete;
  ~RunDir();  ///< releases the lock and removes the pid file

  [[nodiscard]] const std::filesystem::path& path() const noexcept { return path_; }
  /// The lock's descriptor, for a successor (hot restart).
  [[nodiscard]] int lock_fd() const noexcept { return lock_fd_; }
  /// Writes this process's pid into moltd.pid; why not.
  [[nodiscard]] std::optional<std::string> write_pid() const;
  [[nodiscard]] std::filesystem::path control_socket() const { return path_ / "control.sock"; }
  [[nodiscard]] std::filesystem::path log_file() const { return path_ / "moltd.log"; }
  [[nodiscard]] std::filesystem::path image_dir() const { return path_ / "images"; }

 private:
  RunDir(std::filesystem::path path, int lock_fd) : path_(std::move(path)), lock_fd_(lock_fd) {}
  std::filesystem::path path_;
  int lock_fd_ = -1;
};

}  // namespace molt::host
