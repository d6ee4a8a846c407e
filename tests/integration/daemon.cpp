#include "daemon.hpp"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <cerrno>
#include <fstream>
#include <thread>

#include <catch2/catch.hpp>

namespace molt::test {
namespace fs = std::filesystem;

fs::path program(const std::string& name) { return fs::path(MOLT_BIN_DIR) / name; }

Daemon::Daemon(std::vector<ModuleSpec> modules, const std::string& host_config) {
  ::prctl(PR_SET_CHILD_SUBREAPER, 1);  // a hot restart's successor becomes our child when its parent exits
  fs::create_directory(plugin_dir());
  std::ofstream config(this->config());
  config << "[host]\nrun_dir = \"" << run_dir().string() << "\"\nplugin_dir = \"" << plugin_dir().string()
         << "\"\nhttp = \"127.0.0.1:0\"\n";
  if (host_config.find("quiesce_timeout_ms") == std::string::npos) config << "quiesce_timeout_ms = 2000\n";
  config << host_config << '\n';
  for (const auto& module : modules) {
    config << "[modules." << module.name << "]\n";
    if (module.version != 0) {  // 0: none here (accept_handoff = true in extra_config)
      install(module.image, module.name + '-' + std::to_string(module.version) + ".so");
      config << "version = " << module.version << '\n';
    }
    config << module.extra_config << '\n';
  }
}

Daemon::~Daemon() {
  if (followed_ > 0 && !stop_followed(SIGTERM, std::chrono::seconds(10))) stop_followed(SIGKILL, std::chrono::seconds(10));
  if (process_ && process_->running()) {
    process_->signal(SIGTERM);
    if (!process_->wait(std::chrono::seconds(10))) process_->signal(SIGKILL);
  }
}

void Daemon::start(const std::vector<std::string>& environment, const std::vector<std::string>& arguments) {
  std::vector<std::string> all = arguments_;
  all.insert(all.end(), arguments.begin(), arguments.end());
  spawn(environment, prefix_, {}, all);
  wait_ready();
}

void Daemon::spawn(const std::vector<std::string>& environment, const std::vector<std::string>& wrapper,
                   const std::vector<int>& fds, const std::vector<std::string>& arguments) {
  std::vector<std::string> argv = wrapper;
  argv.insert(argv.end(), {program("moltd").string(), "--config", config().string()});
  argv.insert(argv.end(), arguments.begin(), arguments.end());
  process_ = std::make_unique<Process>(argv, dir() / "moltd.out", environment, fds);
}

void Daemon::wait_ready() {
  nlohmann::json answer;
  const bool up = wait_until([&] {
    if (!process_->running()) return true;  // died: reported below
    const auto result = ctl({"status", "--json"});
    if (result.exit_code != 0) return false;
    answer = nlohmann::json::parse(result.out);
    return true;
  });
  INFO("moltd output:\n" << std::ifstream(dir() / "moltd.out").rdbuf());
  REQUIRE(up);
  REQUIRE(process_->running());
  http_ = answer["host"]["http"].get<std::string>();
}

void Daemon::follow(pid_t pid) { followed_ = pid; }

std::optional<int> Daemon::stop_followed(int sig, std::chrono::milliseconds timeout) {
  ::kill(followed_, sig);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    const pid_t reaped = ::waitpid(followed_, &status, WNOHANG);
    if (reaped == followed_ || (reaped < 0 && errno == ECHILD)) {
      followed_ = 0;
      if (reaped < 0) return -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::nullopt;
}

nlohmann::json Daemon::hot_restart(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"hot-restart", "--json"};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto result = ctl(argv);
  INFO(result.out << result.err);
  auto reply = nlohmann::json::parse(result.out, nullptr, false);
  if (!reply.is_object())  // what the test then shows: moltctl's own words, and moltd's
    reply = {{"ok", false},
             {"moltctl_exit_code", result.exit_code},
             {"moltctl_output", result.out + result.err},
             {"moltd_log_tail", log().substr(log().size() > 4000 ? log().size() - 4000 : 0)}};
  if (result.exit_code == 0 && reply.value("ok", false)) {
    REQUIRE(process_->wait(std::chrono::seconds(20)) == std::optional<int>(0));  // the old process is done
    follow(reply["report"]["new_pid"].get<pid_t>());
  }
  return reply;
}

void Daemon::kill9() {
  if (followed_ > 0) {
    REQUIRE(stop_followed(SIGKILL, std::chrono::seconds(20)).has_value());
    return;
  }
  process_->signal(SIGKILL);
  REQUIRE(process_->wait(std::chrono::seconds(20)).has_value());
}

int Daemon::stop() {
  if (followed_ > 0) {
    const auto code = stop_followed(SIGTERM, std::chrono::seconds(20));
    REQUIRE(code.has_value());
    return *code;
  }
  process_->signal(SIGTERM);
  const auto code = process_->wait(std::chrono::seconds(20));
  REQUIRE(code.has_value());
  return *code;
}

ProcessResult Daemon::ctl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{program("moltctl"), "--socket", socket().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_process(argv);
}

ProcessResult Daemon::curl(const std::vector<std::string>& args) const {
  std::vector<std::string> argv = prefix_;
  argv.insert(argv.end(), {"curl", "-sS", "--max-time", "30"});
  for (const auto& arg : args) argv.push_back(arg.starts_with('/') ? "http://" + http_ + arg : arg);
  return run_process(argv);
}

std::string Daemon::http_code(const std::string& method, const std::string& path) const {
  return curl({"-o", "/dev/null", "-w", "%{http_code}", "-X", method, path}).out;
}

nlohmann::json Daemon::get_json(const std::string& path) const {
  const auto result = curl({"-w", "\n%{http_code}", path});
  INFO("GET " << path << " -> " << result.out << result.err);
  REQUIRE(result.exit_code == 0);
  const auto last_newline = result.out.rfind('\n');
  REQUIRE(result.out.substr(last_newline + 1) == "200");
  return nlohmann::json::parse(result.out.substr(0, last_newline));
}

nlohmann::json Daemon::status() const {
  const auto result = ctl({"status", "--json"});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
  return nlohmann::json::parse(result.out);
}

bool Daemon::snapshots_written() const {
  const nlohmann::json now = status();  // not status()["modules"] in the loop: the temporary would be gone
  for (const auto& m : now["modules"])
    if (!m["snapshot_pending"].is_null()) return false;
  return true;
}

void Daemon::install(const fs::path& image, const std::string& file_name) const {
  const auto result = run_process({"install", "-m", "644", image.string(), (plugin_dir() / file_name).string()});
  INFO(result.err);
  REQUIRE(result.exit_code == 0);
}

std::uint16_t Daemon::stream_port(const std::string& module) const {
  const nlohmann::json current = status();  // kept alive: iterating status()["modules"] would dangle
  for (const auto& m : current["modules"])
    if (m["name"] == module) {
      const std::string endpoint = m["listen"].at(0);
      return static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
    }
  FAIL("no module " << module);
  return 0;
}

std::string Daemon::log() const {
  std::ifstream in(run_dir() / "moltd.log");
  return {std::istreambuf_iterator<char>(in), {}};
}

}  // namespace molt::test
