// TCP listeners and connections that belong to the host, handed to modules
// as byte streams (Module::on_data). A connection outlives any number of
// upgrades of its module: the host keeps the socket and the bytes the module
// has not consumed, and calls whichever version runs.
//
// Threads: `threads` I/O threads, each with its own io_context; a connection
// lives on one of them for its whole life. The dispatch path (read, call the
// module, write) allocates nothing once a connection's buffers have grown to
// its working size, and takes no lock but the module's call gate.
//
// Limits (docs/operations.md, "Limits"), in Redis's terms:
// - maxclients per listener: the next client gets the module's refusal
//   reply (Module::refusal_reply) and is closed;
// - timeout: a connection with nothing received and nothing to send for
//   that long is closed;
// - client_query_buffer_limit: unconsumed input past it closes the
//   connection (checked before a buffer grows);
// - client_output_buffer_soft_limit: while a connection's unsent output is
//   at or above it, the connection is not read and its module not called
//   (StreamOutput::has_room() says no before that); hard limit: closed;
// - max_connection_memory: one budget for every connection's buffers; a
//   buffer grows only after reserving its bytes in it, and when that fails
//   the connections holding the most are closed first (maxmemory-clients).
#pragma once

#include <array>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <vector>

#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"
#include "molt/host/common/file_checks.hpp"
#include "molt/host/config/host_config.hpp"
#include "molt/host/runtime/host_info.hpp"
#include "molt/host/slot/module_slot.hpp"
#include "molt/host/upgrade/module_listeners.hpp"

namespace molt::host {

struct StreamOptions {
  unsigned threads = 2;
  /// Bytes a connection may have buffered that its module has not consumed;
  /// when they reach this the connection is closed (a module waiting for a
  /// frame that never ends must not exhaust memory).
  std::uint64_t max_input_bytes = 1ull << 30;
  /// Unsent output at which a connection stops being read and served.
  std::uint64_t output_soft_limit = 1u << 20;
  /// Unsent output past which the connection is closed; 0: none.
  std::uint64_t output_hard_limit = 0;
  /// Every connection's buffers together (input and output); 0: no budget.
  std::uint64_t max_memory = 2ull << 30;
  /// Each listener's, unless `module_clients` has its module.
  ClientLimits clients = {};
  std::map<std::string, ClientLimits, std::less<>> module_clients = {};
};

/// A connection freeze() took out of the server, as a successor adopts it
/// (handover/hot_restart.hpp).
struct FrozenConnection {
  std::string module;
  int fd = -1;  ///< the server's own: sent to the successor, not closed
  api::ConnectionId id = 0;
  std::string input;   ///< received, not consumed by the module
  std::string output;  ///< written by the module, not sent
  bool close_after_write = false;  ///< closes once `output` is sent
};

/// A listening socket freeze() stopped accepting on.
struct FrozenListener {
  std::string module;
  int fd = -1;  ///< the server's own
  Endpoint endpoint;
};

/// Where a module that moved went, for its listeners and connections here.
struct MovedModule {
  std::string redirect;  ///< HOST:PORT of its listener on the other moltd
  std::chrono::seconds drain{60};  ///< host.handoff_drain_seconds
  bool forward_new = false;        ///< host.handoff_new_connections = "forward"
  /// Opens, blocking, the connection an existing client's bytes are
  /// forwarded on, adopted by the other moltd under the client's connection
  /// id (its per-connection state moved with the module), ready for the
  /// client's bytes; an invalid descriptor when it cannot (the client is then
  /// forwarded to `redirect` as a new connection). Runs on a thread of the
  /// server's own, at most two at once. Empty: every client to `redirect`.
  std::function<FileDescriptor(api::ConnectionId)> adopt = {};
};

struct FrozenStreams {
  std::vector<FrozenListener> listeners;
  std::vector<FrozenConnection> connections;
};

class StreamServer final : public ModuleListeners {
 public:
  StreamServer(StreamOptions options, std::shared_ptr<spdlog::logger> log);
  ~StreamServer();
  StreamServer(const StreamServer&) = delete;
  StreamServer& operator=(const StreamServer&) = delete;

  /// Binds `endpoint` for `slot`'s module, before or after serve().
  [[nodiscard]] Result<Endpoint> listen(const Endpoint& endpoint, std::shared_ptr<ModuleSlot> slot);
  /// Serves `slot`'s module on the listening sockets adopted for it, if any,
  /// instead of binding `endpoints`; else binds each of `endpoints`. Returns
  /// the addresses it serves. Before or after serve().
  [[nodiscard]] Result<std::vector<Endpoint>> listen_module(const std::vector<Endpoint>& endpoints,
                                                            std::shared_ptr<ModuleSlot> slot) override;
  /// Takes `fd`, a listening TCP socket someone else bound (systemd's socket
  /// activation), to serve `module` whenever listen_module() starts it: at
  /// boot, and again if the module is removed and added back (the socket
  /// stays open meanwhile: connections wait in its backlog). Before serve().
  /// Returns the socket's address; on error `fd` is closed.
  [[nodiscard]] Result<Endpoint> adopt(const std::string& module, int fd);
  /// Closes the adopted sockets that no module has used (call after boot);
  /// returns them, "<module> (fd N, ADDRESS)", for the log.
  std::vector<std::string> close_unclaimed();
  /// Lowers every listener's maxclients, present and future, to at most
  /// `cap` (the descriptors cannot cover more). Before serve().
  void cap_maxclients(std::uint32_t cap);
  /// Starts accepting and the I/O threads.
  void serve();
  /// Posts a no-op to every I/O thread; the future is ready once all of them
  /// have run it (the watchdog's proof that they are not stuck).
  [[nodiscard]] std::future<void> probe();
  /// Closes `module`'s listeners and its connections (a module being removed).
  /// Each connection keeps its module's slot alive until it is gone.
  void close_module(std::string_view module) override;
  /// `module` moved to another moltd (handoff/handoff.hpp), whose clients
  /// connect to `moved.redirect` (HOST:PORT). Its connections go on,
  /// forwarded there (their unconsumed input first, replies in order), for
  /// `moved.drain`; then each closes at a moment nothing is in progress on
  /// it, and its client reconnects. Its listeners stay open: a new
  /// connection is forwarded too during the drain if `moved.forward_new`,
  /// else (and after the drain) answered `-MOVED 0 <redirect>` (what a
  /// Redis cluster client follows) and closed. A listen_module() for the
  /// module serves those listeners again (it came back).
  void module_moved(std::string_view module, const MovedModule& moved);
  /// At start, for a module that moved away before (its ownership record
  /// says where): listeners on the sockets adopted for it, or on
  /// `endpoints`, that answer every new connection -MOVED 0 <redirect>.
  [[nodiscard]] Result<std::vector<Endpoint>> listen_moved(const std::string& module,
                                                           const std::vector<Endpoint>& endpoints,
                                                           const std::string& redirect);
  /// Stops accepting; closes idle connections; lets the ones whose bytes are
  /// being processed finish and flush their replies (up to `grace`); joins.
  /// False when an I/O thread was still inside a module call a second
  /// later: it is left running (detached), so this server must then never
  /// be destroyed (moltd exits without its destructors).
  bool stop(std::chrono::milliseconds grace);

  // Hot restart (handover/hot_restart.hpp). A connection is frozen between
  // two module calls: its socket, its kernel queues and its buffers stay
  // as they are, so that either this server goes on with it (thaw) or a
  // successor adopts it and this process exits without closing anything.

  /// Stops accepting (new connections wait in the backlogs, none refused)
  /// and reading; lets the writes in progress go on for up to `flush`, then
  /// stops them where they are; returns every listener and connection, the
  /// latter with the bytes received and not consumed and written and not
  /// sent. Fails, thawed again, when an I/O thread has not answered by
  /// `deadline` (it is inside a module call). After serve().
  [[nodiscard]] Result<FrozenStreams> freeze(std::chrono::milliseconds flush, std::chrono::steady_clock::time_point deadline);
  /// Undoes freeze(): sends what waits, accepts and reads again.
  void thaw();
  /// On a successor, after serve() and after `frozen.module` listens (on the
  /// sockets adopt() took): serves a connection a predecessor froze, with
  /// its id: sends its output first, then gives the module its input, then
  /// reads on. Takes `frozen.fd` (closed on error).
  [[nodiscard]] Result<void> adopt_connection(FrozenConnection frozen);
  /// On a handoff's target: serves the connection a source forwards a
  /// client of `module` on (MovedModule::adopt), under the id the client
  /// has there, whose per-connection state came with the module. Refused
  /// (and `fd` closed) when a connection of the module here has that id, or
  /// this server may give it one of its own later (may_be_own_connection):
  /// ids start at a random multiple of 2^32 in each process.
  [[nodiscard]] Result<void> adopt_forwarded(const std::string& module, FileDescriptor fd, api::ConnectionId id);
  /// Whether this server may give `id` to a connection of its own later.
  [[nodiscard]] static bool may_be_own_connection(api::ConnectionId id);

  /// On a successor: adds a predecessor's counters (accepted, refused,
  /// closed by each limit) to those of `counted.module`'s listener on
  /// `counted.endpoint`, so that /-/metrics counters go on from there.
  void carry_over(const ListenerInfo& counted);

  [[nodiscard]] std::vector<ListenerInfo> listeners() const;
  /// Bytes every connection's buffers hold now (reserved in the budget).
  [[nodiscard]] std::uint64_t buffered_bytes() const;
  /// max_connection_memory in effect; 0: none.
  [[nodiscard]] std::uint64_t memory_budget() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace molt::host
