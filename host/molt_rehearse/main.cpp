// molt-rehearse: runs one module image through the hooks an upgrade runs it
// through, in a process of its own, so that the host learns whether it
// crashes, hangs, exits, throws or leaves a thread behind before the live
// process loads it. Started by rehearse() (host/upgrade/rehearsal.hpp, which
// says why and lists the steps); installed beside moltd. By hand:
//
//   molt-rehearse --image plugins/notes-4.so --module notes --state notes.molt --save-schema 3
//
// The steps, in order, one function each below; each is announced on the
// progress descriptor ("step load_state") before it begins, so that the
// parent can name the step a crash, an exit or a hang happened in:
//
//   check, static initialisation, construct, start, load_state (with
//   --state), health, save_state, stop, destroy, threads, unload
//
// The first step that fails ends the rehearsal at once: its result is
// written and the process ends (_exit) without running more of the module's
// code. (A module that failed has shown what it had to show; its stop,
// destructor or static destructors could only hide it behind a second
// failure.) "threads" comes before "unload" for the same reason: a thread
// still running the module's code would crash when dlclose unmaps it, and
// the report would be a SIGSEGV in unload instead of the thread.
//
// Output: one JSON line on stdout, {"ok":true,"saved_bytes":N,...} or
// {"ok":false,"step":"load_state","reason":"load_state threw: ..."}. Module
// code's own stdout goes to stderr, with the log, so that nothing it prints
// can pass for the result. Exit 0 once the steps have run (passed or not);
// 2 for bad arguments (CLI11's own codes for what it refuses), 3 when the
// rehearsal could not be set up.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_sinks.h>

#include "molt/host/common/json_text.hpp"
#include "molt/host/loader/loader.hpp"
#include "molt/host/slot/hooks.hpp"
#include "molt/host/slot/module_call.hpp"
#include "molt/host/slot/state_hooks.hpp"
#include "molt/host/state/state_blob.hpp"

namespace fs = std::filesystem;
using namespace molt;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int kUsageError = 2;
constexpr int kSetupError = 3;

struct Options {
  fs::path image;
  std::string module;
  std::optional<std::string> sha256;
  std::optional<fs::path> state;
  std::optional<std::uint32_t> save_schema;
  api::Values extra;
  api::Values config;
  int progress_fd = -1;
  std::uint64_t max_state_bytes = 1ull << 30;
  std::uint64_t max_address_space = 0;
};

/// Writes all of `text` to `fd`, as few write() calls as it takes (one, for
/// a progress line: the parent never sees half of it).
void write_all(int fd, std::string_view text) {
  while (fd >= 0 && !text.empty()) {
    const ssize_t n = ::write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the parent is gone: nobody to tell
    text.remove_prefix(static_cast<std::size_t>(n));
  }
}

/// What start() gets: the logger and the config values; timers and jobs
/// are accepted and ignored (nothing here runs them, and start may not
/// start jobs anyway).
class RehearsalContext final : public api::Context {
 public:
  RehearsalContext(std::string module, api::Values config)
      : module_(std::move(module)),
        config_(std::move(config)),
        logger_(std::make_shared<spdlog::logger>(module_, std::make_shared<spdlog::sinks::stderr_sink_mt>())) {}
  spdlog::logger& log() override { return *logger_; }
  const api::Values& config() const override { return config_; }
  std::string_view module_name() const override { return module_; }
  api::StreamLimits stream_limits() const override { return api::StreamLimits{1ull << 30, 1ull << 20}; }
  void set_timer(std::string_view, std::chrono::milliseconds) override {}
  void set_timer_once(std::string_view, std::chrono::milliseconds) override {}
  void cancel_timer(std::string_view) override {}
  bool start_job(std::string_view) override { return true; }

 private:
  std::string module_;
  api::Values config_;
  std::shared_ptr<spdlog::logger> logger_;
};

/// Threads of this process now (/proc/self/task).
std::size_t count_threads() {
  std::error_code ec;
  fs::directory_iterator tasks("/proc/self/task", ec);
  return ec ? 0 : static_cast<std::size_t>(std::distance(tasks, fs::directory_iterator()));
}

bool is_mapped(const fs::path& path) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);)
    if (line.ends_with(path.string())) return true;
  return false;
}

class Rehearsal {
 public:
  Rehearsal(Options options, fs::path image_dir, int result_fd)
      : options_(std::move(options)),
        image_dir_(std::move(image_dir)),
        result_fd_(result_fd),
        loader_(host::LoaderOptions{image_dir_}) {}

  /// Runs the steps; writes the result line and ends the process.
  [[noreturn]] void run() {
    using Step = std::optional<std::string> (Rehearsal::*)();
    static constexpr std::pair<std::string_view, Step> kSteps[] = {
        {"check", &Rehearsal::check},
        {"static initialisation", &Rehearsal::static_initialisation},
        {"construct", &Rehearsal::construct},
        {"start", &Rehearsal::start},
        {"load_state", &Rehearsal::load_state},
        {"health", &Rehearsal::health},
        {"save_state", &Rehearsal::save_state},
        {"stop", &Rehearsal::stop},
        {"destroy", &Rehearsal::destroy},
        {"threads", &Rehearsal::threads},
        {"unload", &Rehearsal::unload},
    };
    threads_before_ = count_threads();
    for (const auto& [name, step] : kSteps) {
      if (name == "load_state" && !options_.state) continue;
      write_all(options_.progress_fd, "step " + std::string(name) + '\n');
      const auto started = Clock::now();
      if (auto failure = (this->*step)()) finish(failure_line(name, *failure));
      steps_[std::string(name)] = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count();
    }
    finish(result_line());
  }

 private:
  // The steps. Each returns why it failed, or nothing.

  std::optional<std::string> check() {
    auto checked = loader_.check(options_.image, options_.module, options_.sha256);
    if (!checked) return checked.error().reason;
    info_ = checked->info;
    write_all(options_.progress_fd, "image " + std::to_string(info_.version.value) + ' ' +
                                        std::to_string(info_.schema.value) + '\n');
    return std::nullopt;
  }

  /// dlopen runs the image's static constructors; one that throws may
  /// reach this far (or terminate the process: SIGABRT here).
  std::optional<std::string> static_initialisation() {
    std::optional<std::string> refused;
    const auto threw = host::guard_module_call("static initialisation", [&] {
      auto loaded = loader_.load(options_.image, options_.module, options_.sha256);
      if (!loaded) {
        refused = loaded.error().reason;
        return;
      }
      image_ = std::move(loaded.value());
      mapped_ = image_->mapped_path();
    });
    return threw ? threw : refused;
  }

  std::optional<std::string> construct() {
    auto instance = image_->instantiate();
    if (!instance) return instance.error().reason;
    instance_ = std::move(instance.value());
    return std::nullopt;
  }

  /// start, and the refusal reply the host asks for right after it.
  std::optional<std::string> start() {
    context_ = std::make_unique<RehearsalContext>(options_.module, options_.config);
    if (auto failure = host::guard_module_call("start", [&] { hooks().start(*context_); })) return failure;
    started_ = true;
    return host::guard_module_call("refusal_reply",
                                   [&] { (void)hooks().refusal_reply(api::Refusal::TooManyClients); });
  }

  /// As an upgrade (or a restore) hands the state over: told who wrote it,
  /// in which schema, which way it moves, and made to read all of it.
  std::optional<std::string> load_state() {
    auto blob = host::read_state_file(*options_.state, options_.max_state_bytes);
    if (!blob) return "cannot read the state: " + blob.error().reason;
    if (blob->module != options_.module) return "state archive is of module '" + blob->module + "'";
    state_bytes_ = blob->bytes.size();
    const api::Migration migration{blob->schema, blob->version, host::direction_between(blob->version, info_.version),
                                   options_.extra};
    return host::load_state_blob(hooks(), *blob, migration);
  }

  std::optional<std::string> health() {
    std::optional<std::string> problem;
    if (auto failure = host::guard_module_call("health", [&] { problem = hooks().health(); })) return failure;
    if (problem) return "unhealthy: " + *problem;
    return std::nullopt;
  }

  /// Into the schema the old version reads, in memory, bounded.
  std::optional<std::string> save_state() {
    save_schema_ = options_.save_schema ? api::SchemaVersion{*options_.save_schema} : info_.schema;
    const api::Direction direction = save_schema_ < info_.schema   ? api::Direction::Down
                                     : save_schema_ > info_.schema ? api::Direction::Up
                                                                   : api::Direction::Same;
    auto saved = host::save_state_to_string(hooks(), api::SaveTarget{save_schema_, direction, options_.extra},
                                            options_.max_state_bytes);
    if (!saved) return saved.error().reason;
    saved_bytes_ = saved->size();
    return std::nullopt;
  }

  std::optional<std::string> stop() {
    if (started_) hooks().stop();  // noexcept: a throw in it terminates (SIGABRT in stop)
    return std::nullopt;
  }

  /// The instance only: the image stays loaded (this object holds it).
  std::optional<std::string> destroy() {
    instance_.reset();
    return std::nullopt;
  }

  std::optional<std::string> threads() {
    const std::size_t now = count_threads();
    threads_left_ = now > threads_before_ ? now - threads_before_ : 0;
    if (threads_left_ > 0) return "left " + std::to_string(threads_left_) + " thread(s) running after stop";
    return std::nullopt;
  }

  /// dlclose. An image that stays mapped afterwards (a STB_GNU_UNIQUE
  /// symbol, a thread_local with a destructor) is reported, not refused:
  /// it costs memory at each upgrade, not the host.
  std::optional<std::string> unload() {
    image_.reset();
    unloaded_ = !is_mapped(mapped_);
    return std::nullopt;
  }

  // ---------------------------------------------------------------------------

  [[nodiscard]] host::Hooks hooks() const { return host::Hooks(*instance_, info_); }

  nlohmann::json identity() const {
    nlohmann::json json = {{"module", options_.module}};
    if (info_.version.value != 0) {
      json["version"] = info_.version.value;
      json["schema"] = info_.schema.value;
    }
    return json;
  }

  nlohmann::json failure_line(std::string_view step, const std::string& reason) const {
    nlohmann::json json = {{"ok", false}, {"step", step}, {"reason", reason}};
    json.update(identity());
    return json;
  }

  nlohmann::json result_line() const {
    nlohmann::json json = {{"ok", true},
                           {"saved_bytes", saved_bytes_},
                           {"save_schema", save_schema_.value},
                           {"threads_left", threads_left_},
                           {"unloaded", unloaded_},
                           {"steps_us", steps_}};
    if (options_.state) json["state_bytes"] = state_bytes_;
    json.update(identity());
    return json;
  }

  /// Writes `result`, removes the image directory and ends the process
  /// without running any more module code (no static destructors: _exit).
  [[noreturn]] void finish(const nlohmann::json& result) {
    write_all(result_fd_, host::json_text(result) + '\n');
    std::error_code ec;
    fs::remove_all(image_dir_, ec);  // a loaded copy stays mapped: removing the file unmaps nothing
    std::fflush(stdout);  // what module code printed (now to stderr): _exit flushes nothing
    std::fflush(stderr);
    ::_exit(0);
  }

  Options options_;
  fs::path image_dir_;
  int result_fd_;
  host::Loader loader_;
  host::ImageInfo info_{};                   ///< from check
  std::shared_ptr<host::Image> image_;       ///< loaded until unload
  fs::path mapped_;                          ///< the image's private copy
  host::Instance instance_;                  ///< from construct until destroy
  std::unique_ptr<RehearsalContext> context_;  ///< outlives the instance
  bool started_ = false;                     ///< start returned: stop is owed
  std::size_t threads_before_ = 0;
  std::size_t threads_left_ = 0;
  std::uint64_t state_bytes_ = 0;
  api::SchemaVersion save_schema_{};
  std::uint64_t saved_bytes_ = 0;
  bool unloaded_ = false;
  nlohmann::json steps_ = nlohmann::json::object();  ///< microseconds per step
};

/// "k=v" entries into `values`; false on one without '='.
bool parse_values(const std::vector<std::string>& entries, api::Values& values) {
  for (const auto& entry : entries) {
    const auto equals = entry.find('=');
    if (equals == std::string::npos || equals == 0) return false;
    values[entry.substr(0, equals)] = entry.substr(equals + 1);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // First of all, before any module code can run: no core dumps (a crash
  // here is expected, and reported; a core of a large state is not wanted),
  // and no life beyond the thread that started us.
  const rlimit no_core{0, 0};
  ::setrlimit(RLIMIT_CORE, &no_core);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);

  CLI::App app{"Rehearse a module image in this process: the hooks an upgrade runs, in order (see "
               "host/include/molt/host/upgrade/rehearsal.hpp)"};
  Options options;
  std::vector<std::string> extra, config;
  std::uint32_t save_schema = 0;
  app.add_option("--image", options.image, "the module image file")->required();
  app.add_option("--module", options.module, "the module it must be")->required();
  app.add_option("--sha256", options.sha256, "the SHA-256 the image must have (lowercase hex)");
  app.add_option("--state", options.state, "a state archive (molt-state/1) for load_state");
  app.add_option("--save-schema", save_schema, "the schema save_state writes (default: the image's own)")
      ->check(CLI::PositiveNumber);
  app.add_option("--extra", extra, "an extra value for the migration hooks, key=value; repeatable");
  app.add_option("--config", config, "a configuration value, key=value; repeatable");
  app.add_option("--progress-fd", options.progress_fd, "descriptor to announce each step on");
  app.add_option("--max-state-bytes", options.max_state_bytes, "largest state read or saved");
  app.add_option("--max-address-space", options.max_address_space, "RLIMIT_AS in bytes; 0: none");
  CLI11_PARSE(app, argc, argv);
  if (save_schema != 0) options.save_schema = save_schema;
  if (!parse_values(extra, options.extra) || !parse_values(config, options.config)) {
    std::cerr << "molt-rehearse: --extra and --config take key=value\n";
    return kUsageError;
  }
  if (options.progress_fd >= 0 && ::fcntl(options.progress_fd, F_GETFD) < 0) {
    std::cerr << "molt-rehearse: --progress-fd " << options.progress_fd << " is not open\n";
    return kUsageError;
  }
  if (options.max_address_space != 0) {
    const rlimit limit{options.max_address_space, options.max_address_space};
    if (::setrlimit(RLIMIT_AS, &limit) != 0) {
      std::cerr << "molt-rehearse: cannot limit the address space to " << options.max_address_space << " bytes\n";
      return kSetupError;
    }
  }

  // The result keeps the real stdout; module code's stdout joins the log.
  const int result_fd = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
  if (result_fd < 0 || ::dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
    std::cerr << "molt-rehearse: cannot set up its output\n";
    return kSetupError;
  }
  std::error_code ec;
  std::string dir_template = (fs::temp_directory_path(ec) / "molt-rehearse-XXXXXX").string();
  if (ec || ::mkdtemp(dir_template.data()) == nullptr) {
    std::cerr << "molt-rehearse: cannot create a temporary directory\n";
    return kSetupError;
  }
  const fs::path image_dir = dir_template;
  write_all(options.progress_fd, "dir " + image_dir.string() + '\n');
  Rehearsal(std::move(options), image_dir, result_fd).run();
}
