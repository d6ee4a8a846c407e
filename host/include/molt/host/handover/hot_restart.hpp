// Hot restart: moltd hands itself over to a new moltd process, with its
// listening sockets, its open connections and every module's state, without
// closing a connection (docs/hot-restart.md).
//
// Steps, each with a deadline; the old process (the predecessor) drives:
//   hello     the successor says its protocol and plugin ABI; the
//             predecessor refuses one it cannot hand over to, else answers
//             with what runs (modules and their images' sha256) and the run
//             directory's lock;
//   prepare   the successor reads the configuration, checks every image and
//             starts the modules (initial state); the predecessor serves;
//   copy      the predecessor pre-copies each module's state to the
//             successor while it serves (modules with pre-copy), which
//             applies each part as it comes to a fresh instance;
//   freeze    the predecessor stops accepting and reading, lets writes in
//             progress and HTTP requests being answered finish (bounded),
//             pauses every module and sends the last of its state (a module
//             without pre-copy: its whole state, which the successor loads
//             into a fresh instance as the bytes arrive);
//   transfer  a manifest (listeners, connections with their unconsumed input
//             and unsent output, idle HTTP keep-alive connections) and the
//             descriptors (SCM_RIGHTS);
//   adopt     the successor swaps in the instances that received the states,
//             listens on the sockets handed over, and says ready without
//             touching a client socket;
//   commit    the successor sends the output, processes the input, serves,
//             and says so: that is the point of no return; the predecessor
//             exits without closing anything.
// Invariant: before commit the predecessor's sockets, buffers and module
// states are untouched by the successor; any failure or timeout kills the
// successor and thaws the predecessor as it was: clients see a stall.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"
#include "molt/host/common/file_checks.hpp"
#include "molt/host/net/stream_server.hpp"
#include "molt/host/runtime/host_info.hpp"

namespace molt::host {

class HttpServer;
class ModuleSlot;
class ModuleTable;
class ReleaseHandler;
class StreamServer;

/// The hot restart protocol this moltd speaks; a successor must speak the same.
inline constexpr int kHotRestartProtocol = 1;
/// One message's bound (its connections' bytes ride on the transfer message).
inline constexpr std::uint32_t kMaxHandoverMessage = 1u << 30;
/// One frame's bound in a streamed state (its frames are 1 MiB).
inline constexpr std::uint32_t kMaxStateFrame = 1u << 24;
/// The bound a streamed state is loaded under (its size is known at its end
/// only): what a module may check a count against before it allocates.
inline constexpr std::uint64_t kMaxHandoverState = std::uint64_t{1} << 36;

/// The socket pair between the two processes: messages are JSON objects,
/// each sent as CBOR after its length (4 bytes, little-endian); a message
/// with "fds": N is followed by N descriptors (fd_passing.hpp). A module's
/// whole state follows its "state" message with "framed": true as frames
/// (4-byte length, then the bytes) written while it is saved and read while
/// it is loaded, up to an empty frame.
class HandoverChannel {
 public:
  using Clock = std::chrono::steady_clock;
  explicit HandoverChannel(FileDescriptor socket) : socket_(std::move(socket)) {}

  /// Why not, by `deadline`.
  [[nodiscard]] std::optional<std::string> send(nlohmann::json message, std::span<const int> fds,
                                                Clock::time_point deadline);
  /// The next message (its descriptors into `fds`), or why not. A message
  /// whose "step" is "failed" or "refused" is returned as its "reason".
  Result<nlohmann::json> receive(Clock::time_point deadline, std::vector<FileDescriptor>* fds = nullptr);
  [[nodiscard]] int fd() const noexcept { return socket_.get(); }
  /// The socket, to use as a plain byte stream from here on (nothing of it
  /// is buffered here: receive() reads no further than its message).
  [[nodiscard]] FileDescriptor release() && { return std::move(socket_); }
  /// The largest message receive() takes (default kMaxHandoverMessage): a
  /// peer not yet authenticated gets a small one (handoff/peer_auth.hpp).
  void set_max_message(std::uint32_t bytes) noexcept { max_message_ = bytes; }

 private:
  FileDescriptor socket_;
  std::uint32_t max_message_ = kMaxHandoverMessage;
};

/// Bytes as a message field (CBOR binary), and back (empty if the field is
/// not binary): how state parts and connection buffers ride on the channel.
[[nodiscard]] nlohmann::json binary(std::string_view bytes);
[[nodiscard]] std::string from_binary(const nlohmann::json& value);

/// What one hot restart did, for moltctl and the log.
struct HotRestartReport {
  long old_pid = 0;
  long new_pid = 0;
  std::uint64_t generation = 0;  ///< the successor's
  std::string binary;
  std::string sha256;
  std::size_t listeners = 0;
  std::size_t connections = 0;        ///< module connections handed over
  std::size_t http_connections = 0;   ///< idle keep-alive connections handed over
  std::size_t http_busy = 0;          ///< answering a request at the deadline: not handed over
  std::uint64_t state_bytes = 0;      ///< sent: pre-copy parts, or whole states
  std::uint64_t leftover_bytes = 0;   ///< unconsumed input and unsent output handed over
  /// Phase timings, in order: hello, prepare, copy, freeze, transfer, adopt,
  /// commit; "frozen" is from freeze to the successor's confirmation
  /// (no client served meanwhile).
  std::vector<std::pair<std::string, std::chrono::microseconds>> phases;
  [[nodiscard]] nlohmann::json to_json() const;
  [[nodiscard]] std::string summary() const;
};

/// The counters of /-/metrics (module calls and their durations, failed
/// calls, listeners' accepted, refused and closed connections, HTTP
/// refusals), as a predecessor hands them over at its freeze...
[[nodiscard]] nlohmann::json metrics_counters(const ModuleTable& table, const StreamServer& streams,
                                              const HttpServer& http);
/// ...and as its successor adds them to its own, so that Prometheus sees no
/// counter reset.
void carry_over_metrics(const nlohmann::json& counters, ModuleTable& table, StreamServer& streams, HttpServer& http);

/// The predecessor's side.
class HotRestart {
 public:
  struct Options {
    std::filesystem::path binary;         ///< the program moltd was started from (the default successor)
    std::vector<std::string> arguments;   ///< moltd's command line, without argv[0]
    int lock_fd = -1;                     ///< the run directory's lock (RunDir::lock_fd)
    std::uint64_t generation = 1;         ///< this process's
    std::string notify_socket;            ///< systemd's NOTIFY_SOCKET, given to the successor
    std::optional<std::chrono::microseconds> watchdog;  ///< systemd's WATCHDOG_USEC, given to the successor
    std::chrono::milliseconds step_timeout{10000};  ///< hello, prepare, adopt: each
    std::chrono::milliseconds flush{100};           ///< writes and HTTP requests in progress at freeze
    std::chrono::milliseconds quiesce_timeout{2000};
    /// Told the successor's pid once it serves (systemd's MAINPID=, sent by
    /// the main process, which NotifyAccess=main accepts). May be empty.
    std::function<void(long)> on_committed = {};
  };
  struct Parts {
    ModuleTable& table;
    ReleaseHandler& releases;
    StreamServer& streams;
    HttpServer& http;
  };

  HotRestart(Options options, Parts parts, std::shared_ptr<spdlog::logger> log);

  /// Hands this moltd over to `binary` (default: options.binary). On
  /// success this process must exit without closing anything (exit_now()),
  /// after the caller has answered whoever asked; on failure it serves on
  /// as before, and the error says which step failed and why.
  Result<HotRestartReport> run(const std::optional<std::filesystem::path>& binary);
  /// Whether a run reached commit: this process is done.
  [[nodiscard]] bool committed() const noexcept { return committed_.load(); }
  /// Ends this process now, closing nothing (the successor owns it all).
  [[noreturn]] void exit_now();

 private:
  struct Handover;
  Result<void> hand_over(Handover& h, std::optional<std::chrono::milliseconds> probation_left);

  Options options_;
  Parts parts_;
  std::shared_ptr<spdlog::logger> log_;
  std::mutex running_;
  std::atomic<bool> committed_{false};
  std::atomic<long> successor_pid_{0};  ///< once committed
};

/// The successor's side: moltd --successor FD.
class Successor {
 public:
  using Clock = std::chrono::steady_clock;
  /// What the predecessor said in its hello.
  struct Hello {
    long predecessor_pid = 0;
    std::uint64_t generation = 0;  ///< ours
    std::map<std::string, std::string, std::less<>> images;  ///< module -> sha256
    std::vector<NotStartedModule> not_started;
    std::optional<std::chrono::milliseconds> probation_left;
    FileDescriptor lock;  ///< the run directory's lock
  };
  /// The manifest and descriptors of the transfer.
  struct Transfer {
    struct Listener {
      std::string module;
      FileDescriptor fd;
    };
    std::vector<Listener> listeners;
    FileDescriptor http;
    std::vector<FrozenConnection> connections;  ///< their fds are ours to adopt (or close)
    std::vector<std::pair<FileDescriptor, std::string>> http_connections;     ///< with their input
    nlohmann::json metrics;  ///< the predecessor's counters (metrics_counters)
  };

  explicit Successor(int fd);
  ~Successor();
  Successor(Successor&&) = delete;
  /// Says hello and reads the answer (refusals included).
  Result<Hello> hello();
  /// Done preparing (the modules started, `find` finds them). Then the
  /// modules' states, each applied as it comes to a fresh instance of the
  /// image its slot runs (pre-copy parts), or kept (a whole state), and
  /// last the transfer.
  Result<Transfer> prepared(const std::function<std::shared_ptr<ModuleSlot>(std::string_view)>& find);
  /// Puts the state handed over for `slot`'s module in place, with its jobs
  /// and timers (ReleaseHandler::take_over calls it for each module).
  Result<void> restore(ModuleSlot& slot);
  /// Ready to serve; waits for commit.
  Result<void> ready();
  /// Tells the predecessor this process serves (it may exit).
  void serving(const nlohmann::json& detail);
  /// Tells the predecessor why this process gives up (it resumes).
  void failed(const std::string& reason);

 private:
  struct Handed;
  /// One "part" or "state" message, applied or kept.
  Result<void> take_state(const nlohmann::json& message,
                          const std::function<std::shared_ptr<ModuleSlot>(std::string_view)>& find);

  HandoverChannel channel_;
  std::map<std::string, std::unique_ptr<Handed>, std::less<>> handed_;
};

}  // namespace molt::host
