// moltd: the Molt host. Serves modules over HTTP and upgrades them in place
// on request (moltctl, SIGHUP). This file only wires the parts together.
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include <CLI/CLI.hpp>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/config/host_config.hpp"
#include "molt/host/control/control_server.hpp"
#include "molt/host/daemon/logging.hpp"
#include "molt/host/daemon/run_dir.hpp"
#include "molt/host/net/http_router.hpp"
#include "molt/host/net/http_server.hpp"
#include "molt/host/net/stream_server.hpp"
#include "molt/host/release/release_handler.hpp"
#include "molt/host/runtime/module_table.hpp"

using namespace molt::host;
namespace fs = std::filesystem;

namespace {

int fail(const Error& error) {
  std::fprintf(stderr, "moltd: %s\n", error.to_string().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"moltd: the Molt host. Loads service modules, serves them over HTTP, and upgrades them\n"
               "in place when asked (moltctl reload, SIGHUP) without dropping a request."};
  fs::path config_path;
  ConfigOverrides overrides;
  app.add_option("-c,--config", config_path, "TOML configuration file (see docs/operations.md)")->required();
  app.add_option("--run-dir", overrides.run_dir, "run directory: control socket, log, pid lock (overrides host.run_dir)");
  app.add_option("--http", overrides.http, "HOST:PORT to serve HTTP on; port 0 picks a free one (overrides host.http)");
  app.add_option("--log-level", overrides.log_level, "trace, debug, info, warn, error (overrides host.log_level)");
  app.set_version_flag("--version", std::string("moltd ") + MOLT_VERSION);
  app.footer("Signals: SIGHUP reloads every module whose newest <module>-<N>.so in the plugin directory\n"
             "differs from the running one; SIGTERM and SIGINT stop accepting, finish requests in flight, exit 0.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  auto config = load_host_config(config_path, overrides);
  if (!config) {
    std::fprintf(stderr, "moltd: %s\n", config.error().to_string().c_str());
    return 2;
  }

  // Block the signals we handle before any thread starts, so that every
  // thread inherits the mask and only the sigwait loop below receives them.
  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGHUP, SIGTERM, SIGINT}) sigaddset(&handled, sig);
  pthread_sigmask(SIG_BLOCK, &handled, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto run_dir = RunDir::open(config->run_dir);
  if (!run_dir) return fail(run_dir.error());
  const Logging logging(run_dir->log_file(), config->log_level);
  const auto log = logging.make("moltd");
  log->info("moltd {} starting (pid {}), config {}, run directory {}", MOLT_VERSION, ::getpid(), config_path.string(),
            run_dir->path().string());

  Loader loader(LoaderOptions{run_dir->image_dir()});
  loader.remove_stale_copies();  // ours alone: we hold the run directory lock
  for (const auto& dir : {run_dir->path(), run_dir->path() / "snapshots"})
    for (const auto& name : remove_stale_temporaries(dir))
      log->warn("removed {}: a write interrupted by a crash (the file it was replacing is intact)", (dir / name).string());
  ModuleTable table(loader, TableOptions{config->plugin_dir,
                                         UpgradeOptions{config->quiesce_timeout, config->max_state_bytes},
                                         [&logging](const std::string& name) { return logging.make(name); },
                                         config->job_threads});
  StreamServer streams(StreamOptions{config->io_threads, config->max_stream_buffer_bytes}, log);
  SnapshotStore snapshots(run_dir->path() / "snapshots", config->max_state_bytes);
  ReleaseHandler releases(table, streams, snapshots,
                          ReleaseOptions{run_dir->path() / "releases.json",
                                         fs::absolute(config->plugin_dir).lexically_normal(), config->release,
                                         config->probation, config->probation_max_error_rate,
                                         config->probation_min_calls, config->snapshot_interval,
                                         config->quiesce_timeout},
                          log);
  if (auto booted = releases.boot(*config); !booted) {
    log->critical("{}", booted.error().to_string());
    return 1;
  }

  HostInfo info{MOLT_VERSION, ::getpid(), std::chrono::system_clock::now(), {},
                run_dir->path().string(), fs::absolute(config->plugin_dir).lexically_normal().string(),
                run_dir->control_socket().string(), {}};
  info.listeners = [&streams] { return streams.listeners(); };  // before the control socket answers status
  HttpRouter router(table, info);
  HttpServer http(HttpOptions{config->http, config->http_threads, config->max_request_bytes},
                  [&router](const molt::api::Request& request) { return router.route(request); }, log);
  if (auto listening = http.listen(); !listening) {
    log->critical("{}", listening.error().to_string());
    return 1;
  }
  info.http = http.local_endpoint().to_string();
  ControlHandler handler(table, releases, info);
  ControlServer control(ControlServerOptions{run_dir->control_socket()}, handler, log);
  if (auto started = control.start(); !started) {
    log->critical("{}", started.error().to_string());
    return 1;
  }
  http.serve();
  streams.serve();
  releases.start_watching();
  log->info("ready: {} module(s), http://{}/, control socket {}", table.slots().size(), info.http,
            info.control_socket);

  while (true) {
    int sig = 0;
    if (sigwait(&handled, &sig) != 0) continue;
    if (sig == SIGHUP) {
      log->info("SIGHUP: reloading modules whose file in {} changed", info.plugin_dir);
      const auto reports = releases.reload_changed();  // each logs its own summary line
      log->info("SIGHUP: {} module(s) reloaded", reports.size());
      continue;
    }
    log->info("{}: stopping; finishing requests in flight", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    break;
  }
  http.stop(std::chrono::seconds(10));
  streams.stop(std::chrono::seconds(10));
  control.stop();
  table.stop_jobs();     // after the steps in progress: the snapshots below hold every step that ran
  releases.shut_down();  // snapshots every module, now that no request can change its state
  table.stop_all();
  log->info("stopped");
  return 0;
}
