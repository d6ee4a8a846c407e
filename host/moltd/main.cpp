// moltd: the Molt host. Serves modules over HTTP and upgrades them in place
// on request (moltctl, SIGHUP). This file only wires the parts together.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <future>
#include <optional>
#include <set>
#include <thread>

#include <CLI/CLI.hpp>

#include "molt/host/common/atomic_file.hpp"
#include "molt/host/common/crash_record.hpp"
#include "molt/host/common/json_text.hpp"
#include "molt/host/common/sha256.hpp"
#include "molt/host/common/threads.hpp"
#include "molt/host/config/host_config.hpp"
#include "molt/host/control/control_server.hpp"
#include "molt/host/daemon/crash_handler.hpp"
#include "molt/host/handoff/handoff.hpp"
#include "molt/host/handover/hot_restart.hpp"
#include "molt/host/daemon/logging.hpp"
#include "molt/host/daemon/run_dir.hpp"
#include "molt/host/daemon/systemd.hpp"
#include "molt/host/net/client_limits.hpp"
#include "molt/host/net/http_router.hpp"
#include "molt/host/net/http_server.hpp"
#include "molt/host/net/stream_server.hpp"
#include "molt/host/release/release_handler.hpp"
#include "molt/host/runtime/call_watch.hpp"
#include "molt/host/runtime/module_table.hpp"
#include "molt/host/upgrade/rehearsal.hpp"

using namespace molt::host;
namespace fs = std::filesystem;

namespace {

int fail(const Error& error) {
  std::fprintf(stderr, "moltd: %s\n", error.to_string().c_str());
  return 1;
}

/// How migrating upgrades pre-copy (host.precopy*).
PrecopyOptions precopy_options(const HostConfig& config) {
  PrecopyOptions options;
  options.enabled = config.precopy == "auto";
  options.budget.max_nanoseconds = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(config.precopy_call).count());
  options.pause_target = config.precopy_pause_target;
  options.max_rounds = config.precopy_max_rounds;
  options.refuse_unconverged = config.precopy_fallback == "refuse";
  return options;
}

/// glibc's fastbins defer coalescing freed small chunks to a
/// malloc_consolidate that walks all of them under the arena's lock. When an
/// upgrade's clean up (or a snapshot's second instance) frees a state of a
/// million entries, the next large free consolidates them in one go, and a
/// module's serving thread waiting on that arena stalled 100+ ms (kv at 1M
/// keys, bench section (e), perf: malloc_consolidate). Without fastbins each
/// free coalesces at once; the per-thread tcache still serves the hot sizes.
void tune_malloc() { ::mallopt(M_MXFAST, 0); }

/// Named steps and how long each took, as "a 0.12 ms, b 1.50 ms".
class Laps {
 public:
  void start() { last_ = std::chrono::steady_clock::now(); }
  void lap(const char* step) {
    const auto now = std::chrono::steady_clock::now();
    char took[32];
    std::snprintf(took, sizeof took, " %.2f ms", std::chrono::duration<double, std::milli>(now - last_).count());
    text_ += (text_.empty() ? "" : ", ") + std::string(step) + took;
    last_ = now;
  }
  [[nodiscard]] const std::string& text() const noexcept { return text_; }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
  std::string text_;
};

timespec to_timespec(std::chrono::steady_clock::duration d) {
  const auto ns = std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  return timespec{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

}  // namespace

int main(int argc, char** argv) {
  tune_malloc();
  CLI::App app{"moltd: the Molt host. Loads service modules, serves them over HTTP, and upgrades them\n"
               "in place when asked (moltctl reload, SIGHUP) without dropping a request."};
  fs::path config_path;
  ConfigOverrides overrides;
  app.add_option("-c,--config", config_path, "TOML configuration file (see docs/operations.md)")->required();
  app.add_option("--run-dir", overrides.run_dir, "run directory: control socket, log, pid lock (overrides host.run_dir)");
  app.add_option("--http", overrides.http, "HOST:PORT to serve HTTP on; port 0 picks a free one (overrides host.http)");
  app.add_option("--log-level", overrides.log_level, "trace, debug, info, warn, error (overrides host.log_level)");
  app.add_option("--log-format", overrides.log_format,
                 "text, or json: one object per line with time, level, module, version, phase, msg (overrides host.log_format)");
  std::vector<std::string> allow_empty;
  app.add_option("--allow-empty", allow_empty,
                 "MODULE: start it with its initial state if it has state that its booted version cannot read "
                 "(written by a release that was never permanent, or corrupt) and none kept in its schema; "
                 "without it such a module is not started (moltctl restore starts it). Repeatable")
      ->type_name("MODULE");
  int successor_fd = -1;
  app.add_option("--successor", successor_fd,
                 "(internal) started by a moltd handing itself over (hot restart) on this socket")
      ->group("");
  app.set_version_flag("--version", std::string("moltd ") + MOLT_VERSION);
  app.footer("Signals: SIGHUP reloads every module whose newest <module>-<N>.so in the plugin directory\n"
             "differs from the running one; SIGUSR2 hands moltd over to a new process of its binary without closing\n"
             "a connection (moltctl hot-restart); SIGTERM and SIGINT stop accepting, finish requests in flight, exit 0.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  // A hot restart's successor: hello first, so that a predecessor that
  // cannot hand over to us says so at once; every failure after it is told.
  std::optional<Successor> successor;
  std::optional<Successor::Hello> handed;
  if (successor_fd >= 0) {
    successor.emplace(successor_fd);
    auto hello = [&]() -> Result<Successor::Hello> {
      try {
        return successor->hello();
      } catch (const std::exception& e) {  // a message not as protocol 1 has it
        return Error{"(host)", {}, {}, Phase::HotRestart, std::string("hello: ") + e.what()};
      }
    }();
    if (!hello) {
      std::fprintf(stderr, "moltd: %s\n", hello.error().to_string().c_str());
      return 1;
    }
    handed = std::move(hello.value());
  }
  const auto give_up = [&successor](const std::string& why, int status) {
    if (successor) successor->failed(why);
    return status;
  };
  // What a hot restart starts again: this program, this command line.
  std::vector<std::string> arguments;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--successor" && i + 1 < argc) {
      ++i;
      continue;
    }
    if (std::string_view(argv[i]).starts_with("--successor=")) continue;
    arguments.emplace_back(argv[i]);
  }
  std::error_code exe_error;
  const fs::path binary = fs::read_symlink("/proc/self/exe", exe_error);

  auto config = load_host_config(config_path, overrides);
  if (!config) {
    std::fprintf(stderr, "moltd: %s\n", config.error().to_string().c_str());
    return give_up(config.error().to_string(), 2);
  }

  // Block the signals we handle before any thread starts, so that every
  // thread inherits the mask and only the sigwait loop below receives them.
  sigset_t handled;
  sigemptyset(&handled);
  for (int sig : {SIGHUP, SIGTERM, SIGINT, SIGUSR2}) sigaddset(&handled, sig);
  pthread_sigmask(SIG_BLOCK, &handled, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  auto run_dir = handed ? RunDir::adopt(config->run_dir, handed->lock.release()) : RunDir::open(config->run_dir);
  if (!run_dir) return give_up(run_dir.error().to_string(), fail(run_dir.error()));
  const Logging logging(run_dir->log_file(), config->log_level,
                        config->log_format == "json" ? LogFormat::Json : LogFormat::Text);
  const auto log = logging.make("moltd");
  log->info("moltd {} starting (pid {}), config {}, run directory {}", MOLT_VERSION, ::getpid(), config_path.string(),
            run_dir->path().string());
  if (handed)
    log->info("hot restart: taking over from pid {} as generation {}", handed->predecessor_pid, handed->generation);
  for (const auto& warning : config->warnings) log->warn("{}: {}", config_path.string(), warning);
  // Every client is a descriptor: take all the kernel allows us (Redis does
  // the same); maxclients is fitted to it once the listeners are known.
  const FdLimit fds = raise_fd_limit();
  if (fds.after != fds.before)
    log->info("file descriptors: soft limit (RLIMIT_NOFILE) raised from {} to {}, the hard limit", fds.before, fds.after);
  else if (fds.after < fds.hard)
    log->warn("file descriptors: could not raise the soft limit (RLIMIT_NOFILE) from {} to the hard limit {}",
              fds.before, fds.hard);
  else
    log->info("file descriptors: soft limit (RLIMIT_NOFILE) {}, the hard limit", fds.after);
  // systemd's variables, taken (and unset) before any thread starts: setenv
  // and getenv are not safe against each other.
  systemd::Notifier notifier = systemd::Notifier::from_environment(log);
  const auto watchdog_interval = systemd::watchdog_interval();
  auto activated = systemd::listen_fds();
  if (!activated) {
    log->critical("{}", activated.error().to_string());
    return 1;
  }

  // The previous run's crash, if it left a record: read before the handler
  // is installed (a crash now would overwrite it), noted by the boot below.
  std::optional<CrashRecord> crash;
  if (handed) {
    // The predecessor has read (and set aside) any crash record.
  } else if (auto read = read_crash_record(crash_record_path(run_dir->path())); !read) {
    log->error("{}", read.error().to_string());
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
    if (auto moved = move_crash_record_aside(run_dir->path(), now); moved)  // once, not at every start
      log->error("the unreadable crash record was moved to {}", moved->string());
  } else {
    crash = std::move(read.value());
  }
  if (auto installed = install_crash_handler(run_dir->path()); !installed)
    log->warn("crash records: {}", installed.error().to_string());
  auto quarantine = Quarantine::open(quarantine_path(run_dir->path()));
  if (!quarantine) {
    log->critical("{}; fix it or move it aside (it lists images moltd must not run)", quarantine.error().to_string());
    return 1;
  }
  auto crash_log = CrashLog::open(crash_log_path(run_dir->path()));
  if (!crash_log) {
    log->warn("{}; crash loops are not counted this run", crash_log.error().to_string());
  }
  LoaderOptions loader_options{run_dir->image_dir()};
  loader_options.refuse_sha256 = [&q = *quarantine.value()](const std::string& sha256) -> std::optional<std::string> {
    const auto entry = q.find_sha256(sha256);
    if (!entry) return std::nullopt;
    return "quarantined: " + entry->reason + " (moltctl quarantine clear " + entry->file + " to run it again)";
  };
  Loader loader(loader_options);
  if (!handed) {  // a predecessor still maps its copies, and may resume
    loader.remove_stale_copies();  // ours alone: we hold the run directory lock
    for (const auto& dir : {run_dir->path(), run_dir->path() / "snapshots"})
      for (const auto& name : remove_stale_temporaries(dir))
        log->warn("removed {}: a write interrupted by a crash (the file it was replacing is intact)", (dir / name).string());
  }
  SnapshotStore snapshots(run_dir->path() / "snapshots", config->max_state_bytes);
  RehearsalOptions rehearsal{config->rehearse == "never"    ? RehearseWhen::Never
                             : config->rehearse == "always" ? RehearseWhen::Always
                                                            : RehearseWhen::Migrating,
                             rehearsal_helper_beside_this_program(), run_dir->path() / "rehearsal",
                             config->rehearse_timeout,
                             // A snapshot of the last minute, written by the version
                             // running now, is the state the module has, near enough.
                             [&snapshots](const ModuleSlot& slot) -> std::optional<fs::path> {
                               std::error_code ec;
                               const fs::path path = snapshots.path_of(slot.name());
                               const auto written = fs::file_time_type::clock::to_sys(fs::last_write_time(path, ec));
                               const auto now = std::chrono::system_clock::now();
                               if (ec || now - written > std::chrono::minutes(1) || written < slot.running().since)
                                 return std::nullopt;
                               return path;
                             }};
  {
    std::error_code ec;
    fs::create_directories(rehearsal.scratch_dir, ec);
    fs::permissions(rehearsal.scratch_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  }
  ModuleTable table(loader, TableOptions{config->plugin_dir,
                                         UpgradeOptions{config->quiesce_timeout, config->max_state_bytes, rehearsal,
                                                        precopy_options(*config)},
                                         [&logging](const std::string& name) { return logging.make(name); },
                                         config->job_threads,
                                         molt::api::StreamLimits{config->client_query_buffer_limit,
                                                                 config->client_output_buffer_soft_limit},
                                         config->stop_timeout, run_dir->path() / "history.jsonl"});
  if (const auto& problem = table.history_log().load_problem()) log->warn("history: {}", *problem);
  StreamServer streams(StreamOptions{config->io_threads, config->client_query_buffer_limit,
                                     config->client_output_buffer_soft_limit, config->client_output_buffer_hard_limit,
                                     config->max_connection_memory, config->clients, config->module_clients},
                       log);
  // Sockets from systemd: "http" is the HTTP listener; any other name is the
  // module's listener, which serves it instead of binding its `listen`.
  int http_fd = -1;
  for (const auto& socket : activated.value()) {
    if (socket.name == "http" && http_fd < 0) {
      http_fd = socket.fd;
      log->info("socket activation: fd {} ('http') serves HTTP instead of {}", socket.fd, config->http.to_string());
      continue;
    }
    auto adopted = streams.adopt(socket.name, socket.fd);
    if (!adopted) {
      log->critical("socket activation: {}", adopted.error().to_string());
      return 1;
    }
    log->info("socket activation: fd {} ('{}', {}) is for module {}", socket.fd, socket.name, adopted->to_string(),
              socket.name);
  }
  ReleaseOptions release_options{run_dir->path() / "releases.json",
                                 fs::absolute(config->plugin_dir).lexically_normal(), config->release,
                                 config->probation, config->probation_max_error_rate,
                                 config->probation_min_calls, config->snapshot_interval,
                                 config->quiesce_timeout, config->save_timeout, config->health_timeout, {}};
  release_options.install_snapshot_delay = config->install_snapshot_delay;
  release_options.crash = crash;
  release_options.quarantine = quarantine.value().get();
  release_options.crash_log = crash_log ? crash_log.value().get() : nullptr;
  release_options.allow_empty.insert(allow_empty.begin(), allow_empty.end());
  if (notifier.enabled())  // systemd hears of every upgrade: RELOADING=1 before, READY=1 after
    release_options.on_change = [&notifier](ChangeNotice notice, const std::string& text) {
      if (notice == ChangeNotice::Begin) notifier.reloading(text);
      else if (notice == ChangeNotice::End) notifier.ready(text);
      else notifier.status(text);
    };
  std::string http_address;  // set once HTTP listens; a handoff's target tells its source
  // Which modules moved to, or came from, another moltd (docs/handoff.md).
  auto ownership = OwnershipRecord::open(run_dir->path() / "ownership.json");
  if (!ownership) {
    log->critical("{}", ownership.error().to_string());
    return give_up(ownership.error().to_string(), 1);
  }
  std::optional<Handoff> handoff;  // made below; a boot asks it which modules are elsewhere
  release_options.elsewhere = [&handoff](const std::string& module) -> std::optional<std::string> {
    return handoff ? handoff->elsewhere(module) : std::nullopt;
  };
  ReleaseHandler releases(table, streams, snapshots, std::move(release_options), log);
  {
    HandoffOptions handoff_options{config->peer_secret, config->peer, fs::absolute(config->plugin_dir), {},
                                   config->handoff_timeout, config->quiesce_timeout, precopy_options(*config)};
    handoff_options.http_address = [&info_http = http_address] { return info_http; };
    handoff_options.drain = config->handoff_drain;
    handoff_options.forward_new = config->handoff_new_connections == "forward";
    for (const auto& m : config->modules)
      if (m.accept_handoff) handoff_options.accepting.push_back(m);
    handoff_options.configured = config->modules;
    handoff.emplace(std::move(handoff_options), HandoffParts{table, releases, streams, *ownership.value()}, log);
  }
  // A successor is prepared: the predecessor freezes and hands over.
  std::optional<Successor::Transfer> transfer;
  Laps adopt_steps, commit_steps;  // where a successor's time goes in the freeze, for its log line
  if (successor) {
    // The modules start now, while the predecessor serves; their states come after its freeze.
    if (auto prepared = releases.prepare_take_over(*config, handed->images, handed->not_started); !prepared) {
      log->critical("hot restart: {}", prepared.error().to_string());
      return give_up(prepared.error().to_string(), 1);
    }
    auto received = successor->prepared([&table](std::string_view name) { return table.find(name); });
    if (!received) {
      log->critical("hot restart: {}", received.error().to_string());
      return 1;
    }
    transfer = std::move(received.value());
    adopt_steps.start();
    for (auto& listener : transfer->listeners) {
      auto adopted = streams.adopt(listener.module, listener.fd.release());
      if (!adopted) return give_up(adopted.error().to_string(), 1);
    }
    if (transfer->http.valid()) http_fd = transfer->http.release();
    adopt_steps.lap("listeners");
  }
  auto booted = handed ? releases.take_over([&successor](ModuleSlot& slot) { return successor->restore(slot); },
                                            handed->probation_left)
                       : releases.boot(*config);
  adopt_steps.lap("states");
  if (crash)  // noted by the boot, failed or not: kept in <run dir>/crashes/ for the operator
    if (auto moved = move_crash_record_aside(run_dir->path(), crash->time_ms); !moved)
      log->warn("{}", moved.error().to_string());
  if (!booted) {
    log->critical("{}", booted.error().to_string());
    return give_up(booted.error().to_string(), 1);
  }
  handoff->serve_moved();  // the listeners of modules that moved away send their clients on (-MOVED)
  for (const auto& closed : streams.close_unclaimed())
    log->warn("socket activation: closed {}: no module of that name runs (FileDescriptorName= must name a module, or "
              "be \"http\")", closed);

  HostInfo info{MOLT_VERSION, ::getpid(), std::chrono::system_clock::now()};
  info.run_dir = run_dir->path().string();
  info.plugin_dir = fs::absolute(config->plugin_dir).lexically_normal().string();
  info.control_socket = run_dir->control_socket().string();
  info.generation = handed ? handed->generation : 1;
  info.binary = binary.string();
  // Hashed once, when first asked: a binary with its debug information is
  // large, and most starts never show it.
  info.binary_sha256 = [digest = std::async(std::launch::deferred, [binary] { return sha256_file_hex(binary); })
                                     .share()] { return digest.get(); };
  info.listeners = [&streams] { return streams.listeners(); };  // before the control socket answers status
  info.connection_buffer_bytes = [&streams] { return streams.buffered_bytes(); };
  info.max_connection_memory = streams.memory_budget();
  info.call_warn = config->call_warn;
  info.not_started = [&releases] { return releases.not_started(); };
  info.pending_snapshots = [&releases] { return releases.pending_snapshots(); };
  HttpRouter router(table, info);
  HttpOptions http_options{config->http, config->http_threads, config->max_request_bytes};
  http_options.listen_fd = http_fd;
  http_options.max_clients = config->clients.maxclients;
  {  // Redis's "maxclients reduced ... because of a low file descriptor limit", once
    std::vector<std::uint32_t> wanted{http_options.max_clients};
    std::string asked = "http " + std::to_string(http_options.max_clients);
    for (const auto& listener : streams.listeners()) {
      wanted.push_back(listener.maxclients);
      asked += ", " + listener.module + " " + std::to_string(listener.maxclients);
    }
    constexpr std::uint64_t kReservedFds = 64;  // control socket, log, images, snapshots, state files
    if (const auto cap = maxclients_cap(wanted, fds.after, kReservedFds)) {
      streams.cap_maxclients(*cap);
      http_options.max_clients = std::min(http_options.max_clients, *cap);
      log->warn("maxclients reduced to {} per listener (asked: {}) because of a low file descriptor limit: "
                "RLIMIT_NOFILE is {}, {} of them kept for other files; raise it (LimitNOFILE= under systemd, "
                "ulimit -n) or lower maxclients",
                *cap, asked, fds.after, kReservedFds);
    }
  }
  HttpServer http(std::move(http_options), [&router](const molt::api::Request& request) { return router.route(request); },
                  log);
  if (auto listening = http.listen(); !listening) {
    log->critical("{}", listening.error().to_string());
    return give_up(listening.error().to_string(), 1);
  }
  info.http = http.local_endpoint().to_string();
  http_address = info.http;  // before the peer listener starts (below): nobody reads it yet
  info.http_connections = [&http] { return http.connections(); };  // before serve(): the metrics read it
  info.http_refused = [&http] { return http.refused(); };
  HotRestart::Options restart_options{binary, arguments, run_dir->lock_fd(), info.generation, notifier.address()};
  restart_options.quiesce_timeout = config->quiesce_timeout;
  restart_options.watchdog = watchdog_interval;
  if (notifier.enabled())
    restart_options.on_committed = [&notifier](long pid) {
      notifier.send("MAINPID=" + std::to_string(pid) + "\nSTATUS=handed over to pid " + std::to_string(pid) +
                    " (hot restart)");
    };
  HotRestart hot_restart(std::move(restart_options), HotRestart::Parts{table, releases, streams, http}, log);
  info.hot_restart = [&hot_restart](const std::optional<std::string>& path) -> Result<std::string> {
    auto report = hot_restart.run(path ? std::optional<fs::path>(*path) : std::nullopt);
    if (!report) return std::move(report).error();
    ::kill(::getpid(), SIGUSR2);  // the main thread exits once this reply is written
    return json_text(report->to_json());
  };
  info.handoff = [&handoff, &ownership](const std::string& module,
                                        const std::optional<std::string>& to) -> Result<std::string> {
    std::string where;
    if (to) {
      where = *to;
    } else {  // back where it came from
      const auto entry = ownership.value()->find(module);
      if (!entry || entry->ownership != Ownership::Owned)
        return Error{module, {}, {}, Phase::Handoff, "was not received from a peer: say where (--to HOST:PORT)"};
      where = entry->peer;
    }
    const auto endpoint = parse_endpoint(where);
    if (!endpoint || endpoint->port == 0)
      return Error{module, {}, {}, Phase::Handoff, "'" + where + "' is not HOST:PORT"};
    auto report = handoff->send(module, *endpoint);
    if (!report) return std::move(report).error();
    return json_text(report->to_json());
  };
  info.handoffs = [&handoff] { return json_text(handoff->status()); };
  info.moved_http = [&handoff](std::string_view module) { return handoff->moved_http(module); };
  info.redirect_moved_http = config->handoff_http == "redirect";
  // moltctl drain: every module to one peer; not ready from then on (a restart clears it).
  std::mutex drain_mutex;
  std::optional<std::string> draining;  // guarded by drain_mutex
  info.not_ready = [&] {
    std::lock_guard lock(drain_mutex);
    return draining;
  };
  info.drain = [&](const std::string& to, std::chrono::steady_clock::time_point deadline) -> Result<std::string> {
    const auto endpoint = parse_endpoint(to);
    if (!endpoint || endpoint->port == 0) return Error{"(host)", {}, {}, Phase::Handoff, "'" + to + "' is not HOST:PORT"};
    {
      std::lock_guard lock(drain_mutex);
      draining = "draining: its modules are being handed to " + to;
    }
    log->info("drain: handing every module to {}; GET /-/ready answers 503 from now on", to);
    nlohmann::json moved = nlohmann::json::array(), failed = nlohmann::json::array();
    for (const auto& slot : table.slots()) {
      if (std::chrono::steady_clock::now() >= deadline) {
        failed.push_back({{"module", slot->name()}, {"error", "the drain's deadline passed before its turn"}});
        continue;
      }
      auto report = handoff->send(slot->name(), *endpoint);
      if (report) moved.push_back(report->to_json());
      else failed.push_back({{"module", slot->name()}, {"error", report.error().to_string()}});
    }
    {
      std::lock_guard lock(drain_mutex);
      draining = "drained: its modules were handed to " + to + (failed.empty() ? "" : " (not all: moltctl status)");
    }
    return json_text(nlohmann::json{{"modules", moved}, {"failed", failed}});
  };
  adopt_steps.lap("HTTP listener");
  if (transfer) carry_over_metrics(transfer->metrics, table, streams, http);  // counters go on from the predecessor's
  adopt_steps.lap("metrics");
  if (successor) {  // the point of no return is the predecessor's: wait for its commit
    if (auto committed = successor->ready(); !committed) {
      log->critical("hot restart: {}; exiting (the previous moltd serves on)", committed.error().to_string());
      return 1;
    }
  }
  commit_steps.start();
  ControlHandler handler(table, releases, info);
  ControlServer control(ControlServerOptions{run_dir->control_socket()}, handler, log);
  if (auto started = control.start(); !started) {
    log->critical("{}", started.error().to_string());
    return 1;
  }
  commit_steps.lap("control socket");
  // The module connections first: a hot restart's clients wait for them.
  streams.serve();
  commit_steps.lap("I/O threads");
  if (transfer)  // their output first, then their input, in order
    for (auto& connection : transfer->connections)
      if (auto adopted = streams.adopt_connection(std::move(connection)); !adopted)
        log->error("hot restart: {}", adopted.error().to_string());
  commit_steps.lap("connections");
  http.serve();
  if (transfer) {
    for (auto& [fd, input] : transfer->http_connections)
      if (auto adopted = http.adopt_connection(fd.release(), input); !adopted)
        log->error("hot restart: {}", adopted.error().to_string());
    commit_steps.lap("HTTP");
    successor->serving({{"pid", ::getpid()}});  // the predecessor exits: clients wait no more
    commit_steps.lap("serving sent");
    // Then what no client waits for.
    if (auto why = run_dir->write_pid()) log->warn("hot restart: {}", *why);
    releases.record_take_over();
    // The predecessor loads nothing more: its image copies may go (a mapped
    // file stays mapped); ours stay.
    std::set<fs::path> ours;
    for (const auto& slot : table.slots()) ours.insert(slot->running().image);
    loader.remove_stale_copies(ours);
    notifier.send("MAINPID=" + std::to_string(::getpid()));
    log->info("hot restart: serving {} connection(s) and {} HTTP connection(s) taken over (adopt: {}; after the "
              "commit: {})",
              transfer->connections.size(), transfer->http_connections.size(), adopt_steps.text(), commit_steps.text());
  }
  releases.start_watching();
  if (auto peer = handoff->listen(); !peer) {
    if (!successor) {
      log->critical("{}", peer.error().to_string());
      return 1;
    }
    log->error("{}; no handoff is accepted by this moltd", peer.error().to_string());
  }
  const CallWatch call_watch(table, config->call_warn);
  log->info("ready: {} module(s), http://{}/, control socket {}", table.slots().size(), info.http,
            info.control_socket);
  notifier.ready(releases.summary());
  // WatchdogSec=: pinged from this loop, and only while the I/O threads run
  // what is posted to them, so a hung host is restarted.
  std::optional<systemd::Watchdog> watchdog;
  if (watchdog_interval) {
    watchdog.emplace(*watchdog_interval,
                     std::vector<systemd::Watchdog::Part>{{"http", [&http] { return http.probe(); }},
                                                          {"streams", [&streams] { return streams.probe(); }}},
                     [&notifier] { notifier.watchdog(); }, log);
    log->info("watchdog: WATCHDOG=1 every {} ms while the HTTP and stream I/O threads answer",
              std::chrono::duration_cast<std::chrono::milliseconds>(*watchdog_interval / 2).count());
  }

  while (true) {
    int sig = 0;
    if (watchdog) {
      const auto next = watchdog->tick(std::chrono::steady_clock::now());
      const timespec timeout = to_timespec(next - std::chrono::steady_clock::now());
      sig = sigtimedwait(&handled, nullptr, &timeout);
      if (sig < 0) continue;  // time for the next tick (or EINTR)
    } else if (sigwait(&handled, &sig) != 0) {
      continue;
    }
    if (sig == SIGUSR2) {
      if (!hot_restart.committed()) {
        log->info("SIGUSR2: hot restart");
        (void)hot_restart.run(std::nullopt);  // logs its outcome
      }
      if (hot_restart.committed()) {
        control.stop(std::chrono::seconds(2), false);  // the reply to whoever asked is written; the path is the successor's
        hot_restart.exit_now();
      }
      continue;
    }
    if (sig == SIGHUP) {
      log->info("SIGHUP: reloading modules whose file in {} changed", info.plugin_dir);
      const auto reports = releases.reload_changed();  // each logs its own summary line
      log->info("SIGHUP: {} module(s) reloaded", reports.size());
      continue;
    }
    log->info("{}: stopping; finishing requests in flight", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    notifier.stopping(std::string(sig == SIGTERM ? "SIGTERM" : "SIGINT") +
                      ": stopping; finishing requests in flight, then saving every module's state");
    break;
  }
  // From here a second SIGTERM or SIGINT exits at once, whatever is still
  // running: the operator has decided.
  std::thread([&handled, log] {
    name_this_thread("molt-signals");
    while (true) {
      int sig = 0;
      if (sigwait(&handled, &sig) != 0 || sig == SIGHUP) continue;
      log->critical("{} again: exiting now, without waiting for requests or writing snapshots",
                    sig == SIGTERM ? "SIGTERM" : "SIGINT");
      log->flush();
      ::_exit(1);
    }
  }).detach();

  // Each step below has a deadline: a module stuck in a call costs its own
  // snapshot, never the shutdown.
  auto http_stopped = std::async(std::launch::async, [&] { return http.stop(config->shutdown_grace); });
  bool all_stopped = streams.stop(config->shutdown_grace);
  all_stopped = http_stopped.get() && all_stopped;
  all_stopped = control.stop(std::chrono::seconds(1)) && all_stopped;
  // After the steps in progress: the snapshots below hold every step that ran.
  all_stopped = table.stop_jobs(config->quiesce_timeout) && all_stopped;
  // Snapshots every module it can, now that no request can change its state.
  const auto unsaved = releases.shut_down();
  for (const auto& line : unsaved) log->error("shutdown: {}; its last snapshot stands", line);
  if (!all_stopped || !unsaved.empty()) {
    // A thread is still inside module code: destroying what it uses would
    // crash the process. Exit without destructors (the log is flushed).
    log->error("exiting without stopping the modules ({} module(s) not saved); exit status 1", unsaved.size());
    log->flush();
    ::_exit(1);
  }
  table.stop_all();
  log->info("stopped");
  return 0;
}
