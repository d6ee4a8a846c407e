// TCP listeners and connections that belong to the host, handed to modules
// as byte streams (Module::on_data). A connection outlives any number of
// upgrades of its module: the host keeps the socket and the bytes the module
// has not consumed, and calls whichever version runs.
//
// Threads: `threads` I/O threads, each with its own io_context; a connection
// lives on one of them for its whole life. The dispatch path (read, call the
// module, write) allocates nothing once a connection's buffers have grown to
// its working size, and takes no lock but the module's call gate.
#pragma once

#include <chrono>
#include <memory>
#include <vector>

#include <spdlog/logger.h>

#include "molt/host/common/error.hpp"
#include "molt/host/config/host_config.hpp"
#include "molt/host/slot/module_slot.hpp"

namespace molt::host {

struct StreamOptions {
  unsigned threads = 2;
  /// Bytes a connection may have buffered that its module has not consumed;
  /// past this the connection is closed (a module waiting for a frame that
  /// never ends must not exhaust memory).
  std::size_t max_input_bytes = 256u << 20;
};

struct ListenerInfo {
  std::string module;
  Endpoint endpoint;         ///< as bound
  std::size_t connections;   ///< open now
  std::uint64_t accepted;    ///< since start
};

class StreamServer {
 public:
  StreamServer(StreamOptions options, std::shared_ptr<spdlog::logger> log);
  ~StreamServer();
  StreamServer(const StreamServer&) = delete;
  StreamServer& operator=(const StreamServer&) = delete;

  /// Binds `endpoint` for `slot`'s module, before or after serve().
  [[nodiscard]] Result<Endpoint> listen(const Endpoint& endpoint, std::shared_ptr<ModuleSlot> slot);
  /// Starts accepting and the I/O threads.
  void serve();
  /// Closes `module`'s listeners and its connections (a module being removed).
  /// Each connection keeps its module's slot alive until it is gone.
  void close_module(std::string_view module);
  /// Stops accepting; closes idle connections; lets the ones whose bytes are
  /// being processed finish and flush their replies (up to `grace`); joins.
  void stop(std::chrono::milliseconds grace);

  [[nodiscard]] std::vector<ListenerInfo> listeners() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace molt::host
