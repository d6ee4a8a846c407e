// Running real programs from tests: moltd, moltctl, curl.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace molt::test {

struct ProcessResult {
  int exit_code = -1;  ///< or 128 + signal
  std::string out;
  std::string err;
};

/// Runs `argv` to completion (killed after `timeout`), capturing its output.
ProcessResult run_process(const std::vector<std::string>& argv,
                          std::chrono::milliseconds timeout = std::chrono::seconds(60));

/// A program running in the background, its output going to `output_file`.
/// Killed (SIGKILL) if still running when destroyed.
class Process {
 public:
  /// `environment`: NAME=VALUE entries added to this process's environment.
  /// `fds`: handed to it as its fds 3, 4, ... in this order (socket
  /// activation); this process keeps its own.
  Process(const std::vector<std::string>& argv, const std::filesystem::path& output_file,
          const std::vector<std::string>& environment = {}, const std::vector<int>& fds = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  void signal(int sig) const;
  /// Its exit code (128 + signal if killed) once it exits by `timeout`, else nothing.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  [[nodiscard]] bool running();

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

}  // namespace molt::test
