// A real moltd in a temporary directory, for integration tests:
//   <tmp>/plugins/   its plugin directory (files put there with install(1))
//   <tmp>/run/       its run directory
//   <tmp>/moltd.toml its configuration; <tmp>/moltd.out its stdout and stderr
#pragma once

#include <filesystem>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "process.hpp"
#include "test_support.hpp"

namespace molt::test {

struct ModuleSpec {
  std::string name;
  std::filesystem::path image;  ///< installed into the plugin directory as <name>-<version>.so
  unsigned version;  ///< 0: no image and no version (a module only a handoff brings: accept_handoff)
  std::string extra_config = {};  ///< more TOML lines for [modules.<name>], e.g. listen = "127.0.0.1:0"
};

class Daemon {
 public:
  /// `host_config`: more TOML lines for [host], e.g. "probation_seconds = 2".
  /// quiesce_timeout_ms is 2000 unless they set it.
  explicit Daemon(std::vector<ModuleSpec> modules = {{"counter", plugin_path("counter", 1), 1}},
                  const std::string& host_config = "");
  ~Daemon();

  /// Starts moltd (again, after a stop or a crash) and waits until it answers
  /// on its control socket. `environment`: NAME=VALUE for it, e.g. MOLT_FAULT=...;
  /// `arguments`: more of its command line, e.g. --allow-empty kv.
  void start(const std::vector<std::string>& environment = {}, const std::vector<std::string>& arguments = {});
  /// Starts moltd without waiting: `wrapper` goes before its argv (e.g.
  /// systemd-socket-activate ...; it must exec moltd, keeping its pid), and
  /// `fds` become its fds 3, 4, ... Then wait_ready().
  void spawn(const std::vector<std::string>& environment, const std::vector<std::string>& wrapper = {},
             const std::vector<int>& fds = {}, const std::vector<std::string>& arguments = {});
  /// Waits until the moltd spawn() started answers on its control socket.
  void wait_ready();
  /// Runs moltd, and curl, through `prefix` from now on (e.g. ip netns exec
  /// NS: it must exec its command, keeping its pid).
  /// `arguments`: more of moltd's command line at every start (e.g. --http ADDRESS).
  void run_through(std::vector<std::string> prefix, std::vector<std::string> arguments = {}) {
    prefix_ = std::move(prefix);
    arguments_ = std::move(arguments);
  }
  /// SIGKILL, and waits for it to be gone.
  void kill9();
  /// After a hot restart: moltd runs as `pid` now (the old process exits 0
  /// by itself). stop(), kill9(), pid() and the destructor act on it. The
  /// test process is a child subreaper, so the orphaned successor is its
  /// child and its exit code can be waited for.
  void follow(pid_t pid);
  /// `moltctl hot-restart --json ARGS...`, and follow() the new process
  /// when it succeeds (after the old one has exited); the reply.
  nlohmann::json hot_restart(const std::vector<std::string>& args = {});
  /// SIGTERM, then its exit code (fails the test if it does not exit in time).
  int stop();

  /// moltctl --socket <run>/control.sock <args...>
  ProcessResult ctl(const std::vector<std::string>& args) const;
  /// curl -sS <args...>, where a leading "/" argument becomes this daemon's URL.
  ProcessResult curl(const std::vector<std::string>& args) const;
  /// `curl -s -o /dev/null -w %{http_code}` for one request.
  std::string http_code(const std::string& method, const std::string& path) const;
  /// GET path, as JSON (fails the test unless it answers 200).
  nlohmann::json get_json(const std::string& path) const;
  nlohmann::json status() const;
  /// Whether every snapshot moltd takes by itself (an install's, periodic)
  /// is written: no module's status says "snapshot_pending".
  [[nodiscard]] bool snapshots_written() const;

  /// install -m 644 <image> <plugins>/<file_name>, as an operator would.
  void install(const std::filesystem::path& image, const std::string& file_name) const;

  [[nodiscard]] std::string log() const;  ///< <run>/moltd.log
  [[nodiscard]] const std::filesystem::path& dir() const noexcept { return tmp_.path(); }
  [[nodiscard]] std::filesystem::path plugin_dir() const { return tmp_.path() / "plugins"; }
  [[nodiscard]] std::filesystem::path run_dir() const { return tmp_.path() / "run"; }
  [[nodiscard]] std::filesystem::path socket() const { return run_dir() / "control.sock"; }
  [[nodiscard]] std::filesystem::path config() const { return tmp_.path() / "moltd.toml"; }
  [[nodiscard]] pid_t pid() const { return followed_ > 0 ? followed_ : process_->pid(); }
  [[nodiscard]] Process& process() { return *process_; }
  [[nodiscard]] const std::string& http() const noexcept { return http_; }
  /// The port of `module`'s first listener, from the status.
  [[nodiscard]] std::uint16_t stream_port(const std::string& module) const;

 private:
  TempDir tmp_;
  std::unique_ptr<Process> process_;
  pid_t followed_ = 0;  ///< a hot restart's successor, once follow()ed
  std::vector<std::string> prefix_;     ///< run_through()
  std::vector<std::string> arguments_;  ///< run_through()
  std::string http_;
  /// Signals the followed successor and reaps it within `timeout`: its exit code.
  std::optional<int> stop_followed(int sig, std::chrono::milliseconds timeout);
};

/// Path of a built program (moltd, moltctl).
std::filesystem::path program(const std::string& name);

}  // namespace molt::test
