// moltd under a real systemd. The test starts a service manager of its own,
// `systemd --user` on a private D-Bus session bus in a directory of the
// test's, runs moltd in it as a Type=notify service (systemd-run, the
// properties of examples/systemd/moltd.service that matter here), and
// hot-restarts it: the unit stays active, its MainPID moves to the new
// process, the watchdog hears the new process, and a client's connection
// goes on. systemd_test.cpp covers the notification protocol without one.
#include <signal.h>
#include <unistd.h>

#include <fstream>

#include <catch2/catch.hpp>

#include "daemon.hpp"
#include "resp_client.hpp"
#include "skip.hpp"

using namespace molt::test;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Json = nlohmann::json;

namespace {

const fs::path kSystemd = "/lib/systemd/systemd";
/// What sd_booted() checks: systemd --user refuses to start on a machine
/// not booted with systemd (a container, CI). The test creates it when it is
/// missing, and removes it again.
const fs::path kBootedMark = "/run/systemd/system";

/// A user service manager with its own runtime directory and session bus.
class UserManager {
 public:
  UserManager() {
    const std::string bus = "unix:path=" + (runtime_.path() / "bus").string();
    environment_ = {"XDG_RUNTIME_DIR=" + runtime_.path().string(), "DBUS_SESSION_BUS_ADDRESS=" + bus};
    if (!fs::exists(kBootedMark)) {
      fs::create_directories(kBootedMark);
      created_mark_ = true;
    }
    dbus_ = std::make_unique<Process>(
        std::vector<std::string>{"dbus-daemon", "--session", "--address=" + bus, "--nofork", "--nopidfile"},
        runtime_.path() / "dbus.out");
    REQUIRE(wait_until([&] { return fs::exists(runtime_.path() / "bus") || !dbus_->running(); }));
    REQUIRE(dbus_->running());
    manager_ = std::make_unique<Process>(std::vector<std::string>{kSystemd.string(), "--user"},
                                         runtime_.path() / "systemd.out", environment_);
    std::string state;
    const bool up = wait_until([&] {
      state = systemctl({"is-system-running"}).out;
      return state.rfind("running", 0) == 0 || state.rfind("degraded", 0) == 0 || !manager_->running();
    });
    INFO("systemd --user: " << state << std::ifstream(runtime_.path() / "systemd.out").rdbuf());
    REQUIRE(up);
    REQUIRE(manager_->running());
  }

  ~UserManager() {
    // SIGTERM: the manager stops its units (moltd gets its SIGTERM) and exits.
    if (manager_ && manager_->running()) {
      manager_->signal(SIGTERM);
      if (!manager_->wait(20s)) manager_->signal(SIGKILL);
    }
    manager_.reset();
    dbus_.reset();
    std::error_code ignored;
    if (created_mark_) fs::remove(kBootedMark, ignored);
  }
  UserManager(const UserManager&) = delete;
  UserManager& operator=(const UserManager&) = delete;

  /// `systemctl --user ARGS...` against this manager.
  [[nodiscard]] ProcessResult systemctl(const std::vector<std::string>& args) const {
    return run_with_environment("systemctl", args);
  }
  /// `systemd-run --user ARGS...` against this manager.
  [[nodiscard]] ProcessResult systemd_run(const std::vector<std::string>& args) const {
    return run_with_environment("systemd-run", args);
  }
  /// One property of `unit`, as `systemctl show --value` prints it.
  [[nodiscard]] std::string property(const std::string& unit, const std::string& name) const {
    std::string value = systemctl({"show", "--value", "-p", name, unit}).out;
    while (!value.empty() && (value.back() == '\n' || value.back() == '\r')) value.pop_back();
    return value;
  }

 private:
  TempDir runtime_;  // mode 0700, as XDG_RUNTIME_DIR must be
  std::vector<std::string> environment_;
  bool created_mark_ = false;
  std::unique_ptr<Process> dbus_;
  std::unique_ptr<Process> manager_;

  [[nodiscard]] ProcessResult run_with_environment(const std::string& program_name,
                                                   const std::vector<std::string>& args) const {
    std::vector<std::string> argv{"env"};
    argv.insert(argv.end(), environment_.begin(), environment_.end());
    argv.insert(argv.end(), {program_name, "--user"});
    argv.insert(argv.end(), args.begin(), args.end());
    return run_process(argv, 120s);
  }
};

pid_t status_pid(const Daemon& d) {
  const Json status = Json::parse(d.ctl({"status", "--json"}).out, nullptr, false);
  return status.is_object() ? status["host"]["pid"].get<pid_t>() : 0;
}

}  // namespace

TEST_CASE("under systemd-run -p Type=notify, a hot restart keeps the unit active and moves its MainPID to the new "
          "moltd, whose watchdog pings systemd hears, and systemctl reload can be the hot restart",
          "[systemd][hot-restart]") {
  if (::geteuid() != 0 && !fs::exists(kBootedMark)) MOLT_SKIP("needs root to start a user systemd here", SkipInCi::Fails);
  if (!fs::exists(kSystemd) || run_process({"dbus-daemon", "--version"}).exit_code != 0)
    MOLT_SKIP("needs systemd and dbus-daemon (scripts/install-deps)", SkipInCi::Fails);

  Daemon d({{"counter", plugin_path("counter", 1), 1}, {"kv", plugin_path("kv", 1), 1, "listen = \"127.0.0.1:0\"\n"}});
  UserManager systemd;
  const std::string unit = "molt-test-" + std::to_string(::getpid()) + ".service";
  // examples/systemd/moltd.service's Type, NotifyAccess and a hot restart as ExecReload.
  std::vector<std::string> run{"--unit=" + unit, "-p", "Type=notify", "-p", "NotifyAccess=all",
                               "-p", "WatchdogSec=2s", "-p", "TimeoutStartSec=60s",
                               "-p", "ExecReload=" + program("moltctl").string() + " --socket " + d.socket().string() +
                                         " hot-restart"};
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"})
    if (const char* value = std::getenv(name)) run.insert(run.end(), {"-E", std::string(name) + "=" + value});
  run.insert(run.end(), {program("moltd").string(), "--config", d.config().string()});
  // systemd-run waits for the start job: it returns once moltd has sent READY=1.
  const auto started = systemd.systemd_run(run);
  INFO("systemd-run: " << started.out << started.err << "\nmoltd.log:\n" << d.log());
  REQUIRE(started.exit_code == 0);
  CHECK(systemd.property(unit, "ActiveState") == "active");
  const pid_t first = std::stoi(systemd.property(unit, "MainPID"));
  CHECK(status_pid(d) == first);

  RespClient client(d.stream_port("kv"));
  REQUIRE(client.call({"SET", "greeting", "hello"}) == "+OK\r\n");

  // The new moltd's pings reach systemd: its watchdog timestamp moves on.
  const auto pinged_after = [&](const std::string& since) {
    return wait_until([&] { return systemd.property(unit, "WatchdogTimestampMonotonic") != since; }, 10s);
  };
  const auto moved_from = [&](pid_t old_pid) {
    pid_t main_pid = 0;
    const bool moved = wait_until([&] {
      main_pid = std::stoi(systemd.property(unit, "MainPID"));
      return main_pid != old_pid && main_pid != 0 && status_pid(d) == main_pid;
    });
    INFO("MainPID " << main_pid << ", was " << old_pid);
    CHECK(moved);
    CHECK(systemd.property(unit, "ActiveState") == "active");
    CHECK(systemd.property(unit, "SubState") == "running");
    CHECK(systemd.property(unit, "NRestarts") == "0");
    CHECK(::kill(old_pid, 0) != 0);  // gone, and reaped by systemd
    return main_pid;
  };

  // moltctl hot-restart.
  std::string watchdog = systemd.property(unit, "WatchdogTimestampMonotonic");
  const auto restarted = d.ctl({"hot-restart"});
  INFO(restarted.out << restarted.err);
  REQUIRE(restarted.exit_code == 0);
  const pid_t second = moved_from(first);
  watchdog = systemd.property(unit, "WatchdogTimestampMonotonic");
  CHECK(pinged_after(watchdog));
  CHECK(client.call({"GET", "greeting"}) == "$5\r\nhello\r\n");  // the same connection, served by the new moltd

  // systemctl reload, configured as a hot restart (ExecReload=moltctl hot-restart): it waits for it.
  const auto reloaded = systemd.systemctl({"reload", unit});
  INFO(reloaded.out << reloaded.err);
  REQUIRE(reloaded.exit_code == 0);
  const pid_t third = moved_from(second);
  CHECK(third != first);
  watchdog = systemd.property(unit, "WatchdogTimestampMonotonic");
  CHECK(pinged_after(watchdog));
  CHECK(client.call({"SET", "greeting", "again"}) == "+OK\r\n");
  const Json status = d.status();
  CHECK(status["host"]["generation"] == 3);

  // systemctl stop reaches the third process: SIGTERM, a clean exit.
  REQUIRE(systemd.systemctl({"stop", unit}).exit_code == 0);
  CHECK(systemd.property(unit, "ActiveState") != "active");
  CHECK(::kill(third, 0) != 0);
  CHECK_THAT(d.log(), Catch::Contains("hot restart: serving "));
}
