// The parent's half of a rehearsal (rehearsal.hpp says what and why; the
// child's half, the steps themselves, is host/molt_rehearse/main.cpp). In
// order, one function each:
//
//   1. spawn    The helper, with its pipes: stdout (its result, one JSON
//               line), stderr (its log), fd 3 (its progress). Everything
//               that allocates happens before posix_spawn; the child gets a
//               process group of its own, an empty signal mask, default
//               dispositions, stdin on /dev/null and no other descriptor.
//               posix_spawn cannot set resource limits: the helper sets
//               RLIMIT_CORE 0 and RLIMIT_AS (--max-address-space) itself,
//               first thing, before it opens the image.
//   2. watch    Until the child exits or the deadline passes: poll its pipes
//               and a pidfd (which turns readable when it exits: no sleeps,
//               no SIGCHLD), keep what it says within bounds, and note each
//               step it announces.
//   3. reap     Kill its process group (SIGKILL): the child itself after a
//               deadline, and anything it started in any case. The child is
//               not reaped before that, so its pid, which names the group,
//               cannot have been reused. Then reap it and read what is left
//               in its pipes.
//   4. judge    How it ended decides: a clean exit with a result line is that
//               result; a signal, an exit without one, or the deadline is a
//               failure in the last step announced.
//
// The progress pipe's protocol, one line each, all from the child:
//   dir <path>               its private image directory (removed here if the
//                            child could not remove it itself)
//   image <version> <schema> what the checked image declares
//   step <name>              the step that begins
#include "molt/host/upgrade/rehearsal.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <vector>

#include <nlohmann/json.hpp>

#include "molt/host/common/file_checks.hpp"
#include "molt/host/common/signal_name.hpp"

extern char** environ;

namespace molt::host {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr std::size_t kMaxResultBytes = 64 << 10;  ///< of the child's stdout, the end kept
constexpr std::size_t kMaxLogBytes = 4 << 10;      ///< of its stderr, the end kept
constexpr std::size_t kMaxProgressLine = 4 << 10;  ///< longer progress lines are dropped
constexpr int kProgressFd = 3;                     ///< the progress pipe's number in the child
/// After the child is gone: how long its pipes may stay open (held by a
/// process that left its group) before they are abandoned.
constexpr milliseconds kDrainGrace{500};

/// The signal's fixed name (common/signal_name.hpp), or "signal N".
std::string signal_text(int sig) {
  const std::string_view name = signal_name(sig);
  return name.empty() ? "signal " + std::to_string(sig) : std::string(name);
}

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

/// Appends `data` to `kept`, keeping only its last `limit` bytes.
void keep_tail(std::string& kept, std::string_view data, std::size_t limit) {
  kept.append(data);
  if (kept.size() > limit) kept.erase(0, kept.size() - limit);
}

/// The child's command line, built before the spawn (nothing allocates after).
std::vector<std::string> helper_arguments(const RehearsalRequest& request) {
  std::vector<std::string> args{request.helper.string(),
                                "--image", request.image.string(),
                                "--module", request.module,
                                "--progress-fd", std::to_string(kProgressFd),
                                "--max-state-bytes", std::to_string(request.max_state_bytes)};
  if (request.sha256) args.insert(args.end(), {"--sha256", *request.sha256});
  if (request.state) args.insert(args.end(), {"--state", request.state->string()});
  if (request.save_schema) args.insert(args.end(), {"--save-schema", std::to_string(request.save_schema->value)});
  if (request.max_address_space != 0)
    args.insert(args.end(), {"--max-address-space", std::to_string(request.max_address_space)});
  for (const auto& [key, value] : request.extra) args.insert(args.end(), {"--extra", key + '=' + value});
  for (const auto& [key, value] : request.config) args.insert(args.end(), {"--config", key + '=' + value});
  return args;
}

/// One rehearsal's child and what it has said.
class Rehearsal {
 public:
  explicit Rehearsal(const RehearsalRequest& request) : request_(request) {}

  RehearsalResult run() {
    started_ = Clock::now();
    if (auto failure = spawn()) return not_run(*failure);
    watch(started_ + request_.deadline);
    reap();
    return judge();
  }

 private:
  /// A pipe's read end in this process, and what has been read from it.
  struct Stream {
    FileDescriptor fd;
    bool open = false;
  };

  // 1. spawn ------------------------------------------------------------------
  /// Starts the helper; why not, if it could not.
  std::optional<std::string> spawn() {
    int out[2], err[2], progress[2];
    if (::pipe2(out, O_CLOEXEC) != 0) return "cannot create a pipe: " + errno_text(errno);
    FileDescriptor out_read(out[0]), out_write(out[1]);
    if (::pipe2(err, O_CLOEXEC) != 0) return "cannot create a pipe: " + errno_text(errno);
    FileDescriptor err_read(err[0]), err_write(err[1]);
    if (::pipe2(progress, O_CLOEXEC) != 0) return "cannot create a pipe: " + errno_text(errno);
    FileDescriptor progress_read(progress[0]), progress_write(progress[1]);
    // The write ends moved above every descriptor the child is given, so that
    // no dup2 below overwrites one still to be moved (a host started with
    // fd 1 closed could get a pipe there). dup2 clears close-on-exec.
    FileDescriptor child_out(::fcntl(out_write.get(), F_DUPFD_CLOEXEC, 10));
    FileDescriptor child_err(::fcntl(err_write.get(), F_DUPFD_CLOEXEC, 10));
    FileDescriptor child_progress(::fcntl(progress_write.get(), F_DUPFD_CLOEXEC, 10));
    if (!child_out.valid() || !child_err.valid() || !child_progress.valid())
      return "cannot duplicate a descriptor: " + errno_text(errno);

    const std::vector<std::string> args = helper_arguments(request_);
    std::vector<char*> argv;
    for (const auto& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, child_out.get(), 1);
    posix_spawn_file_actions_adddup2(&actions, child_err.get(), 2);
    posix_spawn_file_actions_adddup2(&actions, child_progress.get(), kProgressFd);
    posix_spawn_file_actions_addclosefrom_np(&actions, kProgressFd + 1);
    // moltd blocks SIGHUP, SIGTERM and SIGINT in every thread and ignores
    // SIGPIPE: the child starts with nothing blocked and every disposition
    // at its default, as a fresh process would.
    posix_spawnattr_t attributes;
    posix_spawnattr_init(&attributes);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attributes, 0);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    sigdelset(&all, SIGKILL);
    sigdelset(&all, SIGSTOP);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &all);
    const int spawned = ::posix_spawn(&pid_, argv[0], &actions, &attributes, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (spawned != 0) return "cannot run " + request_.helper.string() + ": " + errno_text(spawned);

    // Only the child holds the write ends now: each read end sees EOF once
    // it (and whatever it started) is gone.
    streams_[0] = Stream{std::move(out_read), true};
    streams_[1] = Stream{std::move(err_read), true};
    streams_[2] = Stream{std::move(progress_read), true};
    // Not reaped by anyone but this object, so the pid still names the child.
    pidfd_ = FileDescriptor(static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0)));
    return std::nullopt;
  }

  // 2. watch ------------------------------------------------------------------
  /// Reads the child's pipes until it exits or `deadline` passes.
  void watch(Clock::time_point deadline) {
    while (!exited()) {
      const auto left = std::chrono::ceil<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        timed_out_ = true;
        return;
      }
      // Without a pidfd (a kernel before 5.3) the exit is noticed by asking
      // at least every 10 ms instead.
      const int wait_ms = pidfd_.valid() ? static_cast<int>(left.count()) : std::min<int>(10, left.count());
      poll_once(wait_ms, pidfd_.valid());
    }
  }

  /// Whether the child has exited, without reaping it (WNOWAIT): its pid
  /// must keep naming its process group until reap() has killed the group.
  bool exited() {
    if (exited_) return true;
    siginfo_t info{};
    const int asked = ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT);
    if (asked == 0 && info.si_pid == pid_) exited_ = true;
    // Reaped by someone else (SIGCHLD ignored, or a waitpid(-1) elsewhere):
    // gone, its status with it.
    if (asked < 0 && errno == ECHILD) exited_ = status_lost_ = true;
    return exited_;
  }

  /// Polls the open pipes (and the pidfd, if `with_pidfd`) once, for up to
  /// `wait_ms`, and reads what is there.
  void poll_once(int wait_ms, bool with_pidfd) {
    pollfd fds[4];
    nfds_t count = 0;
    int which[4];
    for (int i = 0; i < 3; ++i) {
      if (!streams_[i].open) continue;
      fds[count] = pollfd{streams_[i].fd.get(), POLLIN, 0};
      which[count++] = i;
    }
    if (with_pidfd) {
      fds[count] = pollfd{pidfd_.get(), POLLIN, 0};
      which[count++] = -1;
    }
    if (::poll(fds, count, wait_ms) <= 0) return;  // timeout or EINTR: the caller looks at the clock
    for (nfds_t i = 0; i < count; ++i)
      if (which[i] >= 0 && fds[i].revents != 0) read_from(which[i]);
  }

  void read_from(int index) {
    char buffer[16384];
    const ssize_t n = ::read(streams_[index].fd.get(), buffer, sizeof buffer);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (n <= 0) {
      streams_[index].open = false;
      return;
    }
    const std::string_view data(buffer, static_cast<std::size_t>(n));
    switch (index) {
      case 0: keep_tail(result_text_, data, kMaxResultBytes); break;
      case 1: keep_tail(log_, data, kMaxLogBytes); break;
      default: take_progress(data); break;
    }
  }

  void take_progress(std::string_view data) {
    for (const char c : data) {
      if (c != '\n') {
        if (progress_line_.size() < kMaxProgressLine) progress_line_ += c;
        continue;
      }
      const std::string_view line = progress_line_;
      if (line.starts_with("step ")) {
        step_ = line.substr(5);
      } else if (line.starts_with("dir ")) {
        image_dir_ = fs::path(line.substr(4));
      } else if (line.starts_with("image ")) {
        try {
          version_ = api::ModuleVersion{static_cast<std::uint32_t>(std::stoul(std::string(line.substr(6))))};
        } catch (const std::exception&) {
          // not a number: the version stays unknown
        }
      }
      progress_line_.clear();
    }
  }

  // 3. reap -------------------------------------------------------------------
  void reap() {
    // The child after a deadline, and whatever it started in any case. Not
    // reaped yet, so its pid still names its group (unless someone else
    // reaped it: then the group may be gone or another's).
    if (!status_lost_) {
      ::killpg(pid_, SIGKILL);
      int status = 0;
      pid_t reaped = -1;
      while ((reaped = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
      }
      status_ = status;
      status_lost_ = reaped != pid_;
    }
    took_ = std::chrono::duration_cast<milliseconds>(Clock::now() - started_);
    // What it wrote before it ended; the group is killed, so the pipes close
    // at once, unless something left the group (setsid) and keeps them.
    const auto grace = Clock::now() + kDrainGrace;
    while (std::any_of(streams_, streams_ + 3, [](const Stream& s) { return s.open; })) {
      const auto left = std::chrono::ceil<milliseconds>(grace - Clock::now());
      if (left.count() <= 0) break;
      poll_once(static_cast<int>(left.count()), false);
    }
    remove_image_dir();
  }

  /// The child removes its image directory when it ends normally; after a
  /// crash it is still there. Only a directory the child announced, where
  /// it would make one (molt-rehearse-* in the temporary directory).
  void remove_image_dir() {
    if (image_dir_.empty()) return;
    std::error_code ec;
    const bool ours = image_dir_.parent_path() == fs::temp_directory_path(ec) &&
                      image_dir_.filename().string().starts_with("molt-rehearse-");
    if (ours) fs::remove_all(image_dir_, ec);
  }

  // 4. judge ------------------------------------------------------------------
  RehearsalResult judge() {
    RehearsalResult result;
    result.took = took_;
    result.version = version_;
    result.step = step_;
    result.log = log_;
    if (status_lost_) {
      // Only its result line can tell; without one nothing is known.
      if (auto parsed = result_line(); parsed && parsed->value("ok", false)) return passed(*parsed, result);
      return not_run("its exit status was taken by another waitpid in this process (is SIGCHLD ignored?)", result);
    }
    const bool killed_by_deadline = timed_out_ && WIFSIGNALED(status_) && WTERMSIG(status_) == SIGKILL;
    if (killed_by_deadline) {
      if (step_.empty()) return not_run("did not begin within " + std::to_string(request_.deadline.count()) + " ms", result);
      return failed("did not finish " + step_ + " within " + std::to_string(request_.deadline.count()) + " ms", result);
    }
    if (WIFSIGNALED(status_)) {
      const std::string signal = signal_text(WTERMSIG(status_));
      if (step_.empty()) return not_run("molt-rehearse was killed by " + signal + " before its first step", result);
      return failed(signal + " in " + step_, result);
    }
    const int code = WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
    if (code == 0) {
      if (auto parsed = result_line()) {
        const auto& json = *parsed;
        if (json.value("ok", false)) return passed(json, result);
        result.step = json.value("step", step_);
        return failed(json.value("reason", std::string("failed without a reason")), result);
      }
    }
    if (step_.empty()) {
      const std::string last = last_line(log_);
      return not_run("molt-rehearse exited with " + std::to_string(code) + (last.empty() ? "" : ": " + last), result);
    }
    return failed("exit(" + std::to_string(code) + ") in " + step_, result);
  }

  /// The child's result: the last line of its stdout, if it is a JSON object
  /// with "ok". (The helper sends module code's own stdout to stderr, so
  /// nothing a module prints can pass for it.)
  std::optional<nlohmann::json> result_line() const {
    std::string_view text = result_text_;
    while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    const auto newline = text.rfind('\n');
    if (newline != std::string_view::npos) text.remove_prefix(newline + 1);
    auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (!json.is_object() || !json.contains("ok") || !json["ok"].is_boolean()) return std::nullopt;
    return json;
  }

  static std::string last_line(std::string_view text) {
    while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
    const auto newline = text.rfind('\n');
    return std::string(newline == std::string_view::npos ? text : text.substr(newline + 1));
  }

  std::string prefix() const {
    std::string text = "rehearsal of " + request_.module;
    if (version_) text += " v" + std::to_string(version_->value);
    return text + ": ";
  }

  static RehearsalResult passed(const nlohmann::json& line, RehearsalResult& result) {
    result.outcome = RehearsalOutcome::Passed;
    result.step.clear();
    result.saved_bytes = line.value("saved_bytes", std::uint64_t{0});
    return result;
  }

  RehearsalResult failed(const std::string& why, RehearsalResult& result) const {
    result.outcome = RehearsalOutcome::Failed;
    result.reason = prefix() + why;
    return result;
  }

  RehearsalResult not_run(const std::string& why, RehearsalResult& result) const {
    result.outcome = RehearsalOutcome::NotRun;
    result.reason = prefix() + why;
    return result;
  }

  RehearsalResult not_run(const std::string& why) const {
    RehearsalResult result;
    result.took = std::chrono::duration_cast<milliseconds>(Clock::now() - started_);
    return not_run(why, result);
  }

  const RehearsalRequest& request_;
  Clock::time_point started_{};
  pid_t pid_ = -1;
  FileDescriptor pidfd_;                 ///< readable once the child exits; invalid without pidfd_open
  Stream streams_[3];                    ///< the child's stdout, stderr and progress pipe
  std::string result_text_;              ///< the end of its stdout
  std::string log_;                      ///< the end of its stderr
  std::string progress_line_;            ///< a progress line not complete yet
  std::string step_;                     ///< the last step it announced
  std::optional<api::ModuleVersion> version_;
  fs::path image_dir_;
  bool exited_ = false;     ///< it has exited (not reaped yet)
  bool timed_out_ = false;  ///< the deadline passed first
  bool status_lost_ = false;  ///< someone else reaped it: status_ means nothing
  int status_ = 0;          ///< its wait status
  milliseconds took_{0};
};

}  // namespace

fs::path rehearsal_helper_beside_this_program() {
  std::error_code ec;
  return fs::read_symlink("/proc/self/exe", ec).parent_path() / "molt-rehearse";
}

RehearsalResult rehearse(const RehearsalRequest& request) { return Rehearsal(request).run(); }

}  // namespace molt::host
